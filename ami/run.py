"""A run: build everything from a config, train, evaluate, and write the run directory.

A run directory holds `config.yaml` (the resolved config), `metrics.jsonl` (one line per
training chunk and per phase), `summary.json`, and `checkpoints/` (Orbax: the learner's
parameters, optimiser states, key and step, with the config as metadata).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import envs
from ami import checkpoint, configlib, replay
from ami.agent import Agent, AgentState, make_agent, with_obs_stats
from ami.config import ExperimentConfig
from ami.configurator import Task, resolve
from ami.evaluate import CONTROLLERS, evaluate
from ami.train import collect, make_train_chunk, to_replay


class Progress:
    """Prints `phase: done/total (rate/s, ETA) extra` lines and appends JSON lines to `metrics.jsonl`."""

    def __init__(self, run_dir: Path, quiet: bool = False):
        self.path, self.quiet, self.start = run_dir / "metrics.jsonl", quiet, time.perf_counter()

    def log(self, record: dict[str, Any]) -> None:
        record = {"wall_time_s": round(time.perf_counter() - self.start, 2), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def make_env(cfg: ExperimentConfig, auto_reset: bool = True) -> envs.Env:
    e = cfg.env
    return envs.make(
        e.name, episode_length=e.episode_length, action_repeat=e.action_repeat, auto_reset=auto_reset, **e.kwargs
    )


def build(cfg: ExperimentConfig) -> tuple[ExperimentConfig, envs.Env, Agent]:
    """Resolves `cfg` for its env (the configurator) and builds the env and the agent."""
    env = make_env(cfg)
    task = Task(envs.is_goal_conditioned(env), env.action_size, int(env.episode_length), envs.action_repeat(env))
    cfg = resolve(cfg, task)
    obs_shape = (env.observation_size,) if isinstance(env.observation_size, int) else tuple(env.observation_size)
    return cfg, env, make_agent(cfg, obs_shape, env.action_size)


def _check_replay(cfg: ExperimentConfig, env: envs.Env) -> None:
    state = jax.eval_shape(env.reset, jax.random.key(0))
    action = np.zeros(env.action_size, np.float32)
    example = {
        "obs": np.zeros(state.obs.shape, state.obs.dtype),
        "action": action,
        "done": np.zeros((), np.float32),
        "next_obs": np.zeros(state.obs.shape, state.obs.dtype),
    }
    d = cfg.data
    replay.check_capacity(example, d.num_envs, d.steps_per_env, int(d.max_replay_mb * replay.MB))


class Training(NamedTuple):
    """What a training checkpoint holds: the learner and the replay buffer it samples from."""

    learner: Any
    replay: replay.ReplayState


def _collect(cfg: ExperimentConfig, env: envs.Env, key: jax.Array) -> replay.ReplayState:
    d = cfg.data
    data = collect(env, key, d.num_envs, d.steps_per_env, d.smoothing)
    return to_replay(data)


def _keys(cfg: ExperimentConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(data, init, train) keys of a run: everything random derives from `cfg.seed`."""
    k_data, k_init, k_train = jax.random.split(jax.random.key(cfg.seed), 3)
    return k_data, k_init, k_train


def _replay_shape(cfg: ExperimentConfig, env: envs.Env) -> replay.ReplayState:
    """The abstract replay buffer of a run (shapes and dtypes; nothing is collected)."""
    return jax.eval_shape(lambda k: _collect(cfg, env, k), _keys(cfg)[0])


def _start(cfg, env, agent, run_dir: Path, progress: Progress) -> tuple[AgentState, replay.ReplayState]:
    """A fresh start (collect the data, init the agent) or the newest checkpoint of `run_dir`."""
    ckpt = run_dir / "checkpoints"
    k_data, k_init, _ = _keys(cfg)
    state = agent.init(k_init, 1)
    if checkpoint.latest_step(ckpt) is not None:
        target = Training(state.learner, _replay_shape(cfg, env))
        saved, _ = checkpoint.restore(ckpt, target=target, fallback=True)
        progress.say(f"resume: from update {int(saved.learner.step)} of {ckpt}")
        progress.log({"phase": "resume", "updates": int(saved.learner.step)})
        return state._replace(learner=saved.learner), saved.replay
    t0 = time.perf_counter()
    buffer = jax.block_until_ready(jax.jit(lambda k: _collect(cfg, env, k))(k_data))
    env_steps = cfg.data.num_envs * cfg.data.steps_per_env
    progress.say(f"collect: {env_steps} env steps in {time.perf_counter() - t0:.1f} s")
    progress.log({"phase": "collect", "env_steps": env_steps})
    if cfg.perception.normalize:
        state = with_obs_stats(state, buffer.data.obs)
    return state, buffer


