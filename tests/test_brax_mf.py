"""Brax's PPO and SAC through `ami.baselines.brax_mf.train_brax` on the native pendulum: the run
directory, step counting with action repeat, option checks and the random row."""

from __future__ import annotations

import json
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.training.agents.sac.networks import make_sac_networks

import envs
from ami.baselines.brax_mf import ALGORITHMS, EVAL_KEY, accepted_options, schedule, train_brax

ENV, EPISODE, EVAL_EPISODES = "pendulum", 50, 4
# One PPO training step: batch_size * unroll_length * num_minibatches = 320 decisions, 4 updates.
PPO_SMALL = {
    "num_envs": 8,
    "batch_size": 8,
    "num_minibatches": 4,
    "unroll_length": 10,
    "num_updates_per_batch": 1,
    "num_evals": 2,
}
SAC_SMALL = {
    "num_envs": 4,
    "batch_size": 32,
    "min_replay_size": 200,
    "grad_updates_per_step": 1,
    "num_evals": 2,
    "network_factory": partial(make_sac_networks, hidden_layer_sizes=(32, 32)),
}


def _read(run_dir) -> tuple[dict, list[dict]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return summary, rows


def _check_run_dir(run_dir, summary: dict, algorithm: str, requested: int) -> list[dict]:
    written, rows = _read(run_dir)
    assert written == summary
    assert summary["algorithm"] == algorithm
    assert summary["env_steps"] >= requested
    for name in ("mean_return", "random_return"):
        assert math.isfinite(summary[name])
    assert summary["controllers"]["learned"]["return"] == summary["mean_return"]
    assert summary["controllers"]["random"]["return"] == summary["random_return"]
    assert all(math.isfinite(summary["controllers"][c]["return_std"]) for c in ("learned", "random"))
    assert rows[-1]["phase"] == "summary"
    assert rows[-1]["env_steps"] == summary["env_steps"]
    times = [row["wall_time_s"] for row in rows]
    assert times == sorted(times)
    return rows


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ppo")
    summary = train_brax(
        "ppo",
        ENV,
        run_dir,
        env_steps=2000,
        seed=0,
        episode_length=EPISODE,
        action_repeat=1,
        eval_episodes=EVAL_EPISODES,
        options=PPO_SMALL,
        quiet=True,
    )
    return run_dir, summary


def test_ppo_trains_and_writes_the_run_dir(ppo_run):
    run_dir, summary = ppo_run
    rows = _check_run_dir(run_dir, summary, "ppo", 2000)
    # ceil(2000 / 320) = 7 training steps of 320 env steps, 4 updates each.
    assert summary["env_steps"] == 7 * 320
    assert summary["updates"] == 7 * 4
    evals = [row for row in rows if row["phase"] == "eval"]
    assert [row["env_steps"] for row in evals] == [0, 7 * 320]
    assert all(math.isfinite(row["return"]) and math.isfinite(row["return_std"]) for row in evals)
    assert all(row["episode_length"] == EPISODE for row in evals)


def test_sac_trains_and_writes_the_run_dir(tmp_path, ppo_run):
    summary = train_brax(
        "sac",
        ENV,
        tmp_path,
        env_steps=2000,
        seed=0,
        episode_length=EPISODE,
        action_repeat=1,
        eval_episodes=EVAL_EPISODES,
        options=SAC_SMALL,
        quiet=True,
    )
    rows = _check_run_dir(tmp_path, summary, "sac", 2000)
    # A prefill of 200 / 4 = 50 actor steps (200 env steps), then 1800 / 4 = 450 actor steps, one update each.
    assert summary["env_steps"] == 2000
    assert summary["updates"] == 450
    assert [row["env_steps"] for row in rows if row["phase"] == "eval"] == [0, 2000]
    # The random row depends only on the env and the eval key: the same as PPO's.
    assert summary["random_return"] == ppo_run[1]["random_return"]
    assert summary["controllers"]["random"] == ppo_run[1]["controllers"]["random"]


def test_action_repeat_counts_control_steps(tmp_path):
    repeat, episode = 2, 20
    summary = train_brax(
        "ppo",
        ENV,
        tmp_path,
        env_steps=2600,
        seed=1,
        episode_length=episode,
        action_repeat=repeat,
        eval_episodes=EVAL_EPISODES,
        options={**PPO_SMALL, "log_training_metrics": True},
        quiet=True,
    )
    rows = _check_run_dir(tmp_path, summary, "ppo", 2600)
    # A training step is 320 decisions = 640 env steps: ceil(2600 / 640) = 5 of them, 3200 env
    # steps (counting decisions instead would give ceil(2600 / 320) * 320 = 2880).
    assert summary["env_steps"] == 5 * 640
    assert summary["updates"] == 5 * 4
    assert schedule("ppo", {**PPO_SMALL, "num_resets_per_eval": 0}, 2600, repeat) == (3200, 20)
    evals = [row for row in rows if row["phase"] == "eval"]
    assert [row["env_steps"] for row in evals] == [0, 3200]
    assert all(row["episode_length"] == episode for row in evals)  # decisions per evaluation episode
    # Brax's training-episode logger counts decisions; it logs every 640 of them (after training
    # steps 2 and 4), i.e. at 1280 and 2560 env steps; its episodes last 20 decisions = 40 env steps.
    train = [row for row in rows if row["phase"] == "train"]
    assert [row["env_steps"] for row in train] == [1280, 2560]
    assert all(row["episode/length"] == episode * repeat for row in train)


def test_random_row_matches_an_independent_rollout(ppo_run):
    _, summary = ppo_run
    env = envs.make(ENV, episode_length=EPISODE, action_repeat=1, auto_reset=False)
    k_reset, k_run = jax.random.split(jax.random.key(EVAL_KEY))
    states = jax.vmap(env.reset)(jax.random.split(k_reset, EVAL_EPISODES))
    step = jax.jit(jax.vmap(env.step))
    ret, alive = np.zeros(EVAL_EPISODES), np.ones(EVAL_EPISODES)
    for key_t in jax.random.split(k_run, EPISODE):
        action = jax.random.uniform(key_t, (EVAL_EPISODES, env.action_size), minval=-1.0, maxval=1.0)
        states = step(states, action)
        ret += alive * np.asarray(states.reward)
        alive *= np.asarray(states.done) == 0
    random = summary["controllers"]["random"]
    assert random["return"] == pytest.approx(float(np.mean(ret)), rel=1e-5)
    assert random["return_std"] == pytest.approx(float(np.std(ret)), rel=1e-4)
    assert float(jnp.max(states.info[envs.STEPS])) == EPISODE


def _train(tmp_path, algorithm="ppo", options=None):
    return train_brax(
        algorithm,
        ENV,
        tmp_path / "run",
        env_steps=100,
        seed=0,
        episode_length=EPISODE,
        action_repeat=1,
        eval_episodes=2,
        options=options,
        quiet=True,
    )


def test_unknown_option_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match="'num_env'") as err:
        _train(tmp_path, "ppo", {"num_env": 4})
    assert "Did you mean 'num_envs'" in str(err.value)
    assert all(name in str(err.value) for name in accepted_options("ppo"))
    with pytest.raises(ValueError, match="'unroll_length'"):
        _train(tmp_path, "sac", {"unroll_length": 5})  # a PPO option
    with pytest.raises(ValueError, match="'seed' is set by train_brax"):
        _train(tmp_path, "ppo", {"seed": 3})
    assert not (tmp_path / "run").exists()


