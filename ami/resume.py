"""Continuing a run: what a checkpoint says of itself, the checks before a run directory is
resumed, the rewind of its log, and stopping on request.

A checkpoint's metadata holds the resolved config and the env sizes it was made for. Resuming
refuses another config (up to `RESUME_FREE` settings) and other env sizes, naming what differs;
restores the newest readable step (damaged newer steps are set aside, `ami.checkpoint`); and
rewinds `metrics.jsonl` to it (`ami.progress`). `check_writable` refuses, before anything
trains, a run directory whose checkpoints cannot be written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ami import checkpoint, configlib
from ami.agent import Agent
from ami.config import ExperimentConfig
from ami.preemption import PreemptedError, StopRequests
from ami.progress import Progress


def restore_run(
    run_dir: Path, target: Any, progress: Progress, counter: str, agent: Agent, env_name: str
) -> Any | None:
    """The newest readable checkpoint of `run_dir` (None when it has none: a fresh start, and
    the rows of a process killed before its first save are dropped). Rows logged after the
    checkpoint's `counter` (by a process killed later) are dropped."""
    if checkpoint.latest_step(run_dir / "checkpoints") is None:
        progress.reset()
        return None
    _check_spec(run_dir, agent, env_name)
    saved, _ = checkpoint.restore(run_dir / "checkpoints", target=target, fallback=True)
    value = int(getattr(saved, counter))
    for damaged in (step for step in checkpoint.all_steps(run_dir / "checkpoints") if step > value):
        checkpoint.set_aside(run_dir / "checkpoints", damaged)  # the resumed run writes these steps again
    dropped = progress.rewind(counter, value)
    progress.say(f"resume: from {counter.replace('_', ' ')} {value} of {run_dir / 'checkpoints'}")
    progress.log({"phase": "resume", counter: value, "rows_dropped": dropped})
    return saved


def _sizes(agent: Agent) -> dict:
    return {"obs_shape": list(agent.spec.obs_shape), "action_size": agent.spec.action_size}


def metadata(cfg: ExperimentConfig, agent: Agent) -> dict:
    """What a checkpoint says of itself: the resolved config and the env sizes it was made for."""
    return {"config": configlib.to_dict(cfg), "spec": _sizes(agent)}


def _check_spec(run_dir: Path, agent: Agent, env_name: str) -> None:
    """`ConfigError` naming both shapes when the newest checkpoint was made for other env sizes."""
    try:
        saved = checkpoint.read_metadata(run_dir / "checkpoints").get("spec")
    except checkpoint.CheckpointError:
        return  # a damaged newest step: the restore falls back and checks the older one's leaves
    now = _sizes(agent)
    if saved is not None and saved != now:
        raise configlib.ConfigError(
            f"{run_dir} holds checkpoints for observations of shape {tuple(saved['obs_shape'])} and "
            f"{saved['action_size']} actions; env {env_name!r} now gives shape {tuple(now['obs_shape'])} "
            f"and {now['action_size']} actions: pass another --run-dir"
        )


def check_writable(run_dir: Path) -> None:
    """`ConfigError` naming the path when `run_dir/checkpoints` cannot be created or written (a
    path under a regular file, a read-only disk, missing permissions), before anything trains.

    Tested by writing and removing a small file, so it holds for root too (whom permission bits
    do not stop)."""
    target = run_dir / "checkpoints"
    probe = target / f".ami-write-test-{os.getpid()}"
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise configlib.ConfigError(
            f"cannot write checkpoints to {target} ({reason}: {err.filename or target}); pass another --run-dir"
        ) from None


def stop_if_requested(
    stop: StopRequests, writer: checkpoint.Writer, saved: bool, step: int, state, meta, progress
) -> None:
    """After a chunk: when a stop was requested, saves step `step` (unless just saved), waits
    for the write and raises `PreemptedError`."""
    if not stop.requested:
        return
    if not saved:
        writer.save(step, state, meta)
    writer.wait()
    counter = "env_steps" if meta["config"]["online"]["enabled"] else "updates"
    progress.log({"phase": "preempted", counter: step, "signal": stop.signal})
    raise PreemptedError(f"{stop.signal}: saved at {counter.replace('_', ' ')} {step} in {writer.directory}")


def writer(run_dir: Path) -> checkpoint.Writer:
    return checkpoint.Writer(run_dir / "checkpoints", max_to_keep=2, asynchronous=True)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}} -> {"a.b": 1}`."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, sub in tree.items():
        out.update(_flat(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


# Settings a resumed run may change: when and how it is evaluated and checkpointed, whether it
# stops at a non-finite value (`train.strict_finite`), never what it trains on.
RESUME_FREE = ("eval.", "online.eval_every", "online.checkpoint_every", "distributed.", "log.", "train.strict_finite")


def check_same_run(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Raises `ConfigError` when `run_dir` holds checkpoints of a run with another config (up to
    `RESUME_FREE` settings; the planner's resolved search settings are compared, so a budget that
    changes how the agent acts while it learns is caught)."""
    saved_path = run_dir / "config.yaml"
    if checkpoint.latest_step(run_dir / "checkpoints") is None or not saved_path.exists():
        return
    saved = _flat(configlib.to_dict(configlib.load(ExperimentConfig, saved_path)))
    now = _flat(configlib.to_dict(cfg))
    keys = (k for k in saved.keys() | now.keys() if not k.startswith(RESUME_FREE))
    differ = sorted(k for k in keys if saved.get(k) != now.get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differ[:5])
        raise configlib.ConfigError(
            f"{run_dir} holds checkpoints of a run with a different config ({shown}); "
            "resume it with the same config or pass another --run-dir"
        )
