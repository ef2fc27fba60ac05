"""Maze: a 2-D point agent in a grid of rooms joined by doors along one long path.

The arena [-1, 1]^2 is split into `rows x cols` equal rooms by interior walls on the grid
lines. The rooms are chained in a snake (boustrophedon) order: left to right along the top
row, right to left along the next, and so on; each pair of consecutive rooms shares a door
of width `door_width` at the middle of their common wall, and every other wall is closed.
The path from the first room of the chain to the last thus visits every room, so the goal
can be far in steps although near in straight line (the last room of a 3 x 3 maze is two
walls below the first).

An action a in [-1, 1]^2 moves the agent by `max_step * a`; a move that would cross a closed
wall loses its part across that wall (the agent slides along it), as in Two-Rooms.

Episodes (`task`):

* `"ends"` (default): start in one end room of the chain and the goal in the other (which end
  is random). With the defaults (3 x 3, step 0.016, margin 0.1) every start is more than 200
  steps from its goal along the shortest wall-avoiding path (`shortest_steps` measures it on a
  grid).
* `"any"`: start and goal uniform over all rooms (for exploration data, e.g.
  `data.env_kwargs: {task: any}`).

Observation: the position `[2]`; `state.info["goal_obs"]` is the goal position `[2]`.
Reward: minus the Euclidean distance to the goal; success within `success_radius`.
"""

from __future__ import annotations

import heapq
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import GOAL_OBS, SUCCESS, NativeEnv, State

TASKS = ("ends", "any")


def snake_order(rows: int, cols: int) -> list[tuple[int, int]]:
    """The rooms `(row, col)` in chain order: row 0 left to right, row 1 right to left, ..."""
    return [(r, c if r % 2 == 0 else cols - 1 - c) for r in range(rows) for c in range(cols)]


