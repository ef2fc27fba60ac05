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
* Learning: goal tasks learn offline from `data.steps_per_env = 400` steps of exploration
  per env; reward tasks learn online (`online.enabled`), the replay holding the whole run:
  `steps_per_env = ceil(online.env_steps / (action_repeat * num_envs))`.

Reward tasks (no goal; the env's reward is the score):

* Energy: `reward` and `value` terms weighted 1 (the negated predicted return, see
  `ami.cost`), no goal terms; the amortised policy is enabled (the value term evaluates
  `Q(z_H, pi(z_H))`, and it proposes candidates to the planner).
* Horizon `H = clip(episode_length // 100, 3, 8)` decisions (3 for episodes of up to 399
  decisions, 5 for DMC's 500); the value critic carries everything past it, so the plan
  is short and re-made at every decision (`replan_every = 1`).
* Discount `gamma = clip(1 - 5 / episode_length, 0.95, 0.995)` (TD-MPC2's heuristic: an
  effective horizon of a fifth of the episode), 0.99 for 500 decisions.
* Controllers evaluated: `learned` and `random` (goal tasks: also `true_dynamics`).
* Policy: trained to maximise the value critic (`policy.objective: value`, TD-MPC2's
  actor) on reward tasks, on the planner's energy of its rollouts on goal tasks; its
  proposals: half the gradient planner's restarts, a sixteenth of a sampling planner's
  population.

The Dreamer-style baseline (`dreamer.*`): imagination starts from every posterior state of
the batch (`imagine_starts = batch_size * (length + 1)`) unless set.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

from ami import actor
from ami.config import ExperimentConfig
from ami.configlib import check

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
    goal = task.goal_conditioned
    critic = cfg.critic.enabled and goal
    horizon = cfg.planner.horizon
    if horizon is None:
        if not goal:
            horizon = min(max(task.episode_length // 100, 3), 8)
        elif critic:
            horizon = min(max(task.episode_length // 6, 8), 32)
        else:
            horizon = min(max(task.episode_length // 2, 16), 64)
    replan = max(1, horizon // 4) if goal else 1
    planner = _fill(cfg.planner, horizon=horizon, replan_every=replan, **_search(cfg))
    if actor.planner_defaults(planner.name).get("elites") is not None and "elites" not in planner.options:
        population = planner.population or actor.planner_defaults(planner.name)["population"]
        planner = dataclasses.replace(planner, options={**planner.options, "elites": max(1, population // 8)})
    if goal:
        cost = _fill(
            cfg.cost,
            goal_weight=0.1 if critic else 1.0,
            critic_weight=1.0 if critic else 0.0,
            terminal=not critic,
            reward_weight=0.0,
            value_weight=0.0,
        )
    else:
        cost = _fill(cfg.cost, goal_weight=0.0, critic_weight=0.0, terminal=True, reward_weight=1.0, value_weight=1.0)
    gamma = min(max(1.0 - 5.0 / task.episode_length, 0.95), 0.995)
    value = _fill(cfg.value, gamma=round(gamma, 6))
    slots = planner.restarts or planner.population or actor.planner_defaults(planner.name).get("population") or 8
    policy = _fill(
        cfg.policy,
        enabled=not goal,
        objective="energy" if goal else "value",
        candidates=max(1, slots // (2 if planner.restarts else 16)),
    )
    online = _fill(cfg.online, enabled=not goal)
    env = _fill(cfg.env, episode_length=task.episode_length, action_repeat=task.action_repeat)
    controllers = ("learned", "true_dynamics", "random") if goal else ("learned", "random")
    evaluation = _fill(cfg.eval, controllers=controllers)
    steps = 400
    if online.enabled:
        steps = math.ceil(online.env_steps / (task.action_repeat * cfg.data.num_envs))
    data = _fill(cfg.data, steps_per_env=max(steps, 2))
    d = cfg.dreamer
    dreamer = _fill(d, imagine_starts=d.batch_size * (d.length + 1))
    h = cfg.hierarchy
    half = max(planner.horizon // 2, 1)  # a landmark edge: half the low planner's reach, in critic units
    hop = half if cfg.critic.objective == "distance" else (1.0 - cfg.critic.gamma**half) / (1.0 - cfg.critic.gamma)
    hierarchy = _fill(h, macro_size=task.action_size, replan_every=h.stride, edge_cutoff=round(hop, 4))
    out = dataclasses.replace(
        cfg,
        planner=planner,
        cost=cost,
        env=env,
        value=value,
        policy=policy,
        online=online,
        eval=evaluation,
        data=data,
        dreamer=dreamer,
        hierarchy=hierarchy,
    )
    _check_resolved(out, task)
    return out


def _check_resolved(cfg: ExperimentConfig, task: Task) -> None:
    """The checks that need the task: what the resolved settings must agree on."""
    if not task.goal_conditioned:
        weights = cfg.cost
        check(
            not weights.goal_weight and not weights.critic_weight,
            "cost.goal_weight",
            f"env {cfg.env.name!r} has no goal (a reward task): goal and critic weights must be 0",
        )
        check(
            "true_dynamics" not in cfg.eval.controllers,
            "eval.controllers",
            "the ground-truth twin plans towards a goal; a reward task evaluates 'learned' and 'random'",
        )
    if cfg.hierarchy.enabled:
        check(task.goal_conditioned, "hierarchy.enabled", "two-level planning plans towards a goal: this env has none")
        landmarks = cfg.hierarchy.subgoals == "landmarks"
        check(not landmarks or cfg.critic.enabled, "hierarchy.subgoals", "the landmark edges are the low critic's")
    if cfg.cost.value_weight:
        check(cfg.policy.enabled, "policy.enabled", "the value term reads Q(z, pi(z)): it needs the policy")
    if cfg.policy.enabled and cfg.policy.objective == "value":
        check(not task.goal_conditioned, "policy.objective", "'value' maximises the reward task's Q: use 'energy'")
    if cfg.online.enabled:
        check(
            not cfg.perception.normalize or cfg.online.seed_steps > 0,
            "perception.normalize",
            "online, the statistics are those of the seed steps: needs online.seed_steps > 0",
        )
    steps = cfg.data.steps_per_env
    check(
        cfg.world_model.prediction_horizon <= steps,
        "world_model.prediction_horizon",
        f"must be <= data.steps_per_env ({steps})",
    )
    if task.goal_conditioned:
        check(cfg.critic.max_goal_offset <= steps, "critic.max_goal_offset", f"must be <= data.steps_per_env ({steps})")
