"""`ami plan RUN_DIR`: every planner on a trained run's learned energy and on the true energy.

For `P` start/goal pairs (the first states of a `P`-episode evaluation with the run's
`eval.seed`: `env.reset(k)` for `k in split(split(key(eval.seed))[0], P)`), each planner
plans once on the learned energy and once on the true energy (the ground-truth twin), from
the same key. Per planner it records the energies found, the true energy of the learned
plan (and the learned energy of the twin's plan), mean traces, evaluations, wall time per
decision (one jitted call for all pairs, compiled ahead, divided by `P`), and the
learned-vs-true gradient comparison at the learned plan, at the twin's plan and along the
learned planner's path: the plans returned with 1 and n iterations from the same key, its
start and its end (for `"gradient"`, the best iterates of one run after that many
iterations; for `"hybrid"`, the refinement's iterations). Then it measures success over
`episodes` batched evaluation episodes with the learned model and with true dynamics
(`ami.evaluate.evaluate`, the planner swapped in), and slices both energies through the
learned plan of one planner on pair 0 (`slices`).

Gradient planners (`GRADIENT_PLANNERS`) on the true energy are guarded: where the true
gradient at their plan is non-finite or its norm above `ls.MAX_NORM`, that decision takes
the fallback planner's plan (`"cem"` with its default options, when registered), on the
pairs (`plan_true`, counted in `fallback_used`) and in the true-dynamics episodes
(`ls.with_guarded_twin`). Without a fallback the gradient plan is kept and only the counts of
unhealthy gradients are reported.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import envs
from ami.actor import Planner, make_planner, planner_names
from ami.agent import Params
from ami.diagnostics import landscape as ls
from ami.diagnostics.output import table_rows
from ami.evaluate import evaluate
from ami.replan import load_run
from ami.run import make_env

FALLBACK = "cem"
GRADIENT_PLANNERS = ("gradient", "hybrid")  # planner kinds that follow the energy's gradient
RUN_PLANNER = "run"  # the --planners name of the run's own configured planner
SLICE_POINTS_1D, SLICE_POINTS_2D = 41, 21  # alphas in [-1, 1]


class Pairs(NamedTuple):
    """`P` planning problems: env `states [P]`, start latents `z0 [P, D]`, goal latents `goal [P, D]`."""

    states: Any
    z0: jax.Array
    goal: jax.Array


class Energies(NamedTuple):
    """The learned and the true energy, both `(params, context, goal [D], actions [H, A]) -> []`
    (context: the start latent `[D]`, resp. the env state)."""

    learned: Any
    true: Any


def make_pairs(env: envs.Env, encode, params: Params, seed: int, num: int) -> Pairs:
    """The first states of a `num`-episode evaluation from `key(seed)` (as `ami.evaluate.run_episodes`)."""

    def draw(params, key):
        states = jax.vmap(env.reset)(jax.random.split(jax.random.split(key)[0], num))
        return Pairs(states, encode(params.encoder, states.obs), encode(params.encoder, states.info[envs.GOAL_OBS]))

    return jax.jit(draw)(params, jax.random.key(seed))


def resolve_planners(names: list[str] | None, agent, horizon: int, action_size: int) -> dict[str, Planner]:
    """`{label: Planner}`: each kind named (default: every registered kind) with its default
    options at the run's horizon; `"run"` is the run's configured planner."""

    def build(name: str) -> Planner:
        if name == RUN_PLANNER:
            return agent.modules.planner
        return make_planner(name, horizon=horizon, action_size=action_size)

    return {name: build(name) for name in names or planner_names()}


def fallback_planner(name: str | None, horizon: int, action_size: int) -> Planner | None:
    """The fallback planner `name` with its default options; None for `name=None`, and for the
    default `FALLBACK` when it is not registered (another unknown name raises `ValueError`)."""
    if name is None or (name == FALLBACK and name not in planner_names()):
        return None
    return make_planner(name, horizon=horizon, action_size=action_size)


def is_guarded(planner: Planner, fallback: Planner | None) -> bool:
    """Whether `planner`'s decisions on the true energy are guarded: a gradient planner, and a fallback."""
    return fallback is not None and planner.name in GRADIENT_PLANNERS


def timed(fn, *args) -> tuple[Any, float]:
    """`(fn(*args), seconds)` for a jitted `fn`: compiled ahead of time, then one call timed until ready."""
    compiled = fn.lower(*args).compile()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - start


