"""Point mass: a goal-conditioned double integrator in the open arena [-1, 1]^2.

State: position `[2]` and velocity `[2]`. An action a in [-1, 1]^2 is a force:
`v' = (1 - damping * dt) * v + accel * dt * a`, `p' = p + dt * v'`; the arena's walls stop
the mass (position clipped, that velocity component zeroed). Observation `[4]` is
`[p, v]`; the goal observation is `[goal, 0, 0]` (the goal reached at rest). Reward: minus
the distance to the goal; success within `success_radius`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs.base import GOAL_OBS, SUCCESS, NativeEnv, State


class PointMass(NativeEnv):
    """Goal-conditioned double integrator; see the module docstring."""

    goal_conditioned = True

    def __init__(
        self,
        dt: float = 0.1,
        accel: float = 2.0,
        damping: float = 1.0,
        success_radius: float = 0.1,
        margin: float = 0.1,
    ):
        if dt <= 0.0 or accel <= 0.0 or damping < 0.0 or damping * dt >= 1.0:
            raise ValueError(
                f"point_mass: need dt > 0, accel > 0, 0 <= damping * dt < 1; got {dt=}, {accel=}, {damping=}"
            )
        self.dt, self.accel, self.damping = float(dt), float(accel), float(damping)
        self.success_radius = float(success_radius)
        self.margin = float(margin)
        self._observation_size = 4
        self._action_size = 2

    def reset(self, rng: jax.Array) -> State:
        k_pos, k_goal = jax.random.split(rng)
        lim = 1.0 - self.margin
        pos = jax.random.uniform(k_pos, (2,), minval=-lim, maxval=lim)
        goal = jax.random.uniform(k_goal, (2,), minval=-lim, maxval=lim)
        phys = jnp.concatenate([pos, jnp.zeros(2, jnp.float32)])
        goal_obs = jnp.concatenate([goal, jnp.zeros(2, jnp.float32)])
        return self._state(phys, goal_obs)

    def step(self, state: State, action: jax.Array) -> State:
        return self._state(self.dynamics(state.pipeline_state, action), state.info[GOAL_OBS])

    def dynamics(self, phys: jax.Array, action: jax.Array) -> jax.Array:
        """`[p, v]` `[4]`, action `[2]` -> next `[p, v]` `[4]`."""
        pos, vel = phys[:2], phys[2:]
        vel = (1.0 - self.damping * self.dt) * vel + self.accel * self.dt * jnp.clip(action, -1.0, 1.0)
        moved = pos + self.dt * vel
        pos = jnp.clip(moved, -1.0, 1.0)
        vel = jnp.where(pos == moved, vel, 0.0)
        return jnp.concatenate([pos, vel])

    def _state(self, phys: jax.Array, goal_obs: jax.Array) -> State:
        dist = jnp.linalg.norm(phys[:2] - goal_obs[:2])
        return State(
            pipeline_state=phys,
            obs=phys,
            reward=-dist,
            done=jnp.zeros((), jnp.float32),
            metrics={SUCCESS: (dist < self.success_radius).astype(jnp.float32), "distance": dist},
            info={GOAL_OBS: goal_obs},
        )
