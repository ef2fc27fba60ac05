"""ami's environments: native pure-JAX tasks, Brax, and MuJoCo Playground's DMC ports.

All follow Brax's `Env` API. Start with `envs.registered()`, `envs.make(name)` and
`envs.rollout(env, policy, key, num_envs, num_steps)`.
"""

from envs.base import GOAL_OBS, SUCCESS, Env, NativeEnv, State, Wrapper, is_goal_conditioned
from envs.checks import SpecCheck, check_env, check_finite, finite_flags
from envs.registry import EnvSpec, action_repeat, describe, make, register, registered
from envs.rollout import Trajectory, rollout, rollout_from
from envs.wrappers import (
    FINAL_OBS,
    RESET_KEY,
    STEPS,
    TRUNCATION,
    ActionRepeat,
    AutoReset,
    Canonical,
    RescaleActions,
    TimeLimit,
)

__all__ = [
    "GOAL_OBS",
    "SUCCESS",
    "FINAL_OBS",
    "RESET_KEY",
    "STEPS",
    "TRUNCATION",
    "Env",
    "NativeEnv",
    "State",
    "Wrapper",
    "EnvSpec",
    "Trajectory",
    "ActionRepeat",
    "AutoReset",
    "Canonical",
    "RescaleActions",
    "SpecCheck",
    "TimeLimit",
    "action_repeat",
    "check_env",
    "check_finite",
    "describe",
    "finite_flags",
    "is_goal_conditioned",
    "make",
    "register",
    "registered",
    "rollout",
    "rollout_from",
]