def path_budgets(planner: Planner) -> list[int | None]:
    """Budgets along a planner's path: 1 and n of its iterations (`ls.iteration_option`: `iterations`,
    or `refine_iterations` for `"hybrid"`), its start and its end; just n without such an option."""
    option = ls.iteration_option(planner)
    return sorted({1, dict(planner.options)[option]}) if option else [None]


def finite_mean(x) -> float | None:
    """Mean of the finite entries of `x` (None if there are none)."""
    x = np.asarray(x, np.float64)
    return float(x[np.isfinite(x)].mean()) if np.isfinite(x).any() else None


# ----- one planner -----


class Problems(NamedTuple):
    """What every planner is studied on: the energies, parameters and pairs, and `check`, the
    jitted `plans [P, H, A] -> ls.GradientCheck [P]` of the pairs, compiled once for all planners."""

    energies: Energies
    params: Params
    pairs: Pairs
    check: Any


def make_problems(energies: Energies, params: Params, pairs: Pairs, max_ratio: float) -> Problems:
    """The `Problems` of `pairs`; `max_ratio` as in `ls.compare_gradients`."""

    def one(params, state, z0, goal, actions):
        learned, true = partial(energies.learned, params, z0, goal), partial(energies.true, params, state, goal)
        return ls.compare_gradients(learned, true, actions, max_ratio=max_ratio)

    check = partial(jax.jit(jax.vmap(one, (None, 0, 0, 0, 0))), params, pairs.states, pairs.z0, pairs.goal)
    return Problems(energies, params, pairs, check)


def _planning(optimize, energy):
    """The jitted `(params, contexts [P, ...], goals [P, D], key) -> plans [P]` (`ls.plan_pairs`)."""
    return jax.jit(partial(ls.plan_pairs, optimize, energy))


def _summary(result, wall_s: float, check: ls.GradientCheck, other: str) -> dict[str, Any]:
    """A planner's results on one energy; `check` at its plans gives their `other` energy."""
    num, other_energy = result.energy.shape[0], getattr(check, f"{other}_energy")
    return {
        "energy": np.asarray(result.energy).tolist(),
        "energy_mean": finite_mean(result.energy),
        f"{other}_energy_of_plan": np.asarray(other_energy).tolist(),
        f"{other}_energy_of_plan_mean": finite_mean(other_energy),
        "energy_trace_mean": [finite_mean(t) for t in np.asarray(result.energy_trace).T],
        "evaluations": int(np.max(result.evaluations)),
        "decision_wall_s": wall_s / num,
        "batch_wall_s": wall_s,
    }


def plan_true(planner: Planner, fallback: Planner | None, problems: Problems, key) -> tuple[Any, np.ndarray, float]:
    """The twin's plans for the pairs: `(PlanResult [P], used_fallback [P], seconds)`.

    For a guarded planner (`is_guarded`), the decisions whose true gradient at the plan is
    non-finite or above `ls.MAX_NORM` take the fallback's plan (`ls.take_fallback`); the
    fallback runs, and its time counts, only when some decision needs it (the rule of
    `ls.guarded_twin_plan_fn`, here on the host). Same key for both planners.
    """
    args = (problems.params, problems.pairs.states, problems.pairs.goal, key)
    result, seconds = timed(_planning(planner.optimize, problems.energies.true), *args)
    if not is_guarded(planner, fallback):
        return result, np.zeros(result.energy.shape, bool), seconds
    check = problems.check(result.actions)
    used = np.asarray(check.nonfinite | (check.true_norm > ls.MAX_NORM))
    if not used.any():
        return ls.take_fallback(result, result, jnp.asarray(used)), used, seconds
    other, extra = timed(_planning(fallback.optimize, problems.energies.true), *args)
    return ls.take_fallback(result, other, jnp.asarray(used)), used, seconds + extra


def study_planner(planner: Planner, fallback: Planner | None, problems: Problems, key) -> tuple[dict, jax.Array]:
    """`(record, learned plans [P, H, A])`: one planner on every pair, on both energies."""
    energies, params, pairs = problems.energies, problems.params, problems.pairs
    learned, t_learned = timed(_planning(planner.optimize, energies.learned), params, pairs.z0, pairs.goal, key)
    true, used, t_true = plan_true(planner, fallback, problems, key)
    at_learned, at_true = problems.check(learned.actions), problems.check(true.actions)
    path, budgets = [], path_budgets(planner)
    for budget in budgets:
        if budget == budgets[-1]:
            at, length = at_learned, learned.energy_trace.shape[-1]
        else:
            shorter = _planning(ls.with_iterations(planner, budget).optimize, energies.learned)
            start = shorter(params, pairs.z0, pairs.goal, key)
            at, length = problems.check(start.actions), start.energy_trace.shape[-1]
        path.append({"iterations": length, **ls.gradient_summary(at)})
    record = {
        "kind": planner.name,
        "options": dict(planner.options),
        "learned": _summary(learned, t_learned, at_learned, "true"),
        "true_dynamics": {**_summary(true, t_true, at_true, "learned"), "guarded": is_guarded(planner, fallback)},
        "fallback_used": int(np.sum(used)),
        "gradients": {
            "at_learned_plan": ls.gradient_summary(at_learned),
            "at_true_plan": ls.gradient_summary(at_true),
            "path": path,
        },
    }
    return record, learned.actions


