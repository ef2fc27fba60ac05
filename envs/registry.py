"""Names to environments: `make`, `register`, `registered`.

Name forms:

* a plain name (`two_rooms`, `point_mass`, `pendulum`, `reacher_goal`, or one a user registered);
* `brax/<name>` for Brax's environments (keyword `backend=` picks the physics pipeline);
* `dmc/<Name>` for MuJoCo Playground's DeepMind Control ports (other keywords become
  Playground config overrides);
* `package.module:factory` for any object with the Brax `Env` API that `factory(**kwargs)`
  returns; it is checked (`check_env`) before use.

`make` returns the env wrapped as described in `envs.wrappers`: actions in [-1, 1], a
time limit, auto-reset to freshly drawn states, and dtypes that never retrace.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable

import numpy as np

from envs import adapters
from envs.base import Env, Wrapper
from envs.checks import SpecCheck, check_env
from envs.native import Maze, Pendulum, PointMass, TwoRooms
from envs.reacher_goal import EPISODE_LENGTH as REACHER_GOAL_EPISODE_LENGTH
from envs.reacher_goal import ReacherGoal
from envs.wrappers import ActionRepeat, AutoReset, Canonical, RescaleActions, TimeLimit


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """A registered environment: how to build it and its default episode length."""

    name: str
    factory: Callable[..., Env]
    episode_length: int
    description: str = ""


_REGISTRY: dict[str, EnvSpec] = {}


def register(
    name: str,
    factory: Callable[..., Env],
    *,
    episode_length: int = 1000,
    description: str = "",
    overwrite: bool = False,
) -> None:
    """Registers `factory(**kwargs) -> Env` under the plain name `name`."""
    if not name or "/" in name or ":" in name:
        raise ValueError(f"register: {name!r} is not a plain name (no '/' or ':')")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"register: {name!r} is already registered (pass overwrite=True to replace it)")
    if int(episode_length) < 1:
        raise ValueError(f"register: episode_length must be >= 1, got {episode_length}")
    _REGISTRY[name] = EnvSpec(name, factory, int(episode_length), description)


def registered() -> tuple[str, ...]:
    """Every name `make` accepts: plain names, then `brax/...`, then `dmc/...`."""
    return (
        tuple(sorted(_REGISTRY))
        + tuple(f"brax/{n}" for n in adapters.brax_names())
        + tuple(f"dmc/{n}" for n in adapters.dmc_names())
    )


def describe(name: str) -> str:
    """One line about a plain-named environment (empty for others)."""
    spec = _REGISTRY.get(name)
    return spec.description if spec else ""


def _unknown(name: str, choices: tuple[str, ...], kind: str) -> ValueError:
    close = difflib.get_close_matches(name, choices, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(
        f"unknown {kind} {name!r}.{hint} Known: {', '.join(choices)}. Brax's envs are named 'brax/<name>' "
        "(e.g. 'brax/ant'), MuJoCo Playground's DeepMind Control ports 'dmc/<Name>' (e.g. "
        "'dmc/CartpoleSwingup'), and user envs 'package.module:factory'; `ami envs` lists every name."
    )


def _load_factory(name: str) -> Callable[..., Env]:
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"env {name!r}: cannot import module {module_name!r}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"env {name!r}: module {module_name!r} has no callable {attr!r}")
    return factory


def _build(name: str, kwargs: dict) -> tuple[Env, int, int, tuple | None]:
    """(raw env, default episode length, default action repeat, action bounds or None)."""
    if name.startswith("brax/"):
        short = name.removeprefix("brax/")
        if short not in adapters.brax_names():
            raise _unknown(short, adapters.brax_names(), "Brax env")
        env = adapters.make_brax(short, **kwargs)
        return env, adapters.BRAX_EPISODE_LENGTH, 1, adapters.brax_action_bounds(env)
    if name.startswith("dmc/"):
        short = name.removeprefix("dmc/")
        if short not in adapters.dmc_names():
            raise _unknown(short, adapters.dmc_names(), "DMC env")
        env = adapters.PlaygroundEnv(short, **kwargs)
        return env, int(env.config.episode_length), int(env.config.action_repeat), env.action_bounds()
    if ":" in name:
        env = _load_factory(name)(**kwargs)
        check_env(env, name)
        return env, 1000, 1, None
    if name not in _REGISTRY:
        raise _unknown(name, tuple(sorted(_REGISTRY)), "env")
    spec = _REGISTRY[name]
    return spec.factory(**kwargs), spec.episode_length, 1, None


def action_repeat(env: Env) -> int:
    """The number of simulator steps per agent step of a wrapped env (1 without `ActionRepeat`)."""
    while isinstance(env, Wrapper):
        if isinstance(env, ActionRepeat):
            return env.repeat
        env = env.env
    return 1


def make(
    name: str,
    *,
    episode_length: int | None = None,
    action_repeat: int | None = None,
    auto_reset: bool = True,
    check_finite: bool | None = None,
    **kwargs,
) -> Env:
    """The environment `name`, wrapped for agents.

    Args:
      name: see the module docstring.
      episode_length: agent steps per episode (default: the env's own).
      action_repeat: physics steps per agent step (default: the env's own, usually 1).
      auto_reset: start a fresh episode after one ends (inside `step`).
      check_finite: ask for NaN/inf checks, read back as `env.check_finite`: the runner
        checks states for NaN/inf once per rollout chunk (`envs.check_finite`), never
        inside a step, and raises naming the field (default: on for
        `package.module:factory` envs, off otherwise).
      **kwargs: passed to the env's factory (Brax: `backend=`; DMC: config overrides).
    """
    env, default_length, default_repeat, bounds = _build(name, kwargs)
    env = Canonical(env, name)
    if bounds is not None and not (np.all(bounds[0] == -1.0) and np.all(bounds[1] == 1.0)):
        env = RescaleActions(env, *bounds)
    repeat = default_repeat if action_repeat is None else action_repeat
    if repeat != 1:
        env = ActionRepeat(env, repeat)
    env = TimeLimit(env, default_length if episode_length is None else episode_length)
    if auto_reset:
        env = AutoReset(env)
    user_env = ":" in name
    return SpecCheck(env, name, check_finite=user_env if check_finite is None else check_finite)


register(
    "two_rooms",
    TwoRooms,
    episode_length=100,
    description="2-D point, two rooms joined by a door; goal-conditioned (PLDM Two-Rooms)",
)
register(
    "maze",
    Maze,
    episode_length=600,
    description="2-D point, 3x3 rooms chained by doors; goal in the far end room (> 200 steps); goal-conditioned",
)
register(
    "point_mass", PointMass, episode_length=100, description="2-D double integrator in an open arena; goal-conditioned"
)
register("pendulum", Pendulum, episode_length=200, description="torque-limited pendulum swing-up; reward")
register(
    "reacher_goal",
    ReacherGoal,
    episode_length=REACHER_GOAL_EPISODE_LENGTH,
    description="DMC two-link reacher (MJX) reaching a random reachable pose; goal-conditioned",
)