def test_unknown_algorithm_raises_naming_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="'dqn'") as err:
        _train(tmp_path, "dqn")
    assert all(name in str(err.value) for name in ALGORITHMS)
    assert not (tmp_path / "run").exists()


def test_ami_train_runs_a_brax_agent_from_a_config(tmp_path):
    """`agent.name: sac` through `ami.run.train`: the adapter gets the budget, seed, env settings and
    evaluation episodes of the config and writes the run directory with the resolved config; the
    family has no init / act / update to build."""
    from ami import run
    from ami.config import load_experiment

    options = {k: v for k, v in SAC_SMALL.items() if k != "network_factory"}
    cfg = load_experiment(
        {"env": {"name": ENV, "episode_length": EPISODE}, "agent": {"name": "sac"}, "brax": {"options": options}},
        ["online.env_steps=800", f"eval.episodes={EVAL_EPISODES}", "seed=3"],
    )
    summary = run.train(cfg, tmp_path / "sac", quiet=True)
    assert (summary["algorithm"], summary["seed"], summary["episode_length"]) == ("sac", 3, EPISODE)
    assert summary["env_steps"] >= 800 and summary["eval_episodes"] == EVAL_EPISODES
    assert load_experiment(tmp_path / "sac" / "config.yaml") == cfg
    with pytest.raises(ValueError, match="trains with its own loop"):
        run.build(cfg)