def train_model(
    cfg: ExperimentConfig, env: envs.Env, agent: Agent, run_dir: Path, progress: Progress, max_chunks: int | None = None
) -> AgentState:
    """Collects the offline data (or resumes from `run_dir/checkpoints`) and trains.

    Chunk `i` always uses the key `fold_in(k_train, i)`, so a resumed run continues exactly
    as if it had never stopped. Checkpoints every `train.checkpoint_every` updates and at the
    end. `max_chunks` stops after that many chunks in this call (a time-sliced job).
    """
    t = cfg.train
    state, buffer = _start(cfg, env, agent, run_dir, progress)
    chunk = make_train_chunk(cfg, agent)
    num_chunks = t.updates // t.chunk
    first = int(state.learner.step) // t.chunk
    last = num_chunks if max_chunks is None else min(num_chunks, first + max_chunks)
    k_train = _keys(cfg)[2]
    t0 = time.perf_counter()
    for i in range(first, last):
        state, metrics = chunk(state, buffer, jax.random.fold_in(k_train, i))
        metrics = {k: float(v) for k, v in metrics.items()}
        done = (i + 1) * t.chunk
        if done % t.checkpoint_every == 0 or i + 1 == num_chunks:
            meta = {"config": configlib.to_dict(cfg)}
            checkpoint.save(run_dir / "checkpoints", done, Training(state.learner, buffer), meta, max_to_keep=2)
        rate = (i + 1 - first) * t.chunk / (time.perf_counter() - t0)
        progress.log({"phase": "train", "updates": done, **metrics})
        progress.say(
            f"train: {done}/{t.updates} updates ({rate:.0f}/s, ETA {(t.updates - done) / rate:.0f} s) "
            f"pred {metrics['pred_loss']:.4f} z_std {metrics['z_std']:.2f} rank {metrics['z_rank']:.1f}"
            + (f" critic {metrics['critic_loss']:.4f}" if "critic_loss" in metrics else "")
        )
    return state


def evaluate_run(cfg: ExperimentConfig, agent: Agent, state: AgentState, controllers=CONTROLLERS) -> dict:
    """Success per controller on `cfg.eval.episodes` batched episodes from the fixed eval seed."""
    eval_env = make_env(cfg, auto_reset=False)
    e = cfg.eval
    return evaluate(
        agent, state, eval_env, jax.random.key(e.seed), e.episodes, cfg.env.episode_length, controllers, e.success
    )


