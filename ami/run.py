"""A run: build everything from a config, train, evaluate, and write the run directory.

A run directory holds `config.yaml` (the resolved config), `metrics.jsonl` (one line per
training chunk and per phase), `summary.json`, and `checkpoints/` (Orbax: the learner's
parameters, optimiser states, key and step, with the config as metadata).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import envs
from ami import checkpoint, configlib, replay
from ami.agent import Agent, AgentState, make_agent
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


def train_model(cfg: ExperimentConfig, env: envs.Env, agent: Agent, progress: Progress) -> tuple[AgentState, int]:
    """Collects the offline data and trains; returns the trained state and the env steps used."""
    k_data, k_init, k_train = jax.random.split(jax.random.key(cfg.seed), 3)
    d = cfg.data
    t0 = time.perf_counter()
    data = jax.jit(collect, static_argnums=(0, 2, 3, 4))(env, k_data, d.num_envs, d.steps_per_env, d.smoothing)
    buffer = jax.block_until_ready(to_replay(data))
    env_steps = d.num_envs * d.steps_per_env
    progress.say(f"collect: {env_steps} env steps in {time.perf_counter() - t0:.1f} s")
    progress.log({"phase": "collect", "env_steps": env_steps})
    state = agent.init(k_init, 1)
    chunk = make_train_chunk(cfg, agent)
    num_chunks = -(-cfg.train.updates // cfg.train.chunk)
    t0 = time.perf_counter()
    for i in range(num_chunks):
        state, metrics = chunk(state, buffer, jax.random.fold_in(k_train, i))
        metrics = {k: float(v) for k, v in metrics.items()}
        done = (i + 1) * cfg.train.chunk
        elapsed = time.perf_counter() - t0
        eta = elapsed / (i + 1) * (num_chunks - i - 1)
        progress.log({"phase": "train", "updates": done, **metrics})
        progress.say(
            f"train: {done}/{num_chunks * cfg.train.chunk} updates ({done / elapsed:.0f}/s, ETA {eta:.0f} s) "
            f"pred {metrics['pred_loss']:.4f} z_std {metrics['z_std']:.2f} rank {metrics['z_rank']:.1f}"
            + (f" critic {metrics['critic_loss']:.4f}" if "critic_loss" in metrics else "")
        )
    return state, env_steps


def evaluate_run(cfg: ExperimentConfig, agent: Agent, state: AgentState, controllers=CONTROLLERS) -> dict:
    """Success per controller on `cfg.eval.episodes` batched episodes from the fixed eval seed."""
    eval_env = make_env(cfg, auto_reset=False)
    return evaluate(
        agent, state, eval_env, jax.random.key(cfg.eval.seed), cfg.eval.episodes, cfg.env.episode_length, controllers
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


def train(cfg: ExperimentConfig, run_dir: str | Path, quiet: bool = False) -> dict:
    """`ami train`: the whole experiment; returns the summary written to `run_dir/summary.json`."""
    start = time.perf_counter()
    cfg, env, agent = build(cfg)
    _check_replay(cfg, env)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    configlib.dump(cfg, run_dir / "config.yaml")
    progress = Progress(run_dir, quiet)
    state, env_steps = train_model(cfg, env, agent, progress)
    checkpoint.save(
        run_dir / "checkpoints",
        int(state.learner.step),
        state.learner,
        {"config": configlib.to_dict(cfg)},
        max_to_keep=2,
    )
    t0 = time.perf_counter()
    controllers = CONTROLLERS if cfg.eval.baselines else ("learned",)
    results = evaluate_run(cfg, agent, state, controllers)
    progress.say(
        f"evaluate: {cfg.eval.episodes} episodes x {len(controllers)} controllers in "
        f"{time.perf_counter() - t0:.1f} s: " + ", ".join(f"{k} {v['success_rate']:.3f}" for k, v in results.items())
    )
    summary = summarize(results, env_steps, time.perf_counter() - start, int(state.learner.step))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    progress.log({"phase": "summary", **{k: v for k, v in summary.items() if k != "controllers"}})
    return summary


def load_run(run_dir: str | Path) -> tuple[ExperimentConfig, Agent, AgentState]:
    """The config, agent and trained state of a finished run (from its latest checkpoint)."""
    run_dir = Path(run_dir)
    cfg = configlib.load(ExperimentConfig, run_dir / "config.yaml")
    cfg, _, agent = build(cfg)
    fresh = agent.init(jax.random.key(0), 1)
    learner, _ = checkpoint.restore(run_dir / "checkpoints", target=fresh.learner, fallback=True)
    return cfg, agent, AgentState(learner, fresh.memory, jnp.zeros((), jnp.int32))
