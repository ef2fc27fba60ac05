"""The environment contract: Brax's `Env`/`State`, plus the goal-conditioned conventions.

Every environment in ami follows Brax's API (`reset(key) -> State`, `step(State, action)
-> State`, `observation_size`, `action_size`), so the types are Brax's own. This module
re-exports them and adds what Brax leaves open:

* `NativeEnv`: a base for pure-JAX tasks that caches the sizes (Brax's `PipelineEnv`
  runs a full `reset` every time `observation_size` is read).
* Goal-conditioned tasks set `goal_conditioned = True` and keep the observation of the
  goal in `state.info[GOAL_OBS]` (the observation's shape), and whether the goal is
  reached in `state.metrics[SUCCESS]` (float32 0/1), so an agent can encode the goal with
  the same encoder it uses for observations.
"""

from __future__ import annotations

from brax.envs.base import Env, State, Wrapper

GOAL_OBS = "goal_obs"
SUCCESS = "success"

__all__ = ["Env", "State", "Wrapper", "NativeEnv", "GOAL_OBS", "SUCCESS", "is_goal_conditioned"]


class NativeEnv(Env):
    """Base for ami's pure-JAX environments (backend ``"jax"``).

    Subclasses set `_observation_size` (`O` for vector observations `[O]`, the shape tuple
    `(H, W, C)` for images) and `_action_size` in `__init__`, write `reset` and `step` as
    pure functions of their arguments, and keep actions in [-1, 1].
    """

    goal_conditioned: bool = False
    _observation_size: int | tuple[int, ...]
    _action_size: int

    @property
    def observation_size(self) -> int | tuple[int, ...]:
        return self._observation_size

    @property
    def action_size(self) -> int:
        return self._action_size

    @property
    def backend(self) -> str:
        return "jax"


def is_goal_conditioned(env: Env) -> bool:
    """Whether `env` (or the env it wraps) exposes a goal observation in `state.info`."""
    return bool(getattr(env, "goal_conditioned", False))
