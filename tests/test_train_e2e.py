"""`ami train` and `ami eval` end to end, through `ami.cli.main`, on a tiny budget: the run
directory's contents, re-evaluation from the checkpoint, and a user's own environment given
as `module:factory`."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from ami import cli

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
TINY = [
    "perception.hidden=[32,32]",
    "world_model.hidden=[32,32]",
    "critic.hidden=[32,32]",
    "train.batch_size=32",
    "critic.batch_size=32",
    "data.num_envs=32",
    "data.steps_per_env=100",
    "train.updates=300",
    "train.chunk=100",
    "eval.episodes=16",
    "eval.budget=small",
    "planner.iterations=5",
    "planner.restarts=2",
]
SUMMARY_KEYS = {"success_rate", "env_steps", "wall_time_s", "true_dynamics_success_rate", "random_success_rate"}


def last_json(text: str) -> dict:
    """The JSON object that ends `text` (the commands print progress lines before it)."""
    return json.loads(text[text.rindex("\n{") + 1 :] if not text.startswith("{") else text)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished tiny `ami train` run on Two-Rooms: `(run_dir, stdout)` (module fixtures cannot use capsys)."""
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["train", str(QUICKSTART), *TINY, "--run-dir", str(run_dir)])
    assert code == 0, out.getvalue()
    return run_dir, out.getvalue()


