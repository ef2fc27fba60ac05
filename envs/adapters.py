"""Brax and MuJoCo Playground environments behind the one `Env` API.

* `brax/<name>`: Brax's own environments, already Brax `Env`s; only the physics backend
  is chosen here (`BRAX_DEFAULT_BACKEND`, the fastest correct one on CPU: see
  `benchmarks/RESULTS.md`).
* `dmc/<Name>`: MuJoCo Playground's DeepMind Control ports (MJX). Playground has its own
  `State` type; `PlaygroundEnv` maps it onto Brax's (`data` becomes `pipeline_state`)
  and loads the pure-JAX MJX implementation (`impl="jax"`), which runs on any backend
  and is differentiable, so planners can take gradients through the true physics.
"""

from __future__ import annotations

import jax
import numpy as np

from envs.base import Env, State

BRAX_DEFAULT_BACKEND = "mjx"
BRAX_BACKENDS = ("mjx", "generalized", "positional", "spring")
BRAX_EPISODE_LENGTH = 1000


def brax_names() -> tuple[str, ...]:
    """Names of Brax's registered environments (imports brax)."""
    from brax import envs as brax_envs

    return tuple(sorted(n for n in brax_envs._envs if n != "fast"))


def dmc_names() -> tuple[str, ...]:
    """Names of MuJoCo Playground's DeepMind Control ports (imports mujoco_playground)."""
    from mujoco_playground import registry

    return tuple(registry.dm_control_suite.ALL_ENVS)


def make_brax(name: str, backend: str = BRAX_DEFAULT_BACKEND, **kwargs) -> Env:
    """Brax environment `name` on physics `backend`."""
    from brax import envs as brax_envs

    if backend not in BRAX_BACKENDS:
        raise ValueError(f"brax/{name}: backend must be one of {BRAX_BACKENDS}, got {backend!r}")
    return brax_envs.get_environment(name, backend=backend, **kwargs)


def brax_action_bounds(env: Env) -> tuple[np.ndarray, np.ndarray]:
    """The control range `[A]`, `[A]` a Brax pipeline env applies its actions in."""
    ctrl = np.asarray(env.unwrapped.sys.actuator.ctrl_range, np.float32)
    return ctrl[:, 0], ctrl[:, 1]


class PlaygroundEnv(Env):
    """A MuJoCo Playground `MjxEnv` seen as a Brax `Env` (same reset/step semantics)."""

    def __init__(self, name: str, **config_overrides):
        from mujoco_playground import registry

        overrides = {"impl": "jax", **config_overrides}
        self.name = name
        self.config = registry.get_default_config(name)
        self.pg_env = registry.load(name, config_overrides=overrides)

    def reset(self, rng: jax.Array) -> State:
        return self._to_brax(self.pg_env.reset(rng))

    def step(self, state: State, action: jax.Array) -> State:
        from mujoco_playground._src.mjx_env import State as PlaygroundState

        pg_state = PlaygroundState(
            data=state.pipeline_state,
            obs=state.obs,
            reward=state.reward,
            done=state.done,
            metrics=state.metrics,
            info=state.info,
        )
        return self._to_brax(self.pg_env.step(pg_state, action))

    @staticmethod
    def _to_brax(s) -> State:
        return State(pipeline_state=s.data, obs=s.obs, reward=s.reward, done=s.done, metrics=s.metrics, info=s.info)

    @property
    def observation_size(self):
        return self.pg_env.observation_size

    @property
    def action_size(self) -> int:
        return int(self.pg_env.action_size)

    @property
    def backend(self) -> str:
        return "mjx"

    @property
    def dt(self) -> float:
        return float(self.pg_env.dt)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The control range `[A]`, `[A]` of the MuJoCo model's actuators."""
        ctrl = np.asarray(self.pg_env.mj_model.actuator_ctrlrange, np.float32)
        limited = np.asarray(self.pg_env.mj_model.actuator_ctrllimited, bool)
        low = np.where(limited, ctrl[:, 0], -1.0).astype(np.float32)
        high = np.where(limited, ctrl[:, 1], 1.0).astype(np.float32)
        return low, high
