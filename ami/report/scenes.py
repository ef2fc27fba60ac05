"""How each kind of environment is filmed: what to keep of a state, and how to map a task to the plane.

`scene_for(env)` looks at the innermost env (`env.unwrapped`) and returns a `Scene`:

* `two_rooms`, `point_mass`, `pendulum` (native, drawn in numpy by `ami.report.draw`): the
  snapshot is the env's own `pipeline_state` (position `[2]`, `[p, v]` `[4]`, `[theta, w]`);
  the two goal tasks are planar (`Planar`): a position, a goal position and the observation of
  a position at rest, so the planner's path can be drawn over the arena;
* `mujoco` (`reacher_goal`, `dmc/*` through `PlaygroundEnv`, `brax/*`): the snapshot is the
  joint positions (`qpos [nq]`) and mocap poses, copied into a `mujoco.MjData` and rendered by
  MuJoCo (`ami.report.mjrender`); `model` is the `mujoco.MjModel`.

Any other env (a user's `module:factory`) has no scene: the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import envs
from envs.native import Pendulum, PointMass, TwoRooms

MIN_FPS, MAX_FPS = 5.0, 50.0
NATIVE_FPS = 20.0  # native envs without a time step: 20 decisions a second


class Planar(NamedTuple):
    """A goal task in the plane `[-1, 1]^2`: `position(snapshot) -> [2]`, `goal(state) -> [2]`
    (unbatched env state) and `observe(pos [2]) -> obs` (the observation of the agent at rest there)."""

    position: Callable[[Any], jax.Array]
    goal: Callable[[Any], jax.Array]
    observe: Callable[[jax.Array], jax.Array]


class Scene(NamedTuple):
    """`kind` (`two_rooms`, `point_mass`, `pendulum`, `mujoco`), `snapshot(state) -> pytree`
    (unbatched; what a frame needs), `planar` (or None), the frame rate, the raw env and the
    MuJoCo model (None for native envs)."""

    kind: str
    snapshot: Callable[[Any], Any]
    planar: Planar | None
    fps: float
    raw: Any
    model: Any = None


def _fps(raw: Any, env: envs.Env) -> float:
    dt = getattr(raw, "dt", None)
    if not isinstance(dt, int | float) or dt <= 0:
        return NATIVE_FPS
    return float(min(MAX_FPS, max(MIN_FPS, 1.0 / (float(dt) * envs.action_repeat(env)))))


def _mujoco_model(raw: Any):
    """The `mujoco.MjModel` behind a physics env, or None."""
    if hasattr(raw, "pg_env"):  # dmc/*: MuJoCo Playground
        return raw.pg_env.mj_model
    if hasattr(raw, "mj_model"):  # reacher_goal
        return raw.mj_model
    sys = getattr(raw, "sys", None)  # brax/*: a PipelineEnv's System
    return getattr(sys, "mj_model", None)


def mujoco_snapshot(state: Any) -> dict[str, jax.Array]:
    """`qpos [nq]` and the mocap poses (`mocap_pos [M, 3]`, `mocap_quat [M, 4]`) of an MJX or Brax state."""
    ps = state.pipeline_state
    qpos = ps.qpos if hasattr(ps, "qpos") else ps.q
    out = {"qpos": jnp.asarray(qpos, jnp.float32)}
    for name in ("mocap_pos", "mocap_quat"):
        if getattr(ps, name, None) is not None:
            out[name] = jnp.asarray(getattr(ps, name), jnp.float32)
    return out


def _two_rooms(raw: TwoRooms) -> Planar:
    return Planar(
        position=lambda snap: snap,
        goal=raw.goal_position,
        observe=raw.observe,
    )


def _point_mass(raw: PointMass) -> Planar:
    return Planar(
        position=lambda snap: snap[:2],
        goal=lambda state: state.info[envs.GOAL_OBS][:2],
        observe=lambda pos: jnp.concatenate([pos, jnp.zeros(2, pos.dtype)]),
    )


def scene_for(env: envs.Env) -> Scene | None:
    """The `Scene` of `env` (any stack of wrappers over a known env), or None."""
    raw = getattr(env, "unwrapped", env)
    fps = _fps(raw, env)
    snap = lambda state: state.pipeline_state  # noqa: E731
    if isinstance(raw, TwoRooms):
        return Scene("two_rooms", snap, _two_rooms(raw), fps, raw)
    if isinstance(raw, PointMass):
        return Scene("point_mass", snap, _point_mass(raw), fps, raw)
    if isinstance(raw, Pendulum):
        return Scene("pendulum", snap, None, fps, raw)
    model = _mujoco_model(raw)
    if model is not None:
        return Scene("mujoco", mujoco_snapshot, None, fps, raw, model)
    return None
