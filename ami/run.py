"""A run: build everything from a config, train, evaluate, and write the run directory.

A run directory holds `config.yaml` (the resolved config), `metrics.jsonl` (one line per
training chunk, per evaluation and per phase), `summary.json`, and `checkpoints/` (Orbax:
everything needed to continue: the agent state with its parameters, optimiser states, keys
and memories, the replay buffer with its write head, and online the env states and
counters; the config as metadata). The run knows the agent only through the family
contract (`ami.agent.Agent`): it never reads which family it runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import envs
from ami import configlib, distributed, family, online, replay, resume
from ami.agent import Agent, Spec
from ami.config import ExperimentConfig
from ami.configurator import Task, resolve
from ami.evaluate import CONTROLLERS, evaluate, make_evaluator
from ami.preemption import StopRequests
from ami.progress import Progress
from ami.train import check_chunk, check_collected, collect, make_train_chunk, to_replay


def make_env(cfg: ExperimentConfig, auto_reset: bool = True) -> envs.Env:
    e = cfg.env
    return envs.make(
        e.name, episode_length=e.episode_length, action_repeat=e.action_repeat, auto_reset=auto_reset, **e.kwargs
    )


def build(cfg: ExperimentConfig) -> tuple[ExperimentConfig, envs.Env, Agent]:
    """Resolves `cfg` for its env (the configurator) and builds the env and the agent of `agent.name`."""
    make_agent = family.factory(cfg.agent.name)  # a family with its own loop has no agent to build
    env = make_env(cfg)
    goal = envs.is_goal_conditioned(env)
    task = Task(goal, env.action_size, int(env.episode_length), envs.action_repeat(env))
    cfg = resolve(cfg, task)
    d = cfg.distributed
    distributed.check_divisible(cfg, d.data if d.data is not None else jax.device_count() // d.model)
    obs_shape = (env.observation_size,) if isinstance(env.observation_size, int) else tuple(env.observation_size)
    return cfg, env, make_agent(cfg, Spec(obs_shape, env.action_size, goal))


def _check_replay(cfg: ExperimentConfig, env: envs.Env) -> None:
    """The replay's memory against `data.max_replay_mb`, before anything is allocated."""
    obs = jax.eval_shape(env.reset, jax.random.key(0)).obs
    scalar = np.zeros((), np.float32)
    example = envs.Trajectory(
        obs=np.zeros(obs.shape, obs.dtype),
        action=np.zeros(env.action_size, np.float32),
        reward=scalar,
        done=scalar,
        truncated=scalar,
        next_obs=np.zeros(obs.shape, obs.dtype),
    )
    d = cfg.data
    try:
        replay.check_capacity(example, d.num_envs, d.steps_per_env, int(d.max_replay_mb * replay.MB))
    except ValueError as err:
        raise configlib.ConfigError(str(err), "data.max_replay_mb") from None


class Training(NamedTuple):
    """What an offline checkpoint holds: the agent state, the replay it samples from, updates done."""

    agent: Any
    replay: replay.ReplayState
    updates: jax.Array


def _collect(cfg: ExperimentConfig, env: envs.Env, key: jax.Array) -> replay.ReplayState:
    """The offline exploration data, from `env` or, with `data.env_kwargs`, the env they make."""
    d = cfg.data
    if d.env_kwargs:
        explore = dataclasses.replace(cfg.env, kwargs={**cfg.env.kwargs, **d.env_kwargs})
        env = make_env(dataclasses.replace(cfg, env=explore))
    return to_replay(collect(env, key, d.num_envs, d.steps_per_env, d.smoothing))


