"""Evaluation episodes of a trained run as clips: reload the agent, record, draw, encode.

`film_run(run_dir, ...) -> Films`: the run's newest checkpoint (`ami.replan.load_run`), the
learned controller on `episodes` batched episodes (`ami.report.episodes`), one clip per
episode drawn by the env's scene (`ami.report.scenes`: Pillow for the native envs, MuJoCo
offscreen for physics) and encoded by `ami.report.video`. On planar goal tasks the frames
also show the plan in force: its actions stepped through the true dynamics, and its imagined
latents placed by the nearest-neighbour probe (`ami.report.probe`), with the probe's error.
When no clip can be made (no checkpoint yet, a family without one, an env without a scene)
`Films.note` says why.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from ami.report import draw, episodes, mjrender, probe, scenes, video

OVERLAY_NOTE = (
    "orange line: the plan in force, its actions stepped through the true dynamics; blue dots: the "
    "world model's imagined latents of the same plan, each drawn at the arena position whose encoding "
    "is nearest (a nearest-neighbour probe over a {grid}x{grid} grid; the agent has no decoder). "
    "Grey: the path so far; green disc: the goal's success radius."
)


PROBE_NOTE = " The probe's mean error on the episodes' own latents: {error:.3f} (arena units; the arena is 2 wide)."


class Film(NamedTuple):
    """One episode's clip, with `facts` (success, return, distance, plans made) and its plan
    energies (`energy_t [K]` steps and `energy [K]` values where a new plan was made)."""

    clip: video.Clip
    facts: dict[str, Any]
    energy_t: np.ndarray
    energy: np.ndarray


class Films(NamedTuple):
    """The clips, what their overlay shows (`overlay`), how they were made (`about`), and `note`:
    why there are none (empty when there are)."""

    films: list[Film]
    overlay: str
    about: dict[str, Any]
    note: str


def _no_films(note: str) -> Films:
    return Films([], "", {}, note)


def _labels(rec: episodes.Recording, i: int, goal_task: bool) -> list[str]:
    t_max = rec.reward.shape[0]
    out = []
    for t in range(t_max + 1):
        text = f"t={t}"
        if goal_task and rec.distance is not None and t > 0:
            text += f"  d={rec.distance[t - 1, i]:.2f}"
        if goal_task and rec.success is not None and t > 0 and rec.success[:t, i].max() > 0:
            text += "  reached"
        if not goal_task and t > 0:
            text += f"  return={float(np.sum(rec.reward[:t, i] * rec.alive[:t, i])):.1f}"
        out.append(text)
    return out


def _facts(rec: episodes.Recording, i: int, goal_task: bool) -> dict[str, Any]:
    alive = rec.alive[:, i]
    facts: dict[str, Any] = {"steps": int(rec.reward.shape[0]), "return": float(np.sum(rec.reward[:, i] * alive))}
    if goal_task and rec.success is not None:
        hits = np.nonzero(rec.success[:, i] > 0)[0]
        facts["reached"] = bool(hits.size)
        facts["first_reached_step"] = int(hits[0]) + 1 if hits.size else None
        facts["at_goal_at_end"] = bool(rec.success[-1, i] > 0)
    if rec.distance is not None:
        facts["final_distance"] = float(rec.distance[-1, i])
    if rec.plan_energy is not None:
        facts["plans_made"] = int(np.sum(np.isfinite(rec.plan_energy[:, i])))
    return facts


def _energy(rec: episodes.Recording, i: int) -> tuple[np.ndarray, np.ndarray]:
    if rec.plan_energy is None:
        return np.zeros(0), np.zeros(0)
    e = np.asarray(rec.plan_energy[:, i], np.float64)
    t = np.nonzero(np.isfinite(e))[0]
    return t.astype(np.float64), e[t]


def _planar_overlay(agent, state, scene: scenes.Scene, rec: episodes.Recording):
    """Probe positions of the imagined latents `[T, N, H, 2]`, the true-dynamics plan `[T, N, H, 2]`
    and the probe's mean error on the episodes' own latents."""
    params = state.learner.params
    pr = probe.make_probe(agent.modules.perception.encode, params.encoder, scene.planar)
    imagined = np.asarray(probe.decode(pr, rec.imagined))
    true_plan = np.asarray(jax.vmap(jax.vmap(jax.vmap(scene.planar.position)))(rec.true_path))
    positions = np.asarray(jax.vmap(jax.vmap(scene.planar.position))(rec.frames))
    return imagined, true_plan, probe.probe_error(pr, rec.latent, positions[:-1])


def _frames(scene: scenes.Scene, rec: episodes.Recording, i: int, labels: list[str], overlay) -> np.ndarray:
    if scene.kind in ("two_rooms", "point_mass"):
        raw = scene.raw
        walls = draw.two_rooms_walls(raw.door_y, raw.door_width) if scene.kind == "two_rooms" else ()
        positions = np.asarray(jax.vmap(scene.planar.position)(jax.tree.map(lambda a: a[:, i], rec.frames)))
        extra = {}
        if overlay is not None:
            extra = {"imagined": overlay[0][:, i], "true_plan": overlay[1][:, i], "plan_valid": rec.plan_valid[:, i]}
        return draw.planar_frames(
            positions, rec.goal[i], success_radius=raw.success_radius, walls=walls, labels=labels, **extra
        )
    if scene.kind == "pendulum":
        return draw.pendulum_frames(rec.frames[:, i, 0], labels)
    snaps = {k: np.asarray(v[:, i]) for k, v in rec.frames.items()}
    return draw.label_frames(mjrender.render(scene.model, snaps), labels)


def film_run(
    run_dir: str | Path,
    *,
    episodes_n: int = 2,
    max_steps: int | None = None,
    fmt: str = "auto",
    loaded: tuple[Any, Any, Any] | None = None,
) -> Films:
    """Clips of `episodes_n` evaluation episodes of the run in `run_dir` (see the module docstring).

    `loaded` is `(cfg, agent, agent_state)` of the trained run, to skip reloading the checkpoint
    (`ami train` passes what it has); `max_steps` cuts episodes short.
    """
    from ami import family
    from ami.config import ExperimentConfig
    from ami.configlib import load
    from ami.replan import load_run
    from ami.run import make_env

    fmt = video.resolve_format(fmt)
    run_dir = Path(run_dir)
    if jax.process_count() > 1:  # the agent's arrays span processes: one process cannot run it alone
        return _no_films(f"a {jax.process_count()}-process run: film it afterwards with `ami report {run_dir}`")
    if loaded is None:
        cfg = load(ExperimentConfig, run_dir / "config.yaml")
        if family.trainer(cfg.agent.name) is not None:
            return _no_films(f"agent family {cfg.agent.name!r} trains with its own loop: no agent to reload here")
        if not any(p.name.isdigit() for p in (run_dir / "checkpoints").glob("*")):
            return _no_films("no checkpoint yet: the run has saved no agent to film")
        loaded = load_run(run_dir)
    cfg, agent, state = loaded
    env = make_env(cfg, auto_reset=False)
    scene = scenes.scene_for(env)
    if scene is None:
        return _no_films(f"no renderer for env {cfg.env.name!r} (ami.report.scenes knows native and MuJoCo envs)")
    steps = cfg.env.episode_length if max_steps is None else min(int(max_steps), cfg.env.episode_length)
    goal_task = agent.spec.goal_conditioned
    t0 = time.perf_counter()
    recorder = episodes.make_recorder(
        agent, env, scene, num_envs=episodes_n, num_steps=steps, eval_episodes=cfg.eval.episodes
    )
    rec = recorder(state, jax.random.key(cfg.eval.seed))
    t_record = time.perf_counter() - t0
    about = {"env": cfg.env.name, "episodes": episodes_n, "steps": steps, "record_s": t_record}
    about["same_as_eval"] = episodes_n == cfg.eval.episodes and steps == cfg.env.episode_length
    overlay = None
    text = ""
    if rec.imagined is not None:
        overlay = _planar_overlay(agent, state, scene, rec)
        about["probe_error"] = overlay[2]
        text = OVERLAY_NOTE.format(grid=probe.GRID) + PROBE_NOTE.format(error=overlay[2])
    t0 = time.perf_counter()
    films = []
    for i in range(episodes_n):
        frames = _frames(scene, rec, i, _labels(rec, i, goal_task), overlay)
        clip = video.encode(frames, scene.fps, fmt)
        films.append(Film(clip, _facts(rec, i, goal_task), *_energy(rec, i)))
    about.update(render_s=time.perf_counter() - t0, fps=scene.fps, format=fmt, renderer=_renderer(scene))
    return Films(films, text, about, "")


def _renderer(scene: scenes.Scene) -> str:
    if scene.kind == "mujoco":
        return f"MuJoCo offscreen (mujoco.Renderer, MUJOCO_GL={os.environ.get('MUJOCO_GL', 'egl')})"
    return "drawn with Pillow from the env's state"
