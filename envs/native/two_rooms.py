"""Two-Rooms: a 2-D point agent in two rooms joined by a door (as in PLDM / EB-JEPA).

The arena is the square [-1, 1]^2. A thin wall on the line x = 0 splits it into a left
and a right room; a door of width `door_width` centred at y = `door_y` joins them. An
action a in [-1, 1]^2 moves the agent by `max_step * a`; a move that would cross the
wall outside the door keeps its y part and loses its x part (the agent slides along the
wall). Positions stay inside the arena. Start and goal are drawn uniformly inside the
rooms (by default in different rooms); success when the agent is within
`success_radius` of the goal. The dynamics are differentiable almost everywhere, so
gradient planners can plan through the true environment.

Observation: the position `[2]`; the goal observation `state.info["goal_obs"]` is the
goal position `[2]`. Reward: minus the Euclidean distance to the goal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs.base import GOAL_OBS, SUCCESS, NativeEnv, State

GOAL_MODES = ("other_room", "same_room", "any")


class TwoRooms(NativeEnv):
    """Goal-conditioned point navigation through a door; see the module docstring."""

    goal_conditioned = True

    def __init__(
        self,
        door_width: float = 0.3,
        door_y: float = 0.0,
        max_step: float = 0.05,
        success_radius: float = 0.1,
        margin: float = 0.05,
        goal_mode: str = "other_room",
        terminate_on_success: bool = False,
    ):
        if goal_mode not in GOAL_MODES:
            raise ValueError(f"two_rooms: goal_mode must be one of {GOAL_MODES}, got {goal_mode!r}")
        if not 0.0 < door_width < 2.0:
            raise ValueError(f"two_rooms: door_width must be in (0, 2), got {door_width}")
        if not 0.0 < margin < 0.5:
            raise ValueError(f"two_rooms: margin must be in (0, 0.5), got {margin}")
        if max_step <= 0.0 or success_radius <= 0.0:
            raise ValueError("two_rooms: max_step and success_radius must be positive")
        self.door_width = float(door_width)
        self.door_y = float(door_y)
        self.max_step = float(max_step)
        self.success_radius = float(success_radius)
        self.margin = float(margin)
        self.goal_mode = goal_mode
        self.terminate_on_success = bool(terminate_on_success)
        self._observation_size = 2
        self._action_size = 2

    def sample_in_room(self, key: jax.Array, right: jax.Array) -> jax.Array:
        """A uniform position `[2]` inside the left (`right=False`) or right room."""
        m = self.margin
        u = jax.random.uniform(key, (2,), minval=jnp.array([m, -1.0 + m]), maxval=jnp.array([1.0 - m, 1.0 - m]))
        return u.at[0].multiply(jnp.where(right, 1.0, -1.0))

    def reset(self, rng: jax.Array) -> State:
        k_room, k_start, k_goal, k_goal_room = jax.random.split(rng, 4)
        start_right = jax.random.bernoulli(k_room)
        goal_right = {
            "other_room": ~start_right,
            "same_room": start_right,
            "any": jax.random.bernoulli(k_goal_room),
        }[self.goal_mode]
        pos = self.sample_in_room(k_start, start_right)
        goal = self.sample_in_room(k_goal, goal_right)
        return self._state(pos, goal, jnp.zeros((), jnp.float32))

    def step(self, state: State, action: jax.Array) -> State:
        pos = self.move(state.pipeline_state, action)
        return self._state(pos, state.info[GOAL_OBS], state.done)

    def move(self, pos: jax.Array, action: jax.Array) -> jax.Array:
        """The true dynamics: position `[2]`, action `[2]` -> next position `[2]`."""
        target = jnp.clip(pos + self.max_step * jnp.clip(action, -1.0, 1.0), -1.0, 1.0)
        crosses = (pos[0] < 0.0) != (target[0] < 0.0)
        dx = pos[0] - target[0]
        t = pos[0] / jnp.where(crosses, dx, 1.0)
        y_cross = pos[1] + t * (target[1] - pos[1])
        blocked = crosses & (jnp.abs(y_cross - self.door_y) > 0.5 * self.door_width)
        return target.at[0].set(jnp.where(blocked, pos[0], target[0]))

    def geodesic_distance(self, pos: jax.Array, goal: jax.Array) -> jax.Array:
        """Length of the shortest wall-avoiding path from `pos [2]` to `goal [2]`.

        Straight when both are in one room or the segment passes through the door; else via
        the nearer door post. The exact cost-to-go (in distance units) for planning studies.
        """
        posts = jnp.array([[0.0, self.door_y + 0.5 * self.door_width], [0.0, self.door_y - 0.5 * self.door_width]])
        same_room = (pos[0] < 0.0) == (goal[0] < 0.0)
        t = pos[0] / jnp.where(same_room, 1.0, pos[0] - goal[0])
        through_door = jnp.abs(pos[1] + t * (goal[1] - pos[1]) - self.door_y) <= 0.5 * self.door_width
        via = jnp.min(jnp.linalg.norm(posts - pos, axis=-1) + jnp.linalg.norm(posts - goal, axis=-1))
        return jnp.where(same_room | through_door, jnp.linalg.norm(pos - goal), via)

    def _state(self, pos: jax.Array, goal: jax.Array, prev_done: jax.Array) -> State:
        dist = jnp.linalg.norm(pos - goal)
        success = (dist < self.success_radius).astype(jnp.float32)
        done = jnp.maximum(prev_done, success) if self.terminate_on_success else jnp.zeros((), jnp.float32)
        return State(
            pipeline_state=pos,
            obs=pos,
            reward=-dist,
            done=done,
            metrics={SUCCESS: success, "distance": dist},
            info={GOAL_OBS: goal},
        )
