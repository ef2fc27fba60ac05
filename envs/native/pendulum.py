"""Pendulum swing-up with a dense reward (the classic torque-limited pendulum).

State: angle `theta` (0 = upright) and angular velocity. An action a in [-1, 1] is a
torque `max_torque * a`; `w' = clip(w + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt)`,
`theta' = theta + w' dt`. Episodes start hanging down (theta near pi) at near rest.
Observation `[3]`: `[cos theta, sin theta, w / max_speed]`. Reward:
`-(angle(theta)^2 + 0.1 w^2 + 0.001 u^2)` with the angle wrapped to [-pi, pi], so the
best return is 0 and a hanging pendulum earns about -9.9 a step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs.base import NativeEnv, State


def wrap_angle(theta: jax.Array) -> jax.Array:
    """Angle wrapped to [-pi, pi)."""
    return (theta + jnp.pi) % (2.0 * jnp.pi) - jnp.pi


class Pendulum(NativeEnv):
    """Torque-limited pendulum swing-up; see the module docstring."""

    def __init__(
        self,
        dt: float = 0.05,
        gravity: float = 10.0,
        mass: float = 1.0,
        length: float = 1.0,
        max_torque: float = 2.0,
        max_speed: float = 8.0,
        init_noise: float = 0.2,
    ):
        if min(dt, gravity, mass, length, max_torque, max_speed) <= 0.0:
            raise ValueError("pendulum: dt, gravity, mass, length, max_torque and max_speed must be positive")
        self.dt, self.gravity, self.mass, self.length = float(dt), float(gravity), float(mass), float(length)
        self.max_torque, self.max_speed = float(max_torque), float(max_speed)
        self.init_noise = float(init_noise)
        self._observation_size = 3
        self._action_size = 1

    def reset(self, rng: jax.Array) -> State:
        noise = jax.random.uniform(rng, (2,), minval=-self.init_noise, maxval=self.init_noise)
        phys = jnp.array([jnp.pi, 0.0], jnp.float32) + noise
        return self._state(phys, jnp.zeros((), jnp.float32))

    def step(self, state: State, action: jax.Array) -> State:
        theta, w = state.pipeline_state[0], state.pipeline_state[1]
        u = self.max_torque * jnp.clip(action[0], -1.0, 1.0)
        g, m, l, dt = self.gravity, self.mass, self.length, self.dt
        w = jnp.clip(
            w + (3.0 * g / (2.0 * l) * jnp.sin(theta) + 3.0 / (m * l**2) * u) * dt, -self.max_speed, self.max_speed
        )
        cost = wrap_angle(theta) ** 2 + 0.1 * state.pipeline_state[1] ** 2 + 0.001 * u**2
        return self._state(jnp.stack([theta + w * dt, w]), -cost)

    def _state(self, phys: jax.Array, reward: jax.Array) -> State:
        theta, w = phys[0], phys[1]
        obs = jnp.stack([jnp.cos(theta), jnp.sin(theta), w / self.max_speed])
        return State(
            pipeline_state=phys,
            obs=obs,
            reward=reward,
            done=jnp.zeros((), jnp.float32),
            metrics={"upright": (jnp.cos(theta) > 0.95).astype(jnp.float32)},
            info={},
        )
