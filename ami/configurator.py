"""Configurator: from the task to the other modules' settings.

`resolve(cfg, task)` fills every `None` in the experiment config and returns a new,
complete config (the original is never changed; every value set in the experiment file
or on the command line is kept as given). The rule it applies:

* Planning horizon H: a goal task plans over a window long enough to make progress
  the critic can see, `H = clip(episode_length // 6, 8, 32)`; with the critic off the
  energy is only the latent goal distance, so the plan must reach the goal itself:
  `H = clip(episode_length // 2, 16, 64)`.
* Re-planning: every `max(1, H // 4)` steps (receding horizon, warm-started).
* Compute budget (`eval.budget`): `small`, `medium`, `large` give the gradient planner
  restarts 4 / 8 / 16 and Adam iterations 16 / 30 / 50, learning rate 0.3 (in half-ranges
  of the bounds); sampling planners (those with a `population` option) get populations
  64 / 256 / 1024 and iterations 4 / 8 / 12, and elites (cem, icem) an eighth of the
  population unless set in `planner.options` (the hybrid planner: its proposer's
  population; its refinement keeps its own learning rate). Only settings the planner has
  are filled.
* Cost weights: with the critic, the energy is the critic's cost-to-go averaged over the
  imagined states plus the latent goal distance weighted 0.1 (a tie-breaker near the
  goal); without it, the latent goal distance of the last imagined state (weight 1).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from ami import actor
from ami.config import ExperimentConfig

BUDGETS = {"small": (4, 16), "medium": (8, 30), "large": (16, 50)}
SAMPLING_BUDGETS = {"small": (64, 4), "medium": (256, 8), "large": (1024, 12)}


class Task(NamedTuple):
    """What the configurator needs to know about the task."""

    goal_conditioned: bool
    action_size: int
    episode_length: int
    action_repeat: int = 1


def _fill(section, **choices):
    """`section` with each `None` field replaced by its choice."""
    updates = {k: v for k, v in choices.items() if getattr(section, k) is None}
    return dataclasses.replace(section, **updates)


def _search(cfg: ExperimentConfig) -> dict:
    """The planner's search settings for the budget, only those its kind has."""
    declared = actor.planner_defaults(cfg.planner.name)
    if "population" in declared:
        population, iterations = SAMPLING_BUDGETS[cfg.eval.budget]
        choices = {"population": population, "iterations": iterations}
    else:
        restarts, iterations = BUDGETS[cfg.eval.budget]
        choices = {"restarts": restarts, "iterations": iterations, "learning_rate": 0.3}
    return {k: v for k, v in choices.items() if k in declared}


def resolve(cfg: ExperimentConfig, task: Task) -> ExperimentConfig:
    """The complete config for `task`: every `None` chosen by the rule in the module docstring."""
    if not task.goal_conditioned:
        raise ValueError(
            f"env {cfg.env.name!r} is not goal-conditioned; the goal-reaching agent needs "
            "state.info['goal_obs'] (see README: your own environment)"
        )
    critic = cfg.critic.enabled
    horizon = cfg.planner.horizon
    if horizon is None:
        horizon = min(max(task.episode_length // 6, 8), 32) if critic else min(max(task.episode_length // 2, 16), 64)
    planner = _fill(cfg.planner, horizon=horizon, replan_every=max(1, horizon // 4), **_search(cfg))
    if actor.planner_defaults(planner.name).get("elites") is not None and "elites" not in planner.options:
        population = planner.population or actor.planner_defaults(planner.name)["population"]
        planner = dataclasses.replace(planner, options={**planner.options, "elites": max(1, population // 8)})
    cost = _fill(
        cfg.cost, goal_weight=0.1 if critic else 1.0, critic_weight=1.0 if critic else 0.0, terminal=not critic
    )
    env = _fill(cfg.env, episode_length=task.episode_length, action_repeat=task.action_repeat)
    return dataclasses.replace(cfg, planner=planner, cost=cost, env=env)
