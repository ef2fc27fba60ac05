"""Two-Rooms: a 2-D point agent in two rooms joined by a door (as in PLDM / EB-JEPA).

The arena is the square [-1, 1]^2. A thin wall on the line x = 0 splits it into a left
and a right room; a door of width `door_width` centred at y = `door_y` joins them. An
action a in [-1, 1]^2 moves the agent by `max_step * a`; a move that would cross the
wall outside the door keeps its y part and loses its x part (the agent slides along the
wall). Positions stay inside the arena. Start and goal are drawn uniformly inside the
rooms (by default in different rooms); success when the agent is within
`success_radius` of the goal. The dynamics are differentiable almost everywhere, so
gradient planners can plan through the true environment.

Observation (`obs`):

* `"state"`: the position `[2]`; the goal observation `state.info["goal_obs"]` is the goal
  position `[2]`.
* `"pixels"`: a top-down image `[S, S, 1]` float32 in [0, 1] (`S = image_size`) of the
  position, and `state.info["goal_obs"]` the image of the goal position (the goal position
  itself is kept in `state.info["goal_pos"]`). See `render` for what is drawn.

The env state keeps the position `[2]` in `pipeline_state` in both modes. Reward: minus the
Euclidean distance to the goal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import GOAL_OBS, SUCCESS, NativeEnv, State

GOAL_MODES = ("other_room", "same_room", "any")
OBS_MODES = ("state", "pixels")
GOAL_POS = "goal_pos"
DEFAULT_IMAGE_SIZE = 32
IMAGE_SIZES = (16, 128)  # smallest, largest accepted `image_size`
WALL_THICKNESS_PX = 2.0  # the wall is drawn one pixel either side of x = 0
BLOB_SIGMA_PX = 1.0  # standard deviation of the agent's Gaussian blob, in pixels
WALL_LEVEL = 0.5  # wall intensity; the agent's blob adds up to 1 - WALL_LEVEL


def pixel_centres(size: int) -> np.ndarray:
    """Centres `[S]` of `size` equal cells covering [-1, 1], ascending."""
    return -1.0 + (np.arange(size) + 0.5) * (2.0 / size)


def interval_coverage(lo: float, hi: float, size: int) -> np.ndarray:
    """Fraction `[S]` of each of the `size` ascending cells of [-1, 1] that `[lo, hi]` covers."""
    edges = -1.0 + np.arange(size + 1) * (2.0 / size)
    overlap = np.minimum(hi, edges[1:]) - np.maximum(lo, edges[:-1])
    return np.clip(overlap * (size / 2.0), 0.0, 1.0)


def wall_image(size: int, door_y: float, door_width: float) -> np.ndarray:
    """Area coverage `[S, S]` in [0, 1] of each pixel by the wall (rows: y from +1 down to -1).

    The wall is the band `|x| < WALL_THICKNESS_PX / 2` pixels without the door rows
    `|y - door_y| < door_width / 2`; partly covered pixels get the covered fraction.
    """
    half = 0.5 * WALL_THICKNESS_PX * (2.0 / size)
    band = interval_coverage(-half, half, size)  # [S] over x
    door = interval_coverage(door_y - 0.5 * door_width, door_y + 0.5 * door_width, size)  # [S] over y, ascending
    return np.outer(1.0 - door[::-1], band)


def blob_image(pos: jax.Array, size: int, sigma_px: float = BLOB_SIGMA_PX) -> jax.Array:
    """An unnormalised Gaussian `[S, S]` (peak 1) centred at `pos [2]`, smooth in `pos`.

    Rows run from y = +1 (top) down to y = -1, columns from x = -1 to x = +1, as in `wall_image`.
    """
    centres = jnp.asarray(pixel_centres(size), jnp.float32)
    inv = 1.0 / (2.0 * (sigma_px * 2.0 / size) ** 2)
    gx = jnp.exp(-inv * (centres - pos[0]) ** 2)  # [S] columns
    gy = jnp.exp(-inv * (centres[::-1] - pos[1]) ** 2)  # [S] rows
    return jnp.outer(gy, gx)


def render(pos: jax.Array, walls: jax.Array) -> jax.Array:
    """The top-down image `[S, S, 1]` in [0, 1] of the agent at `pos [2]` in the arena `walls [S, S]`.

    `WALL_LEVEL * walls + (1 - WALL_LEVEL) * blob`: the walls are a fixed image, so the image minus
    them is exactly the agent's blob (nothing is hidden where the agent touches the wall), and the
    image is a smooth function of `pos`.
    """
    image = WALL_LEVEL * jnp.asarray(walls) + (1.0 - WALL_LEVEL) * blob_image(pos, walls.shape[0])
    return image[..., None]


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
        obs: str = "state",
        image_size: int | None = None,
    ):
        _check_obs(obs, image_size)
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
        self.obs_mode = obs
        self.image_size = None
        self._observation_size = 2
        if obs == "pixels":
            self.image_size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
            self.walls = wall_image(self.image_size, self.door_y, self.door_width).astype(np.float32)
            self._observation_size = (self.image_size, self.image_size, 1)
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
        info = {GOAL_OBS: self.observe(goal), self._goal_key: goal}
        return self._state(pos, info, jnp.zeros((), jnp.float32))

    def step(self, state: State, action: jax.Array) -> State:
        pos = self.move(state.pipeline_state, action)
        return self._state(pos, state.info, state.done)

    def observe(self, pos: jax.Array) -> jax.Array:
        """The observation of position `pos [2]`: `pos` itself, or its image `[S, S, 1]` (see `render`)."""
        return render(pos, self.walls) if self.obs_mode == "pixels" else pos

    def goal_position(self, state: State) -> jax.Array:
        """The goal position `[2]` of an (unbatched) state, in either observation mode."""
        return state.info[self._goal_key]

    @property
    def _goal_key(self) -> str:
        """The `state.info` key of the goal position: the goal observation itself for state observations."""
        return GOAL_POS if self.obs_mode == "pixels" else GOAL_OBS

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

    def _state(self, pos: jax.Array, info: dict, prev_done: jax.Array) -> State:
        """The state at `pos [2]`; `info` holds the goal observation (and, for pixels, its position)."""
        goal = info[self._goal_key]
        dist = jnp.linalg.norm(pos - goal)
        success = (dist < self.success_radius).astype(jnp.float32)
        done = jnp.maximum(prev_done, success) if self.terminate_on_success else jnp.zeros((), jnp.float32)
        return State(
            pipeline_state=pos,
            obs=self.observe(pos),
            reward=-dist,
            done=done,
            metrics={SUCCESS: success, "distance": dist},
            info={k: info[k] for k in dict.fromkeys((GOAL_OBS, self._goal_key))},
        )


def _check_obs(obs: str, image_size: int | None) -> None:
    """Raises `ValueError` naming the option unless `obs` and `image_size` are valid together."""
    if obs not in OBS_MODES:
        raise ValueError(f"two_rooms: obs must be one of {OBS_MODES}, got {obs!r}")
    if image_size is None:
        return
    if obs != "pixels":
        raise ValueError(f"two_rooms: image_size applies only to obs='pixels', got obs={obs!r}")
    lo, hi = IMAGE_SIZES
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or not lo <= image_size <= hi:
        raise ValueError(f"two_rooms: image_size must be an int in [{lo}, {hi}], got {image_size!r}")