def test_train_writes_the_run_directory(trained_run):
    run_dir, stdout = trained_run
    assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoints"} <= {p.name for p in run_dir.iterdir()}
    assert f"ami train: report {run_dir / 'report.html'}" in stdout  # log.report defaults to true
    assert (run_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["planner"]["horizon"] == 16 and config["planner"]["replan_every"] == 4  # resolved
    assert config["planner"]["iterations"] == 5 and config["train"]["updates"] == 300  # as overridden
    lines = read_metrics(run_dir)
    train_lines = [line for line in lines if line["phase"] == "train"]
    assert [line["updates"] for line in train_lines] == [100, 200, 300]
    for line in train_lines:
        assert {"pred_loss", "z_std", "z_rank", "critic_loss", "wall_time_s"} <= set(line)
    assert train_lines[-1]["pred_loss"] < train_lines[0]["pred_loss"]
    assert lines[0]["phase"] == "collect" and lines[0]["env_steps"] == 32 * 100
    assert lines[-1]["phase"] == "summary"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["env_steps"] == 3200 and summary["updates"] == 300 and summary["wall_time_s"] > 0
    for key in ("success_rate", "true_dynamics_success_rate", "random_success_rate"):
        assert 0.0 <= summary[key] <= 1.0
        assert summary[key] * 16 == round(summary[key] * 16)  # a count of 16 episodes
    assert summary["success_rate"] == summary["controllers"]["learned"]["success_rate"]
    printed = last_json(stdout)
    assert printed == {k: v for k, v in summary.items() if k != "controllers"}
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["300"]


def test_eval_reproduces_the_trained_success_rate(trained_run, capsys):
    run_dir, _ = trained_run
    assert cli.main(["eval", str(run_dir)]) == 0
    out = last_json(capsys.readouterr().out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert out["success_rate"] == summary["success_rate"]
    assert out["trained_success_rate"] == summary["success_rate"]
    assert out["controllers"]["learned"] == summary["controllers"]["learned"]


def test_eval_replans_a_finished_run_with_another_planner(trained_run, capsys):
    run_dir, _ = trained_run
    assert cli.main(["eval", str(run_dir), "planner.name=cem", "eval.episodes=4"]) == 0
    out = last_json(capsys.readouterr().out)
    assert set(out["controllers"]) == {"learned"}
    assert 0.0 <= out["success_rate"] <= 1.0
    assert cli.main(["eval", str(run_dir), "world_model.hidden=[8]"]) == 2
    assert "world_model.hidden: a finished run is re-planned with" in capsys.readouterr().err


USER_ENV = textwrap.dedent(
    '''
    """A user's own goal-conditioned env: a 2-D point that walks to a goal."""
    import jax, jax.numpy as jnp
    from brax.envs.base import Env, State

    class Walker2D(Env):
        goal_conditioned = True

        def __init__(self, speed=0.1):
            self.speed = speed

        def reset(self, rng):
            pos, goal = jax.random.uniform(rng, (2, 2), minval=-1.0, maxval=1.0)
            return self._state(pos, goal)

        def step(self, state, action):
            pos = state.pipeline_state + self.speed * jnp.clip(action, -1, 1)
            return self._state(pos, state.info["goal_obs"])

        def _state(self, pos, goal):
            dist = jnp.linalg.norm(pos - goal)
            return State(pipeline_state=pos, obs=pos, reward=-dist, done=jnp.zeros(()),
                         metrics={"success": (dist < 0.1).astype(jnp.float32), "distance": dist},
                         info={"goal_obs": goal})

        observation_size = 2
        action_size = 2
        backend = "jax"

    def make_env(**kwargs):
        return Walker2D(**kwargs)
    '''
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "walker_user_env.py").write_text(USER_ENV)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "walker_user_env"
    sys.modules.pop("walker_user_env", None)


def test_user_env_trains_and_evaluates_end_to_end(user_module, tmp_path, capsys):
    run_dir = tmp_path / "run"
    overrides = [
        *TINY,
        f"env.name={user_module}:make_env",
        "env.episode_length=30",
        "env.kwargs={speed: 0.15}",
        "critic.enabled=false",
        "eval.controllers=[learned]",
        "train.updates=200",
        "log.report=false",
    ]
    assert cli.main(["train", str(QUICKSTART), *overrides, "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["env"] == {
        "name": f"{user_module}:make_env",
        "episode_length": 30,
        "action_repeat": 1,
        "kwargs": {"speed": 0.15},
    }
    assert config["planner"]["horizon"] == 16  # no critic: clip(30 // 2, 16, 64)
    assert summary["env_steps"] == 3200 and summary["updates"] == 200
    assert set(summary["controllers"]) == {"learned"}
    capsys.readouterr()
    assert cli.main(["eval", str(run_dir)]) == 0
    out = last_json(capsys.readouterr().out)
    assert out["success_rate"] == summary["success_rate"]


def _checkpointed(run_dir: Path):
    from ami import checkpoint

    step = checkpoint.latest_step(run_dir / "checkpoints")
    return step, checkpoint.restore(run_dir / "checkpoints", step)[0]


def test_a_killed_run_resumes_exactly_where_it_stopped(tmp_path):
    """Training in slices (as after a kill) ends bit for bit where an uninterrupted run ends."""
    from ami import configlib, run
    from ami.config import load_experiment

    overrides = [*TINY, "train.checkpoint_every=100", "eval.controllers=[learned]", "eval.episodes=8"]
    cfg = load_experiment(QUICKSTART, overrides)
    whole = run.train(cfg, tmp_path / "whole", quiet=True)
    sliced_dir = tmp_path / "sliced"
    assert run.train(cfg, sliced_dir, quiet=True, max_chunks=2) == {"status": "unfinished", "updates": 200}
    assert sorted(int(p.name) for p in (sliced_dir / "checkpoints").iterdir()) == [100, 200]
    sliced = run.train(cfg, sliced_dir, quiet=True)
    assert sliced["success_rate"] == whole["success_rate"]
    (step_a, saved_a), (step_b, saved_b) = _checkpointed(tmp_path / "whole"), _checkpointed(sliced_dir)
    assert step_a == step_b == 300
    for a, b in zip(jax_leaves(saved_a), jax_leaves(saved_b), strict=True):
        np.testing.assert_array_equal(a, b)
    phases = [line["phase"] for line in read_metrics(sliced_dir)]
    assert phases == ["collect", "train", "train", "resume", "train", "summary"]
    train_a = [line for line in read_metrics(tmp_path / "whole") if line["phase"] == "train"]
    train_b = [line for line in read_metrics(sliced_dir) if line["phase"] == "train"]
    strip = lambda line: {k: v for k, v in line.items() if k != "wall_time_s"}  # noqa: E731
    assert [strip(x) for x in train_a] == [strip(x) for x in train_b]
    other = load_experiment(QUICKSTART, [*overrides, "train.updates=400"])
    with pytest.raises(configlib.ConfigError, match=r"train\.updates: 300 -> 400"):
        run.train(other, sliced_dir, quiet=True)


def jax_leaves(tree):
    import jax

    return [
        np.asarray(jax.random.key_data(x)) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        for x in jax.tree.leaves(tree)
    ]
