"""A finished run, loaded back: its config, agent and trained state, optionally re-planned with
other planner, cost or evaluation settings (`ami eval`, `ami plan`, the diagnostics and the
planner benchmarks read runs through here)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ami import checkpoint, configlib
from ami.agent import Agent
from ami.config import ExperimentConfig
from ami.config_hierarchy import PLANNING_KEYS
from ami.run import build, offline_target, online_target

# Sections a finished run can be re-planned with (none of them changes a trained parameter).
REPLAN_SECTIONS = ("planner", "cost", "eval")
# The planner's search settings the configurator chooses again when the planner or budget changes.
SEARCH_KEYS = ("iterations", "restarts", "population", "learning_rate", "options")


def replan_config(saved: ExperimentConfig, overrides: Iterable[str]) -> ExperimentConfig:
    """`saved` (a run's resolved config) with `overrides` of its planning sections only.

    A key outside `REPLAN_SECTIONS` and the hierarchy's `PLANNING_KEYS` raises `ConfigError`
    (it would change what was trained).
    When `planner.name` or `eval.budget` is overridden, the saved search settings not
    themselves overridden are cleared so the configurator chooses them for the new planner
    and budget; the horizon and re-planning interval are kept.
    """
    overrides = list(overrides)
    keys = [configlib.parse_override(text)[0] for text in overrides]
    for key in keys:
        section = key.split(".")[0]
        if section == "hierarchy" and key.split(".")[1:2] and key.split(".")[1] in PLANNING_KEYS:
            continue
        if section not in REPLAN_SECTIONS:
            raise configlib.ConfigError(
                f"a finished run is re-planned with {', '.join(s + '.*' for s in REPLAN_SECTIONS)} and the "
                f"hierarchy's planning keys ({', '.join(PLANNING_KEYS)}) only; "
                f"{section}.* is part of what was trained (train a new run)",
                key,
            )
    if saved.policy.enabled and "planner.horizon" in keys:
        raise configlib.ConfigError("the run's policy was trained for the saved horizon", "planner.horizon")
    data = configlib.to_dict(saved)
    if "hierarchy.planner" in keys and not any(k.startswith("hierarchy.options") for k in keys):
        data["hierarchy"]["options"] = {}
    if {"planner.name", "eval.budget"} & set(keys):
        for name in SEARCH_KEYS:
            if not any(k == f"planner.{name}" or k.startswith(f"planner.{name}.") for k in keys):
                data["planner"].pop(name, None)
    return configlib.load(ExperimentConfig, data, overrides)


def load_run(run_dir: str | Path, overrides: Iterable[str] = ()) -> tuple[ExperimentConfig, Agent, Any]:
    """The config, agent and trained agent state of a run (from its newest readable checkpoint).

    `overrides` re-plan the run with other planner, cost or eval settings (`replan_config`).
    """
    run_dir = Path(run_dir)
    saved_cfg = configlib.load(ExperimentConfig, run_dir / "config.yaml")
    cfg = replan_config(saved_cfg, overrides) if overrides else saved_cfg
    # Restored into the saved run's own shapes: a re-planned agent may keep other memories (a
    # visit history of another length, a high level's plan), which start fresh anyway.
    saved_cfg, saved_env, saved_agent = build(saved_cfg)
    cfg, _, agent = build(cfg) if overrides else (saved_cfg, saved_env, saved_agent)
    if cfg.online.enabled:
        target = online_target(saved_cfg, saved_env, saved_agent)
        state = checkpoint.restore(run_dir / "checkpoints", target=target, fallback=True)[0].agent
        return cfg, agent, state if agent is saved_agent else agent.reset(state, 1)
    target = offline_target(saved_cfg, saved_env, saved_agent)
    saved = checkpoint.restore(run_dir / "checkpoints", target=target, fallback=True)[0]
    return cfg, agent, agent.reset(saved.agent, 1)
