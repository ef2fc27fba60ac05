"""Runs that stop: `metrics.jsonl` rewound to the checkpoint, SIGTERM saving and exiting 0, and
real `kill -9`s of `ami train` (before the first save, just after one, during an asynchronous
save) resumed by the same command to the same parameters, bit for bit, with each row once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from ami import checkpoint
from ami.preemption import StopRequests
from ami.progress import Progress

# ----- metrics.jsonl agrees with the checkpoint -----


def write_rows(path: Path, rows: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rewind_keeps_rows_up_to_the_checkpoint_and_the_events(tmp_path):
    rows = [
        {"wall_time_s": 1.0, "phase": "online", "env_steps": 200},
        {"wall_time_s": 2.0, "phase": "online", "env_steps": 400},
        {"wall_time_s": 2.5, "phase": "eval", "env_steps": 400},
        {"wall_time_s": 3.0, "phase": "resume", "env_steps": 400},
        {"wall_time_s": 4.0, "phase": "online", "env_steps": 600},
        {"wall_time_s": 5.0, "phase": "preempted", "env_steps": 600},
        {"wall_time_s": 6.0, "phase": "summary", "env_steps": 400},
    ]
    write_rows(tmp_path / "metrics.jsonl", rows, tail='{"wall_time_s": 7.0, "pha')  # cut off mid-write
    progress = Progress(tmp_path, quiet=True)
    assert progress.rewind("env_steps", 400) == 3  # the 600 row, the summary, the cut line
    assert read_rows(tmp_path / "metrics.jsonl") == [rows[i] for i in (0, 1, 2, 3, 5)]
    progress.log({"phase": "online", "env_steps": 600})
    assert read_rows(tmp_path / "metrics.jsonl")[-1]["wall_time_s"] >= 5.0  # wall-clock continues
    progress.reset()
    assert not (tmp_path / "metrics.jsonl").exists()
    assert Progress(tmp_path / "nothing", quiet=True).rewind("updates", 3) == 0


def test_stop_requests_turn_sigterm_into_a_flag_and_restore_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequests() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before


# ----- kill -9 and SIGTERM of a real `ami train` -----

CONFIG = textwrap.dedent(
    """
    env: {name: pendulum}
    data: {num_envs: 2}
    perception: {hidden: [32], activation: elu}
    world_model: {hidden: [32, 32], reward_hidden: [32], prediction_horizon: 3, activation: elu}
    value: {hidden: [32, 32]}
    policy: {hidden: [32, 32]}
    train: {batch_size: 32}
    online: {env_steps: 800, seed_steps: 200, chunk: 100, checkpoint_every: 400, eval_every: 400}
    eval: {budget: small, episodes: 2}
    log: {tensorboard: false, report: false}
    """
)

# Runs `ami train` and stops itself at one point of the run: SIGKILL (nothing runs after it) or SIGTERM.
DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from ami import checkpoint, progress
    point = os.environ["AMI_TEST_STOP"]
    kill = lambda sig: os.kill(os.getpid(), sig)
    log, save = progress.Progress.log, checkpoint.Writer.save

    def log_then_stop(self, record):
        log(self, record)
        if record.get("phase") == "online" and record["env_steps"] == 200:
            kill(signal.SIGKILL if point == "before-first-save" else signal.SIGTERM)

    def save_then_stop(self, step, *args, **kwargs):
        out = save(self, step, *args, **kwargs)
        if point == "after-a-save":
            self.wait()
            kill(signal.SIGKILL)
        if point == "during-async-save" and step == 800:
            kill(signal.SIGKILL)  # the write of step 800 is in flight
        return out

    if point in ("before-first-save", "sigterm"):
        progress.Progress.log = log_then_stop
    elif point != "none":
        checkpoint.Writer.save = save_then_stop
    from ami.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def ami_train(tmp_path: Path, run_dir: Path, stop: str) -> subprocess.CompletedProcess:
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    env = {**os.environ, "AMI_TEST_STOP": stop, "JAX_PLATFORMS": "cpu"}
    cache = jax.config.jax_compilation_cache_dir
    if cache:  # the test session's compilation cache: the runs compile the same programs
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    command = [sys.executable, "-c", DRIVER, "train", str(tmp_path / "cfg.yaml"), "--run-dir", str(run_dir)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def leaves(step_dir: Path) -> list[np.ndarray]:
    state = checkpoint.restore(step_dir.parent, int(step_dir.name))[0]
    typed = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)  # noqa: E731
    return [np.asarray(jax.random.key_data(x) if typed(x) else x) for x in jax.tree.leaves(state)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("whole")
    done = ami_train(tmp, tmp / "run", "none")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before-first-save", "after-a-save", "during-async-save", "sigterm"])
def test_a_stopped_run_continues_bit_for_bit(tmp_path, uninterrupted, point):
    run_dir = tmp_path / "run"
    stopped = ami_train(tmp_path, run_dir, point)
    steps = checkpoint.all_steps(run_dir / "checkpoints")
    if point == "sigterm":
        assert stopped.returncode == 0, stopped.stderr[-3000:]
        assert (
            "stopped by SIGTERM: saved at env steps 200" in stopped.stdout
            and "continue with: ami train" in stopped.stdout
        )
        assert steps == [200]
    else:
        assert stopped.returncode == -signal.SIGKILL, stopped.stderr[-3000:]
        assert steps == {"before-first-save": [], "after-a-save": [400], "during-async-save": [400]}[point]
    again = ami_train(tmp_path, run_dir, "none")
    assert again.returncode == 0, again.stderr[-3000:]
    for got, want in zip(
        leaves(run_dir / "checkpoints" / "800"), leaves(uninterrupted / "checkpoints" / "800"), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    rows, reference = read_rows(run_dir / "metrics.jsonl"), read_rows(uninterrupted / "metrics.jsonl")

    def progress(rs):
        return [(r["phase"], r.get("env_steps")) for r in rs if r["phase"] in ("online", "eval", "summary")]

    def same(rs):
        return [{k: v for k, v in r.items() if not k.startswith("wall_time")} for r in rs if r["phase"] == "eval"]

    assert progress(rows) == progress(reference)  # every row once, none missing
    assert same(rows) == same(reference)
    assert (
        json.loads((run_dir / "summary.json").read_text())["mean_return"]
        == json.loads((uninterrupted / "summary.json").read_text())["mean_return"]
    )


# ----- a damaged newest checkpoint: the run falls back, or stops when nothing is good -----


def test_a_run_with_a_damaged_newest_checkpoint_resumes_from_the_one_before(tmp_path, caplog):
    import logging

    from ami import run
    from ami.config import load_experiment

    (tmp_path / "cfg.yaml").write_text(CONFIG)
    cfg = load_experiment(tmp_path / "cfg.yaml", ["online.checkpoint_every=200"])
    whole = run.train(cfg, tmp_path / "run", quiet=True)
    assert checkpoint.all_steps(tmp_path / "run" / "checkpoints") == [600, 800]
    saved = leaves(tmp_path / "run" / "checkpoints" / "800")
    data = max(
        (f for f in (tmp_path / "run" / "checkpoints" / "800" / "state").rglob("*") if f.is_file()),
        key=lambda f: f.stat().st_size,
    )
    flipped = bytearray(data.read_bytes())
    flipped[len(flipped) // 2] ^= 0x04
    data.write_bytes(bytes(flipped))
    with caplog.at_level(logging.WARNING, logger="ami.checkpoint"):
        again = run.train(cfg, tmp_path / "run", quiet=True)  # trains 600 -> 800 again
    assert "step 800" in caplog.text and "restored step 600" in caplog.text
    assert (tmp_path / "run" / "checkpoints" / "800.damaged").is_dir()  # kept for inspection, never read
    assert again["mean_return"] == whole["mean_return"]
    for got, want in zip(leaves(tmp_path / "run" / "checkpoints" / "800"), saved, strict=True):
        np.testing.assert_array_equal(got, want)
    for step in (600, 800):  # nothing good left: a clear error, never a silent fresh start
        (tmp_path / "run" / "checkpoints" / str(step) / "metadata" / "metadata").write_text("{")
    with pytest.raises(checkpoint.CheckpointError, match="restores cleanly; tried steps"):
        run.train(cfg, tmp_path / "run", quiet=True)