def summarize(results: dict, env_steps: int, wall_time: float, updates: int) -> dict:
    summary = {
        "success_rate": results["learned"]["success_rate"],
        "env_steps": env_steps,
        "wall_time_s": round(wall_time, 1),
        "updates": updates,
    }
    for name, r in results.items():
        if name != "learned":
            summary[f"{name}_success_rate"] = r["success_rate"]
    summary["controllers"] = results
    return summary


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}} -> {"a.b": 1}`."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, sub in tree.items():
        out.update(_flat(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _check_same_run(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Raises `ConfigError` when `run_dir` holds checkpoints of a run with another config."""
    saved_path = run_dir / "config.yaml"
    if checkpoint.latest_step(run_dir / "checkpoints") is None or not saved_path.exists():
        return
    saved = _flat(configlib.to_dict(configlib.load(ExperimentConfig, saved_path)))
    now = _flat(configlib.to_dict(cfg))
    differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differ[:5])
        raise configlib.ConfigError(
            f"{run_dir} holds checkpoints of a run with a different config ({shown}); "
            "resume it with the same config or pass another --run-dir"
        )


def train(cfg: ExperimentConfig, run_dir: str | Path, quiet: bool = False, max_chunks: int | None = None) -> dict:
    """`ami train`: the whole experiment; returns the summary written to `run_dir/summary.json`.

    A run directory that already holds checkpoints of the same config is resumed from the
    newest one (a killed run continues where it stopped, bit for bit). With `max_chunks`, at
    most that many training chunks run in this call; if training is then unfinished the
    summary is `{"status": "unfinished", "updates": ...}` and nothing is evaluated.
    """
    start = time.perf_counter()
    cfg, env, agent = build(cfg)
    _check_replay(cfg, env)
    run_dir = Path(run_dir)
    _check_same_run(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    configlib.dump(cfg, run_dir / "config.yaml")
    progress = Progress(run_dir, quiet)
    state = train_model(cfg, env, agent, run_dir, progress, max_chunks)
    updates = int(state.learner.step)
    if updates < cfg.train.updates:
        return {"status": "unfinished", "updates": updates}
    t0 = time.perf_counter()
    controllers = cfg.eval.controllers
    results = evaluate_run(cfg, agent, state, controllers)
    progress.say(
        f"evaluate: {cfg.eval.episodes} episodes x {len(controllers)} controllers in "
        f"{time.perf_counter() - t0:.1f} s: " + ", ".join(f"{k} {v['success_rate']:.3f}" for k, v in results.items())
    )
    env_steps = cfg.data.num_envs * cfg.data.steps_per_env
    summary = summarize(results, env_steps, time.perf_counter() - start, updates)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    progress.log({"phase": "summary", **{k: v for k, v in summary.items() if k != "controllers"}})
    return summary


# Sections a finished run can be re-planned with (none of them changes a trained parameter).
REPLAN_SECTIONS = ("planner", "cost", "eval")
# The planner's search settings the configurator chooses again when the planner or budget changes.
SEARCH_KEYS = ("iterations", "restarts", "population", "learning_rate", "options")


def replan_config(saved: ExperimentConfig, overrides: Iterable[str]) -> ExperimentConfig:
    """`saved` (a run's resolved config) with `overrides` of its planning sections only.

    A key outside `REPLAN_SECTIONS` raises `ConfigError` (it would change what was trained).
    When `planner.name` or `eval.budget` is overridden, the saved search settings not
    themselves overridden are cleared so the configurator chooses them for the new planner
    and budget; the horizon and re-planning interval are kept.
    """
    overrides = list(overrides)
    keys = [configlib.parse_override(text)[0] for text in overrides]
    for key in keys:
        section = key.split(".")[0]
        if section not in REPLAN_SECTIONS:
            raise configlib.ConfigError(
                f"a finished run is re-planned with {', '.join(s + '.*' for s in REPLAN_SECTIONS)} only; "
                f"{section}.* is part of what was trained (train a new run)",
                key,
            )
    if saved.policy.enabled and "planner.horizon" in keys:
        raise configlib.ConfigError("the run's policy was trained for the saved horizon", "planner.horizon")
    data = configlib.to_dict(saved)
    if {"planner.name", "eval.budget"} & set(keys):
        for name in SEARCH_KEYS:
            if not any(k == f"planner.{name}" or k.startswith(f"planner.{name}.") for k in keys):
                data["planner"].pop(name, None)
    return configlib.load(ExperimentConfig, data, overrides)


def load_run(run_dir: str | Path, overrides: Iterable[str] = ()) -> tuple[ExperimentConfig, Agent, AgentState]:
    """The config, agent and trained state of a run (from its newest readable checkpoint).

    `overrides` re-plan the run with other planner, cost or eval settings (`replan_config`).
    """
    run_dir = Path(run_dir)
    cfg = configlib.load(ExperimentConfig, run_dir / "config.yaml")
    if overrides:
        cfg = replan_config(cfg, overrides)
    cfg, env, agent = build(cfg)
    fresh = agent.init(jax.random.key(0), 1)
    target = Training(fresh.learner, _replay_shape(cfg, env))
    saved, _ = checkpoint.restore(run_dir / "checkpoints", target=target, fallback=True)
    return cfg, agent, AgentState(saved.learner, fresh.memory, jnp.zeros((), jnp.int32))