def _keys(cfg: ExperimentConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(data, init, train) keys of a run: everything random derives from `cfg.seed`."""
    k_data, k_init, k_train = jax.random.split(jax.random.key(cfg.seed), 3)
    return k_data, k_init, k_train


def offline_target(cfg: ExperimentConfig, env: envs.Env, agent: Agent) -> Training:
    """The abstract offline checkpoint of a run (shapes and dtypes; nothing is collected)."""
    k_data, k_init, _ = _keys(cfg)
    return jax.eval_shape(
        lambda kd, ki: Training(agent.init(ki, 1), _collect(cfg, env, kd), jnp.zeros((), jnp.int32)), k_data, k_init
    )


def online_target(cfg: ExperimentConfig, env: envs.Env, agent: Agent) -> online.Online:
    s = online.settings(cfg, envs.action_repeat(env))
    return jax.eval_shape(lambda k: online.init(agent, env, s, k), _keys(cfg)[1])


def _start(cfg, env, agent, run_dir: Path, progress: Progress) -> Training:
    """A fresh start (collect the data, init the agent) or the newest checkpoint of `run_dir`."""
    saved = resume.restore_run(run_dir, offline_target(cfg, env, agent), progress, "updates", agent, cfg.env.name)
    if saved is not None:
        return saved
    k_data, k_init, _ = _keys(cfg)
    t0 = time.perf_counter()
    with progress.phase("collect"):
        buffer = jax.block_until_ready(jax.jit(lambda k: _collect(cfg, env, k))(k_data))
    strict = cfg.train.strict_finite or getattr(env, "check_finite", False)
    buffer, nonfinite = check_collected(buffer, cfg.env.name, k_data, strict)  # zeroes NaN/inf unless strict
    env_steps = cfg.data.num_envs * cfg.data.steps_per_env
    progress.say(f"collect: {env_steps} env steps in {time.perf_counter() - t0:.1f} s")
    progress.log({"phase": "collect", "env_steps": env_steps, **nonfinite})
    state = agent.prepare(agent.init(k_init, 1), buffer)
    return Training(state, buffer, jnp.zeros((), jnp.int32))


def _say_metrics(metrics: dict) -> str:
    shown = [
        ("pred_loss", "pred", 4),
        ("z_std", "z_std", 2),
        ("z_rank", "rank", 1),
        ("critic_loss", "critic", 4),
        ("reward_loss", "reward", 4),
        ("value_loss", "value", 4),
        ("q_mean", "q", 2),
    ]
    return " ".join(f"{label} {metrics[k]:.{digits}f}" for k, label, digits in shown if k in metrics)


def train_model(
    cfg: ExperimentConfig,
    env: envs.Env,
    agent: Agent,
    run_dir: Path,
    progress: Progress,
    max_chunks: int | None = None,
    stop: StopRequests | None = None,
) -> Training:
    """Collects the offline data (or resumes from `run_dir/checkpoints`) and trains.

    Chunk `i` always uses the key `fold_in(k_train, i)`, so a resumed run continues exactly
    as if it had never stopped. Checkpoints every `train.checkpoint_every` updates and at the
    end (written in the background while training goes on). `max_chunks` stops after that many
    chunks in this call (a time-sliced job, saved where it stops); a request on `stop` after the
    chunk in flight.
    """
    t, stop = cfg.train, stop or StopRequests()
    mesh = distributed.make_mesh(cfg.distributed)
    training = _start(cfg, env, agent, run_dir, progress)
    placement = distributed.training_shardings(training, mesh)
    training = distributed.place(training, placement)
    state, buffer = training.agent, training.replay
    chunk = make_train_chunk(agent, t.chunk, placement.agent)
    num_chunks = t.updates // t.chunk
    first = int(training.updates) // t.chunk
    last = num_chunks if max_chunks is None else min(num_chunks, first + max_chunks)
    k_train = _keys(cfg)[2]
    meta = resume.metadata(cfg, agent)
    with resume.writer(run_dir) as writer:
        for i in range(first, last):
            with progress.phase("compile and first chunk", report=True) if i == first else contextlib.nullcontext():
                state, metrics = chunk(state, buffer, jax.random.fold_in(k_train, i))
                metrics = {k: float(v) for k, v in metrics.items()}
            done = (i + 1) * t.chunk
            progress.log({"phase": "train", "updates": done, **metrics})  # before the save: see ami.progress
            steps = f"updates {done - t.chunk}-{done}"
            key = jax.random.fold_in(k_train, i)
            check_chunk(metrics, cfg.env.name, t.strict_finite, steps=steps, index=i, key=key)
            progress.advance("train", done, t.updates, "updates", _say_metrics(metrics))
            training = Training(state, buffer, jnp.asarray(done, jnp.int32))
            save = done % t.checkpoint_every == 0 or i + 1 == last  # the end of this call too
            if save:
                writer.save(done, training, meta)
            resume.stop_if_requested(stop, writer, save, done, training, meta, progress)
    return Training(state, buffer, jnp.asarray(last * t.chunk, jnp.int32))


def train_online(
    cfg: ExperimentConfig,
    env: envs.Env,
    agent: Agent,
    run_dir: Path,
    progress: Progress,
    max_chunks: int | None = None,
    stop: StopRequests | None = None,
) -> tuple[online.Online, dict | None]:
    """Online learning (`ami.online`) for `online.env_steps`, evaluating every `online.eval_every`
    env steps on the fixed evaluation episodes and checkpointing every `online.checkpoint_every`
    (and at the end, in the background); a run directory with checkpoints is resumed from the
    newest one. A request on `stop` saves after the chunk in flight and raises `PreemptedError`.

    Returns the loop's state and the learned controller's evaluation after the last chunk when
    this call ran it (the run's final evaluation of that controller), else None."""
    o, repeat, stop = cfg.online, envs.action_repeat(env), stop or StopRequests()
    s = online.settings(cfg, repeat)
    per_chunk = s.chunk * s.num_envs * repeat
    num_chunks = -(-o.env_steps // per_chunk)
    _, k_init, k_train = _keys(cfg)
    target = online_target(cfg, env, agent)
    placement = distributed.online_shardings(target, distributed.make_mesh(cfg.distributed))
    state = resume.restore_run(run_dir, target, progress, "env_steps", agent, cfg.env.name)
    if state is None:
        state = jax.jit(lambda k: online.init(agent, env, s, k), out_shardings=placement)(k_init)
    state = distributed.place(state, placement)
    chunk = online.make_chunk(agent, env, s, placement)
    evaluator = make_evaluator(
        agent,
        make_env(cfg, auto_reset=False),
        cfg.eval.episodes,
        cfg.env.episode_length,
        ("learned",),
        cfg.eval.success,
    )
    first = int(state.env_steps) // per_chunk
    last = num_chunks if max_chunks is None else min(num_chunks, first + max_chunks)
    t0, final, meta = time.perf_counter(), None, resume.metadata(cfg, agent)
    with resume.writer(run_dir) as writer:
        for i in range(first, last):
            with progress.phase("compile and first chunk", report=True) if i == first else contextlib.nullcontext():
                state, stats = chunk(state, jax.random.fold_in(k_train, i))
                jax.block_until_ready(stats)
            strict, check_env = cfg.train.strict_finite, getattr(env, "check_finite", False)
            key = jax.random.fold_in(k_train, i)
            online.check_chunk(stats, cfg.env.name, s, i, key, strict=strict, check_env=check_env)
            steps = (i + 1) * per_chunk
            record = {
                "phase": "online",
                "env_steps": steps,
                "updates": int(state.updates),
                **{k: float(v) for k, v in stats["metrics"].items()},
            }  # waits for the chunk
            elapsed = time.perf_counter() - t0
            count = int(stats["return_count"])
            if count:
                record["train_return"] = float(stats["return_sum"]) / count
            progress.log(record)
            shown = (f"return {record['train_return']:.1f} " if count else "") + _say_metrics(record)
            progress.advance("online", min(steps, o.env_steps), o.env_steps, "env steps", shown)
            if _crossed(steps, per_chunk, o.eval_every) or i + 1 == num_chunks:
                with progress.phase("evaluate"):
                    result = evaluator(state.agent, jax.random.key(cfg.eval.seed))["learned"]
                progress.log({"phase": "eval", "env_steps": steps, "wall_time_train_s": round(elapsed, 1), **result})
                progress.say(f"eval: {steps} env steps: return {result['return']:.1f} +- {result['return_std']:.1f}")
                final = result if i + 1 == num_chunks else None
            save = _crossed(steps, per_chunk, o.checkpoint_every) or i + 1 == last  # the end of this call too
            if save:
                writer.save(steps, state, meta)
            resume.stop_if_requested(stop, writer, save, steps, state, meta, progress)
    return state, final


def _crossed(steps: int, per_chunk: int, every: int) -> bool:
    """Whether the chunk that ended at `steps` passed a multiple of `every`."""
    return steps // every > (steps - per_chunk) // every


def evaluate_run(cfg: ExperimentConfig, agent: Agent, state: Any, controllers=CONTROLLERS) -> dict:
    """Every controller on `cfg.eval.episodes` batched episodes from the fixed eval seed."""
    eval_env = make_env(cfg, auto_reset=False)
    e = cfg.eval
    return evaluate(
        agent, state, eval_env, jax.random.key(e.seed), e.episodes, cfg.env.episode_length, controllers, e.success
    )


def summarize(results: dict, env_steps: int, wall_time: float, updates: int, goal_task: bool = True) -> dict:
    """`summary.json`: the headline number (`success_rate` on goal tasks, `mean_return` on reward
    tasks) of the learned controller, the same number of every other controller on the same
    episodes (`random_return`, `true_dynamics_success_rate`, ...), and the run's counters."""
    metric, suffix = ("success_rate", "success_rate") if goal_task else ("return", "return")
    summary = {
        ("success_rate" if goal_task else "mean_return"): results["learned"][metric],
        "env_steps": env_steps,
        "wall_time_s": round(wall_time, 1),
        "updates": updates,
    }
    for name, r in results.items():
        if name != "learned":
            summary[f"{name}_{suffix}"] = r[metric]
    summary["controllers"] = results
    return summary


def train(cfg: ExperimentConfig, run_dir: str | Path, quiet: bool = False, max_chunks: int | None = None) -> dict:
    """`ami train`: the whole experiment; returns the summary written to `run_dir/summary.json`.

    Goal tasks learn offline (collect, then train), reward tasks online (`online.*`); either
    way a run directory that already holds checkpoints of the same config is resumed from the
    newest one (a killed run continues where it stopped, bit for bit). With `max_chunks`, at
    most that many chunks run in this call; if training is then unfinished the summary is
    `{"status": "unfinished", ...}` and nothing is evaluated. SIGTERM or Ctrl-C during training
    saves after the chunk in flight and raises `ami.preemption.PreemptedError`.
    """
    own_loop = family.trainer(cfg.agent.name)
    if own_loop is not None:
        return own_loop(cfg, Path(run_dir), quiet)
    start = time.perf_counter()
    distributed.initialize(cfg.distributed)
    cfg, env, agent = build(cfg)
    _check_replay(cfg, env)
    run_dir = Path(run_dir)
    resume.check_same_run(cfg, run_dir)
    resume.check_writable(run_dir)  # before anything trains
    writer = distributed.is_writer()  # only process 0 writes logs, config and summary
    run_dir.mkdir(parents=True, exist_ok=True)
    if writer:
        configlib.dump(cfg, run_dir / "config.yaml")
    progress = Progress(run_dir, quiet or not writer, write=writer, log_cfg=cfg.log, config=configlib.to_dict(cfg))
    with progress, jax.set_mesh(distributed.make_mesh(cfg.distributed)), StopRequests() as stop:
        return _train_and_evaluate(cfg, env, agent, run_dir, progress, max_chunks, stop, start)


def _train_and_evaluate(cfg, env, agent, run_dir: Path, progress: Progress, max_chunks, stop, start: float) -> dict:
    if cfg.online.enabled:
        loop, final = train_online(cfg, env, agent, run_dir, progress, max_chunks, stop)
        state, env_steps, updates = loop.agent, int(loop.env_steps), int(loop.updates)
        if env_steps < cfg.online.env_steps:  # the last chunk ends at or past env_steps
            return {"status": "unfinished", "env_steps": env_steps}
    else:
        final = None
        training = train_model(cfg, env, agent, run_dir, progress, max_chunks, stop)
        state, updates = training.agent, int(training.updates)
        env_steps = cfg.data.num_envs * cfg.data.steps_per_env
        if updates < cfg.train.updates:
            return {"status": "unfinished", "updates": updates}
    t0 = time.perf_counter()
    controllers = cfg.eval.controllers
    # the learned controller's last online evaluation ran on these same episodes from the same key
    reuse = {"learned": final} if final is not None and "learned" in controllers else {}
    with progress.phase("evaluate"):
        rest = evaluate_run(cfg, agent, state, tuple(c for c in controllers if c not in reuse))
    results = {c: reuse.get(c, rest.get(c)) for c in controllers}
    headline = "success_rate" if agent.spec.goal_conditioned else "return"
    progress.say(
        f"evaluate: {cfg.eval.episodes} episodes x {len(controllers)} controllers in "
        f"{time.perf_counter() - t0:.1f} s: " + ", ".join(f"{k} {v[headline]:.3f}" for k, v in results.items())
    )
    summary = summarize(results, env_steps, time.perf_counter() - start, updates, agent.spec.goal_conditioned)
    if distributed.is_writer():
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    progress.log({"phase": "summary", **{k: v for k, v in summary.items() if k != "controllers"}})
    return summary