def door_tables(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Which walls have a door: `vertical [rows, cols - 1]` (between `(r, c)` and `(r, c + 1)`)
    and `horizontal [rows - 1, cols]` (between `(r, c)` and `(r + 1, c)`), bool."""
    vertical = np.zeros((rows, max(cols - 1, 0)), bool)
    horizontal = np.zeros((max(rows - 1, 0), cols), bool)
    order = snake_order(rows, cols)
    for (r0, c0), (r1, c1) in itertools.pairwise(order):
        if r0 == r1:
            vertical[r0, min(c0, c1)] = True
        else:
            horizontal[min(r0, r1), c0] = True
    return vertical, horizontal


class Maze(NativeEnv):
    """Goal-conditioned point navigation through a snake of rooms; see the module docstring."""

    goal_conditioned = True

    def __init__(
        self,
        rows: int = 3,
        cols: int = 3,
        door_width: float = 0.2,
        max_step: float = 0.016,
        success_radius: float = 0.1,
        margin: float = 0.1,
        task: str = "ends",
    ):
        if rows < 1 or cols < 1 or rows * cols < 2:
            raise ValueError(f"maze: needs at least two rooms, got rows={rows}, cols={cols}")
        if task not in TASKS:
            raise ValueError(f"maze: task must be one of {TASKS}, got {task!r}")
        self.rows, self.cols = int(rows), int(cols)
        self.room_w, self.room_h = 2.0 / self.cols, 2.0 / self.rows
        if not 0.0 < door_width < min(self.room_w, self.room_h):
            size = min(self.room_w, self.room_h)
            raise ValueError(f"maze: door_width must be in (0, room size {size:.3g}), got {door_width}")
        if not 0.0 < margin < 0.5 * min(self.room_w, self.room_h):
            raise ValueError("maze: margin must be positive and less than half a room")
        if max_step <= 0.0 or success_radius <= 0.0:
            raise ValueError("maze: max_step and success_radius must be positive")
        self.door_width, self.max_step = float(door_width), float(max_step)
        self.success_radius, self.margin, self.task = float(success_radius), float(margin), task
        vertical, horizontal = door_tables(self.rows, self.cols)
        self.vertical_doors, self.horizontal_doors = vertical, horizontal
        self.order = np.asarray(snake_order(self.rows, self.cols), np.int32)  # [R*C, 2] (row, col)
        self._observation_size = 2
        self._action_size = 2

    # Geometry: column c spans x in [-1 + c w, -1 + (c + 1) w]; row r spans y from the top down.
    def room_box(self, room: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Lower-left and upper-right corners `[2]` of room `(row, col)` (`room [2]` int)."""
        lo = jnp.stack([-1.0 + room[1] * self.room_w, 1.0 - (room[0] + 1) * self.room_h])
        return lo, lo + jnp.array([self.room_w, self.room_h])

    def sample_in(self, key: jax.Array, room: jax.Array) -> jax.Array:
        """A uniform position `[2]` inside `room [2]` at least `margin` from its walls."""
        lo, hi = self.room_box(room)
        return jax.random.uniform(key, (2,), minval=lo + self.margin, maxval=hi - self.margin)

    def reset(self, rng: jax.Array) -> State:
        k_end, k_start, k_goal, k_rooms = jax.random.split(rng, 4)
        order = jnp.asarray(self.order)
        if self.task == "ends":
            flip = jax.random.bernoulli(k_end)
            start_room = jnp.where(flip, order[-1], order[0])
            goal_room = jnp.where(flip, order[0], order[-1])
        else:
            idx = jax.random.randint(k_rooms, (2,), 0, len(self.order))
            start_room, goal_room = order[idx[0]], order[idx[1]]
        pos = self.sample_in(k_start, start_room)
        goal = self.sample_in(k_goal, goal_room)
        return self._state(pos, {GOAL_OBS: goal}, jnp.zeros((), jnp.float32))

    def step(self, state: State, action: jax.Array) -> State:
        return self._state(self.move(state.pipeline_state, action), state.info, state.done)

    def move(self, pos: jax.Array, action: jax.Array) -> jax.Array:
        """The true dynamics: position `[2]`, action `[2]` -> next position `[2]`.

        The x part of the move is dropped when it crosses a closed vertical wall (at the height
        where the straight move crosses it), then the y part when the move (x resolved) crosses a
        closed horizontal wall.
        """
        return self.resolve(pos, jnp.clip(pos + self.max_step * jnp.clip(action, -1.0, 1.0), -1.0, 1.0))

    def resolve(self, pos: jax.Array, target: jax.Array) -> jax.Array:
        """Where a move from `pos [2]` towards `target [2]` (inside the arena) ends, walls applied."""
        if self.cols > 1:
            blocked = self._crosses_closed(pos, target, axis=0)
            target = target.at[0].set(jnp.where(blocked, pos[0], target[0]))
        if self.rows > 1:
            blocked = self._crosses_closed(pos, target, axis=1)
            target = target.at[1].set(jnp.where(blocked, pos[1], target[1]))
        return target

    def _crosses_closed(self, pos: jax.Array, target: jax.Array, axis: int) -> jax.Array:
        """Whether the move `pos -> target` crosses a wall on a grid line normal to `axis` outside its door."""
        other = 1 - axis
        if axis == 0:  # vertical walls x = -1 + c w, c = 1..cols-1; rooms indexed by row along y
            lines = -1.0 + self.room_w * jnp.arange(1, self.cols)
            doors = jnp.asarray(self.vertical_doors)  # [rows, cols-1]
        else:  # horizontal walls y = 1 - r h, r = 1..rows-1; rooms indexed by column along x
            lines = 1.0 - self.room_h * jnp.arange(1, self.rows)
            doors = jnp.asarray(self.horizontal_doors).T  # [cols, rows-1]
        p, q = pos[axis], target[axis]
        crosses = (p - lines) * (q - lines) < 0.0  # [L]
        t = (p - lines) / jnp.where(crosses, p - q, 1.0)
        at = pos[other] + t * (target[other] - pos[other])  # [L] where the move meets each line
        if axis == 0:
            cell = jnp.clip(jnp.floor((1.0 - at) / self.room_h), 0, self.rows - 1).astype(jnp.int32)
            centre = 1.0 - (cell + 0.5) * self.room_h
        else:
            cell = jnp.clip(jnp.floor((at + 1.0) / self.room_w), 0, self.cols - 1).astype(jnp.int32)
            centre = -1.0 + (cell + 0.5) * self.room_w
        has_door = doors[cell, jnp.arange(lines.shape[0])]
        through = has_door & (jnp.abs(at - centre) < 0.5 * self.door_width)
        return jnp.any(crosses & ~through)

    def _state(self, pos: jax.Array, info: dict, prev_done: jax.Array) -> State:
        dist = jnp.linalg.norm(pos - info[GOAL_OBS])
        success = (dist < self.success_radius).astype(jnp.float32)
        return State(
            pipeline_state=pos,
            obs=pos,
            reward=-dist,
            done=jnp.zeros((), jnp.float32),
            metrics={SUCCESS: success, "distance": dist},
            info={GOAL_OBS: info[GOAL_OBS]},
        )

    def shortest_steps(self, start: np.ndarray, goal: np.ndarray, cells: int = 120) -> float:
        """Shortest wall-avoiding path length from `start [2]` to `goal [2]` in steps of `max_step`:
        Dijkstra on a `cells x cells` grid of the arena, 8-connected, a move between neighbouring
        cell centres allowed when the walls let it through whole (`resolve`) (for checks and studies, not for jit)."""
        h = 2.0 / cells
        centres = -1.0 + (np.arange(cells) + 0.5) * h
        moves = np.array([(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy])  # [8, 2]
        grid = np.stack(np.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
        targets = grid[:, None] + (moves * h).astype(np.float32)  # [cells^2, 8, 2]
        step = jax.vmap(jax.vmap(self.resolve, in_axes=(None, 0)))
        reached = np.asarray(jax.jit(step)(grid, targets))
        whole = np.linalg.norm(reached - (grid[:, None] + moves * h), axis=-1) < 1e-5  # [cells^2, 8]

        def index(p):
            i, j = np.clip(((np.asarray(p, np.float64) + 1.0) / h).astype(int), 0, cells - 1)
            return int(i) * cells + int(j)

        dist = np.full(cells * cells, np.inf)
        src, dst = index(start), index(goal)
        dist[src] = 0.0
        heap = [(0.0, src)]
        lengths = h * np.hypot(moves[:, 0], moves[:, 1])
        while heap:
            d, n = heapq.heappop(heap)
            if n == dst:
                break
            if d > dist[n]:
                continue
            i, j = divmod(n, cells)
            for m in np.flatnonzero(whole[n]):
                ni, nj = i + moves[m, 0], j + moves[m, 1]
                if 0 <= ni < cells and 0 <= nj < cells and d + lengths[m] < dist[ni * cells + nj]:
                    dist[ni * cells + nj] = d + lengths[m]
                    heapq.heappush(heap, (d + lengths[m], ni * cells + nj))
        return float(dist[dst] / self.max_step)
