"""Experiment configs (`ami.config`) and the `ami train` command line: bad configs fail before
anything compiles, with a message that names the key; the shipped experiment loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ami import cli, configlib, run
from ami.config import ConfigError, ExperimentConfig, load_experiment

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def test_quickstart_loads_with_its_values():
    cfg = load_experiment(QUICKSTART)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.env.name == "two_rooms"
    assert (cfg.data.num_envs, cfg.data.steps_per_env, cfg.data.smoothing) == (256, 400, 0.8)
    assert cfg.perception.hidden == (128, 128) and cfg.world_model.anti_collapse == "vicreg"
    assert (cfg.train.updates, cfg.train.batch_size, cfg.train.chunk) == (16000, 128, 500)
    assert cfg.planner.horizon is None  # left to the configurator
    assert configlib.from_dict(ExperimentConfig, configlib.to_dict(cfg)) == cfg


def test_overrides_are_applied_and_typed():
    cfg = load_experiment(QUICKSTART, ["planner.horizon=4", "perception.hidden=[8, 8]", "train.learning_rate=1e-3"])
    assert cfg.planner.horizon == 4 and cfg.perception.hidden == (8, 8) and cfg.train.learning_rate == 0.001


@pytest.mark.parametrize(
    ("override", "key", "pattern"),
    [
        ("planner.horizn=4", "planner.horizn", r"unknown key in planner; did you mean 'horizon'\?"),
        ("plannr.horizon=4", "plannr", r"unknown key; did you mean 'planner'\?"),
        ("train.updates=abc", "train.updates", r"expected int, got 'abc' \(str\)"),
        ("train.updates=1.5", "train.updates", r"expected int, got 1\.5 \(float\)"),
        ("critic.enabled=1", "critic.enabled", r"expected bool, got 1 \(int\)"),
        ("critic.gamma=1.5", "critic.gamma", r"must be in \(0, 1\)"),
        ("data.smoothing=1.0", "data.smoothing", r"must be in \[0, 1\)"),
        ("planner.horizon=0", "planner.horizon", r"must be >= 1"),
        ("cost.visit_fade=-1.0", "cost.visit_fade", r"must be >= 0 \(steps to go; 0: off\)"),
        ("cost.visit_fade_power=0.0", "cost.visit_fade_power", "must be > 0"),
        ("hierarchy.stride=1", "hierarchy.stride", "must be >= 2"),
        ("hierarchy.planner=bogus", "hierarchy.planner", "unknown planner"),
        ("hierarchy.critic_objective=mc", "hierarchy.critic_objective", "must be 'distance' or 'td'"),
        ("perception.hidden=[32,0]", "perception.hidden", r"widths must be >= 1"),
        (
            "world_model.anti_collapse=vicrg",
            "world_model.anti_collapse",
            r"expected one of 'vicreg', 'sigreg', 'ema', 'none', got 'vicrg' \(str\); did you mean 'vicreg'\?",
        ),
        ("eval.budget=huge", "eval.budget", r"expected one of 'small', 'medium', 'large'"),
        ("planner.name=gradeint", "planner.name", r"unknown planner 'gradeint'; known planners: .*gradient"),
        ("planner.population=64", "planner.population", r"planner 'gradient' has no option 'population'"),
        ("planner.options={iterations: 3}", "planner.options", r"set iterations as planner.<name>"),
        ("planner.options={grad_clp: 1.0}", "planner.options", r"planner 'gradient' has no option\(s\) \['grad_clp'\]"),
    ],
)
def test_bad_values_name_the_key(override, key, pattern):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: {pattern}") as info:
        load_experiment(QUICKSTART, [override])
    assert info.value.key == key


def test_malformed_override():
    with pytest.raises(ConfigError, match=r"malformed override 'planner.horizon': expected dotted.key=VALUE"):
        load_experiment(QUICKSTART, ["planner.horizon"])


def test_error_notes_say_where_the_config_came_from():
    with pytest.raises(ConfigError) as info:
        load_experiment(QUICKSTART, ["critic.gamma=1.5"])
    assert any("quickstart.yaml" in note and "critic.gamma=1.5" in note for note in info.value.__notes__)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("planner:\n  horizon: 4\n  horizon: 5\n")
    with pytest.raises(ConfigError, match="duplicate key 'horizon'"):
        load_experiment(bad)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg, _, _ = run.build(load_experiment(QUICKSTART, ["critic.enabled=false"]))
    path = configlib.dump(cfg, tmp_path / "config.yaml")
    assert load_experiment(path) == cfg


def test_a_short_online_run_resolves_to_a_config_that_loads_again(tmp_path):
    # 600 env steps over 8 envs: data.steps_per_env = 75, under the goal critic's default offset,
    # which a reward task does not use (`ami eval` of such a run once failed on its config.yaml)
    overrides = ["env.name=pendulum", "data.num_envs=8", "online.env_steps=600", "online.seed_steps=200"]
    cfg, _, _ = run.build(load_experiment({}, overrides))
    assert cfg.data.steps_per_env == 75 and cfg.critic.max_goal_offset > 75
    assert load_experiment(configlib.dump(cfg, tmp_path / "config.yaml")) == cfg


# ----- errors found when building (env and modules) -----


def test_unknown_env_lists_known_names():
    cfg = load_experiment(QUICKSTART, ["env.name=two_room"])
    with pytest.raises(ValueError, match=r"unknown env 'two_room'\. Did you mean 'two_rooms'\?.*Known: .*point_mass"):
        run.build(cfg)


def test_env_without_goals_builds_a_reward_task_agent():
    """A reward env (no goal) gets the reward-task settings of the configurator, not an error."""
    cfg, _, agent = run.build(load_experiment(QUICKSTART, ["env.name=pendulum"]))
    assert cfg.online.enabled and cfg.policy.enabled and not agent.spec.goal_conditioned
    assert (cfg.cost.reward_weight, cfg.cost.value_weight, cfg.cost.goal_weight, cfg.cost.critic_weight) == (1, 1, 0, 0)
    assert cfg.eval.controllers == ("learned", "random")
    assert agent.modules.critic is None and agent.modules.value is not None and agent.modules.reward is not None


def test_a_reward_task_refuses_goal_terms_and_the_twin_by_name():
    with pytest.raises(ConfigError, match=r"^cost.goal_weight: .*no goal"):
        run.build(load_experiment(QUICKSTART, ["env.name=pendulum", "cost.goal_weight=1.0"]))
    with pytest.raises(ConfigError, match=r"^eval.controllers: .*twin"):
        run.build(load_experiment(QUICKSTART, ["env.name=pendulum", "eval.controllers=[learned,true_dynamics]"]))


@pytest.mark.parametrize("key", ["perception.activation", "world_model.activation"])
def test_unknown_activation_fails_at_load_naming_the_key(key):
    with pytest.raises(ConfigError, match=rf"^{key}: .*relux"):
        load_experiment(QUICKSTART, [f"{key}=relux"])


# ----- the command line -----


def test_cli_train_with_a_bad_key_exits_2_before_creating_anything(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr(run, "train", lambda *args, **kwargs: started.append(args))
    run_dir = tmp_path / "run"
    code = cli.main(["train", str(QUICKSTART), "planner.horizn=4", "--run-dir", str(run_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert "ami: error: planner.horizn: unknown key in planner; did you mean 'horizon'?" in err
    assert started == [] and not run_dir.exists()


def test_cli_train_with_an_unknown_env_exits_2_without_writing_a_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = cli.main(["train", str(QUICKSTART), "env.name=two_room", "--run-dir", str(run_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown env 'two_room'" in err and "two_rooms" in err
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "config.yaml").exists()


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train"])
    assert info.value.code == 2
    assert "config" in capsys.readouterr().err


def test_cli_takes_overrides_before_or_after_the_run_dir(tmp_path, capsys):
    from ami import cli

    assert cli.main(["train", str(QUICKSTART), "--run-dir", str(tmp_path / "r"), "train.updates=abc"]) == 2
    assert "train.updates: expected int, got 'abc'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", str(QUICKSTART), "--run-dir", str(tmp_path / "r"), "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(QUICKSTART.parent.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_experiment_loads(path):
    """Each experiment file validates (sections, keys, ranges) and names a known agent family."""
    from ami import family

    cfg = load_experiment(path)
    assert cfg.agent.name in family.names()