def success(cfg, agent, state, env, planner: Planner, fallback: Planner | None, episodes: int) -> dict[str, float]:
    """Success rates over `episodes` evaluation episodes (key `eval.seed`) with `planner` on the
    learned model and on the true dynamics (guarded by `fallback` when `is_guarded`)."""
    key, steps = jax.random.key(cfg.eval.seed), cfg.env.episode_length
    run = partial(evaluate, env=env, key=key, num_episodes=episodes, num_steps=steps, success=cfg.eval.success)
    twin = ls.with_guarded_twin(agent, planner, fallback, env) if is_guarded(planner, fallback) else None
    learned = run(ls.with_planner(agent, planner), state, controllers=("learned",))["learned"]
    true = run(twin or ls.with_planner(agent, planner), state, controllers=("true_dynamics",))["true_dynamics"]
    return {"learned": learned["success_rate"], "true_dynamics": true["success_rate"], "episodes": episodes}


# ----- slices -----


def slice_directions(env, state, actions: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """`{name: [H, A]}`: the first action's coordinates, two random directions, and (Two-Rooms)
    the move of the first action to the best one-step action (`ls.best_first_action`) at alpha 1."""
    shape = actions.shape
    dirs = {f"step0_dim{d}": ls.coordinate_direction(shape, 0, d) for d in range(min(2, shape[1]))}
    for i, d in enumerate(ls.random_directions(key, shape, 2)):
        dirs[f"random{i}"] = d
    best = ls.best_first_action(env, state)
    if best is not None:
        dirs["best_first_action"] = ls.toward_first_action(actions, best)
    return dirs


class Plane(NamedTuple):
    """A 2-D slice: `ls.slice_2d` at `centre [H, A]` along `d1, d2 [H, A]`, and its labels: axis
    `names`, axis values `x, y [K]` at the alphas, and where the plan lies (`plan_xy`)."""

    centre: jax.Array
    d1: jax.Array
    d2: jax.Array
    names: tuple[str, str]
    x: np.ndarray
    y: np.ndarray
    plan_xy: tuple[float, float]


def slice_plane(actions: jax.Array, dirs: dict[str, jax.Array], planner: Planner, alphas: jax.Array) -> Plane:
    """The first action's plane through the plan over the whole box (rest of the plan fixed), or the
    plane of the two random directions centred at the plan when A = 1."""
    if actions.shape[1] == 1:
        x = np.asarray(alphas)
        return Plane(actions, dirs["random0"], dirs["random1"], ("random0", "random1"), x, x, (0.0, 0.0))
    mid, half = planner.space.mid[:2], planner.space.half_range[:2]
    d1, d2 = (half[i] * ls.coordinate_direction(actions.shape, 0, i) for i in range(2))
    x, y = (mid[i] + half[i] * np.asarray(alphas) for i in range(2))
    plan_xy = (float(actions[0, 0]), float(actions[0, 1]))
    return Plane(actions.at[0, :2].set(mid), d1, d2, ("first action [0]", "first action [1]"), x, y, plan_xy)


def slices(env, problems: Problems, actions: jax.Array, planner: Planner, key) -> dict:
    """Both energies (actions clipped into the box) along 1-D slices through `actions [H, A]` of
    pair 0 (`slice_directions`, alpha 0 at the plan) and on a plane through it (`slice_plane`)."""
    energies, params, pairs = problems.energies, problems.params, problems.pairs
    state, z0, goal = jax.tree.map(lambda x: x[0], (pairs.states, pairs.z0, pairs.goal))
    low, high = np.asarray(planner.space.low), np.asarray(planner.space.high)
    fns = {
        "learned": ls.boxed(partial(energies.learned, params, z0, goal), low, high),
        "true": ls.boxed(partial(energies.true, params, state, goal), low, high),
    }
    dirs = slice_directions(env, state, actions, key)
    alphas, alphas_2d = jnp.linspace(-1.0, 1.0, SLICE_POINTS_1D), jnp.linspace(-1.0, 1.0, SLICE_POINTS_2D)
    plane = slice_plane(actions, dirs, planner, alphas_2d)
    lines, grids = _cuts(fns, actions, jnp.stack(list(dirs.values())), alphas, plane, alphas_2d)
    labels = {"names": list(plane.names), "x": plane.x.tolist(), "y": plane.y.tolist(), "plan_xy": list(plane.plan_xy)}
    return {
        "pair": 0,
        "plan": np.asarray(actions).tolist(),
        "alphas": np.asarray(alphas).tolist(),
        "one_d": {name: {side: lines[side][i] for side in fns} for i, name in enumerate(dirs)},
        "two_d": {"alphas": np.asarray(alphas_2d).tolist(), **labels, **grids},
    }


def _cuts(fns: dict, actions, directions, alphas, plane: Plane, alphas_2d) -> tuple[dict, dict]:
    """`({side: [N][K]}, {side: [K2][K2]})` for each energy in `fns`: `ls.slice_1d` through
    `actions` along each of `directions [N, H, A]`, and `ls.slice_2d` on `plane`, in one jitted call."""

    def cut(actions, directions, alphas, centre, d1, d2, alphas_2d):
        lines = {k: jax.vmap(partial(ls.slice_1d, f, actions), (0, None))(directions, alphas) for k, f in fns.items()}
        return lines, {k: ls.slice_2d(f, centre, d1, d2, alphas_2d) for k, f in fns.items()}

    out = jax.jit(cut)(actions, directions, alphas, plane.centre, plane.d1, plane.d2, alphas_2d)
    return jax.tree.map(lambda x: np.asarray(x).tolist(), out)


# ----- the report -----


def report(
    run_dir: str | Path,
    planners: list[str] | None = None,
    num_pairs: int = 8,
    episodes: int = 32,
    fallback: str | None = FALLBACK,
    max_grad_ratio: float = ls.MAX_RATIO,
    say=print,
) -> dict[str, Any]:
    """Loads a run and studies every planner in `planners` (default: every registered kind);
    returns the record `landscape.json` holds (see the module docstring)."""
    start = time.perf_counter()
    cfg, agent, state = load_run(run_dir)
    env, params = make_env(cfg, auto_reset=False), state.learner.params
    horizon, action_size = cfg.planner.horizon, env.action_size
    chosen = resolve_planners(planners, agent, horizon, action_size)
    backup = fallback_planner(fallback, horizon, action_size)
    pairs = make_pairs(env, agent.modules.perception.encode, params, cfg.eval.seed, num_pairs)
    energies = Energies(agent.modules.energy, ls.true_energy_fn(agent, env))
    problems = make_problems(energies, params, pairs, max_grad_ratio)
    key_plan, key_slice = jax.random.split(jax.random.fold_in(jax.random.key(cfg.eval.seed), 1))
    records, plans = {}, {}
    for label, planner in chosen.items():
        t0 = time.perf_counter()
        records[label], plans[label] = study_planner(planner, backup, problems, key_plan)
        records[label]["success"] = success(cfg, agent, state, env, planner, backup, episodes)
        say(f"plan: {label}: {time.perf_counter() - t0:.1f} s")
    slice_label = cfg.planner.name if cfg.planner.name in chosen else next(iter(chosen))
    cut = slices(env, problems, plans[slice_label][0], chosen[slice_label], key_slice)
    return {
        "run_dir": str(run_dir),
        "env": cfg.env.name,
        "horizon": horizon,
        "settings": {
            "pairs": num_pairs,
            "episodes": episodes,
            "fallback": backup.name if backup is not None else None,
            "gradient_planners": list(GRADIENT_PLANNERS),
            "max_grad_norm": ls.MAX_NORM,
            "max_grad_ratio": max_grad_ratio,
        },
        "pairs": pairs_record(pairs, cfg.eval.seed),
        "planners": records,
        "slices": {"planner": slice_label, **cut},
        "table": table_rows(records),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }


def pairs_record(pairs: Pairs, seed: int) -> dict[str, Any]:
    """The start and goal observations of the pairs and how they were drawn."""
    return {
        "seed": seed,
        "recipe": "env.reset(k) for k in jax.random.split(jax.random.split(jax.random.key(seed))[0], P)",
        "start_obs": np.asarray(pairs.states.obs).tolist(),
        "goal_obs": np.asarray(pairs.states.info[envs.GOAL_OBS]).tolist(),
    }
