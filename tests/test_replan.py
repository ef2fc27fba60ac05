"""`ami.replan.replan_config`: which settings a finished run can be re-planned with, and what the
configurator chooses again when the planner or the budget changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ami import configlib
from ami.config import load_experiment
from ami.configurator import Task, resolve
from ami.replan import replan_config

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
TASK = Task(goal_conditioned=True, action_size=2, episode_length=100)


@pytest.fixture(scope="module")
def saved():
    """The quickstart's resolved config, as a run directory's `config.yaml` holds it."""
    return resolve(load_experiment(QUICKSTART), TASK)


def test_planning_settings_are_overridden_and_the_rest_kept(saved):
    cfg = replan_config(saved, ["cost.visit_weight=6.5", "planner.restarts=16", "eval.episodes=7"])
    assert (cfg.cost.visit_weight, cfg.planner.restarts, cfg.eval.episodes) == (6.5, 16, 7)
    assert cfg.planner.iterations == saved.planner.iterations == 30
    assert cfg.world_model == saved.world_model and cfg.train == saved.train


@pytest.mark.parametrize(
    "key",
    ["world_model.hidden=[8]", "perception.latent_size=4", "data.num_envs=2", "seed=1", "hierarchy.stride=8"],
)
def test_trained_sections_are_refused_by_name(saved, key):
    with pytest.raises(configlib.ConfigError, match=r"re-planned with planner\.\*, cost\.\*, eval\.\* and the") as err:
        replan_config(saved, [key])
    assert err.value.key == key.partition("=")[0]


def test_the_hierarchy_s_planning_keys_are_re_planned_and_a_new_high_planner_drops_its_options(saved):
    saved = replan_config(saved, ["hierarchy.options={population: 64}"])
    cfg = replan_config(saved, ["hierarchy.plan=false", "hierarchy.horizon=4"])
    assert (cfg.hierarchy.plan, cfg.hierarchy.horizon, cfg.hierarchy.options) == (False, 4, {"population": 64})
    assert replan_config(saved, ["hierarchy.planner=gradient"]).hierarchy.options == {}


def test_a_new_planner_gets_the_configurator_s_search_settings(saved):
    cfg = resolve(replan_config(saved, ["planner.name=cem"]), TASK)
    assert (cfg.planner.population, cfg.planner.iterations, cfg.planner.restarts) == (256, 8, None)
    assert cfg.planner.options == {"elites": 32}
    assert (cfg.planner.horizon, cfg.planner.replan_every) == (saved.planner.horizon, saved.planner.replan_every)


def test_a_new_budget_keeps_what_is_given_and_rechooses_the_rest(saved):
    cfg = resolve(replan_config(saved, ["eval.budget=large", "planner.iterations=12"]), TASK)
    assert (cfg.planner.restarts, cfg.planner.iterations, cfg.planner.learning_rate) == (16, 12, 0.3)


def test_without_a_new_planner_or_budget_the_saved_search_is_kept(saved):
    with pytest.raises(configlib.ConfigError, match="has no option 'population'"):
        replan_config(saved, ["planner.population=64"])  # the saved planner is the gradient one


def test_a_trained_policy_keeps_its_horizon():
    saved = resolve(load_experiment(QUICKSTART, ["policy.enabled=true"]), TASK)
    with pytest.raises(configlib.ConfigError, match="policy was trained for the saved horizon") as err:
        replan_config(saved, ["planner.horizon=8"])
    assert err.value.key == "planner.horizon"
    assert replan_config(saved, ["planner.replan_every=2"]).planner.replan_every == 2
