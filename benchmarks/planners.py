"""Planner benchmark: success (or final energy) against energy evaluations per decision, all planners.

Three problems, every planner at several evaluation budgets per decision, in one process:

* `two_rooms_learned`: closed-loop goal reaching over a trained run's learned world model and
  critic (`--run-dir`, e.g. the quickstart's), the run's energy, horizon and re-planning;
  success over `--episodes` evaluation episodes (start and goal in different rooms).
* `two_rooms_true`: the same task planned over the true Two-Rooms dynamics, with no cost-to-go:
  the energy is the Euclidean distance of the last of H = 48 imagined positions to the goal,
  so a plan has to find the door (pure search; re-planning every 8 steps), at budgets up to
  100k evaluations per decision.
* `reacher_true` (`--reacher`): one decision on the MJX reacher (`reacher_goal`) planned over
  the true physics: the energy is the fingertip's distance to the target averaged over the
  horizon; the table reports the final energy (lower is better) over start/goal pairs.

Budgets are energy evaluations per decision (`PlanResult.evaluations`; a gradient evaluation
counts as one, though it costs about 3x a plain one: compare the wall time too). Each row
reports success or energy, evaluations used, and the wall time of one batched decision
(median of `--repeats` after a warm-up call). Prints a table, writes JSON and a PNG of
success against evaluations.

    python benchmarks/planners.py --run-dir runs/quickstart [--set cost.visit_weight=12] [--episodes 64] [--reacher]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from functools import partial
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import planner_convergence

import envs
from ami import evaluate
from ami.actor import make_planner, planner_defaults, shift_plan
from ami.agent import empty_memory
from ami.diagnostics.landscape import with_planner
from ami.replan import load_run
from ami.run import make_env
from envs.native import TwoRooms

GRADIENT_KINDS = ("gradient",)
SAMPLING_KINDS = ("cem", "icem", "mppi")


def budget_options(name: str, budget: int) -> dict:
    """Planner options spending about `budget` evaluations per decision (exact counts are reported)."""
    if name == "gradient":
        restarts = max(4, min(64, budget // 32))
        return {"restarts": restarts, "iterations": max(1, budget // restarts - 1)}
    if name in SAMPLING_KINDS:
        iterations = 8 if budget >= 1000 else 4
        population = max(8, budget // iterations)
        elites = {} if name == "mppi" else {"elites": max(2, population // 8)}
        return {"population": population, "iterations": iterations, **elites}
    if name == "hybrid":
        top_k, refine = 4, 20
        population = max(16, max(64, budget - top_k * (refine + 1)) // 4)
        return {"population": population, "elites": population // 8, "proposer_iterations": 4, "refine_top_k": top_k}
    raise ValueError(f"no budget rule for planner {name!r}")


def timed(fn, *args, repeats: int) -> float:
    """Median wall time (s) of `repeats` calls after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----- Two-Rooms over a trained run's learned model -----


def learned_row(run, name: str, budget: int, episodes: int, repeats: int) -> dict:
    cfg, run_agent, state = run
    options = budget_options(name, budget)
    inherited = {"init": cfg.planner.init} if "init" in planner_defaults(name) else {}
    if name == "gradient":  # the run's tuned step size; the hybrid keeps its own
        inherited["learning_rate"] = cfg.planner.learning_rate
    env = make_env(cfg, auto_reset=False)
    planner = make_planner(name, horizon=cfg.planner.horizon, action_size=env.action_size, **inherited, **options)
    agent = with_planner(run_agent, planner)
    run_fn = jax.jit(
        partial(
            evaluate.run_episodes,
            agent,
            env=env,
            num_episodes=episodes,
            num_steps=int(env.episode_length),
            controller="learned",
        )
    )
    key = jax.random.key(cfg.eval.seed)
    out = run_fn(state, key=key)
    reset = jax.vmap(env.reset)(jax.random.split(key, episodes))
    modules, params = agent.modules, state.learner.params
    z = modules.perception.encode(params.encoder, reset.obs)
    g = modules.perception.encode(params.encoder, reset.info[envs.GOAL_OBS])
    init = jnp.zeros((episodes, *modules.planner.space.shape))
    memory = empty_memory(modules, cfg.perception.latent_size, episodes)  # a full history: the visit term is timed too
    memory = memory._replace(latents_valid=jnp.ones_like(memory.latents_valid))
    plan = jax.jit(agent.plan)
    seconds = timed(plan, params, z, g, init, jax.random.key(1), memory, repeats=repeats)
    evals = int(plan(params, z, g, init, jax.random.key(1), memory).evaluations[0])
    return {
        "problem": "two_rooms_learned",
        "planner": name,
        "budget": budget,
        "evaluations": evals,
        "success": round(float(out["success_any"]), 4),
        "decision_ms": round(1e3 * seconds, 2),
        "batch": episodes,
        "options": options,
    }


# ----- Two-Rooms over the true dynamics with the exact geodesic cost-to-go -----


def true_two_rooms_row(name: str, budget: int, episodes: int, repeats: int, horizon: int = 48, every: int = 8):
    """Search, not cost shaping: the energy is the Euclidean distance of the last imagined position
    to the goal, so a plan must find the door within the horizon (the distance pulls into the wall)."""
    env = TwoRooms()
    options = budget_options(name, budget)
    planner = make_planner(name, horizon=horizon, action_size=2, **options)

    def energy(pos, goal, actions):
        def step(p, a):
            nxt = env.move(p, a)
            return nxt, nxt

        path = jax.lax.scan(step, pos, actions)[1]
        return jnp.linalg.norm(path[-1] - goal) / env.max_step

    def plan_all(pos, goal, init, key):
        keys = jax.random.split(key, pos.shape[0])
        return jax.vmap(lambda p, g, i, k: planner.optimize(partial(energy, p, g), k, i))(pos, goal, init, keys)

    @jax.jit
    def episode(key):
        k_reset, k_run = jax.random.split(key)
        states = jax.vmap(env.reset)(jax.random.split(k_reset, episodes))
        pos, goal = states.pipeline_state, states.info[envs.GOAL_OBS]

        def decide(carry, k):
            pos, plan, reached = carry
            plan = plan_all(pos, goal, plan, k).actions

            def move(p, a):
                return jax.vmap(env.move)(p, a), None

            for t in range(every):
                pos = move(pos, plan[:, t])[0]
                reached = reached | (jnp.linalg.norm(pos - goal, axis=-1) < env.success_radius)
            plan = jax.vmap(partial(shift_plan, k=every))(plan)
            return (pos, plan, reached), None

        start = (pos, jnp.zeros((episodes, horizon, 2)), jnp.zeros(episodes, bool))
        (pos, _, reached), _ = jax.lax.scan(decide, start, jax.random.split(k_run, -(-100 // every)))
        return jnp.mean(reached)

    success = float(episode(jax.random.key(12345)))
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(3), episodes))
    args = (states.pipeline_state, states.info[envs.GOAL_OBS], jnp.zeros((episodes, horizon, 2)), jax.random.key(4))
    plan = jax.jit(plan_all)
    seconds = timed(plan, *args, repeats=repeats)
    return {
        "problem": "two_rooms_true",
        "planner": name,
        "budget": budget,
        "evaluations": int(plan(*args).evaluations[0]),
        "success": round(success, 4),
        "decision_ms": round(1e3 * seconds, 2),
        "batch": episodes,
        "options": options,
    }


# ----- MJX reacher over the true physics (one decision) -----


def reacher_row(name: str, budget: int, pairs: int, repeats: int, horizon: int = 12) -> dict:
    env = envs.make("reacher_goal", auto_reset=False)
    options = budget_options(name, budget)
    planner = make_planner(name, horizon=horizon, action_size=env.action_size, **options)
    tip = slice(4, 6)  # fingertip x, y in the observation

    def energy(state, goal_tip, actions):
        def step(s, a):
            nxt = env.step(s, a)
            return nxt, nxt.obs[tip]

        tips = jax.lax.scan(step, state, actions)[1]
        return jnp.mean(jnp.linalg.norm(tips - goal_tip, axis=-1))

    @jax.jit
    def plan_all(states, goal_tips, key):
        keys = jax.random.split(key, goal_tips.shape[0])
        return jax.vmap(lambda s, g, k: planner.optimize(partial(energy, s, g), k))(states, goal_tips, keys)

    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(7), pairs))
    goal_tips = states.info[envs.GOAL_OBS][:, tip]
    result = plan_all(states, goal_tips, jax.random.key(8))
    final = jax.vmap(energy)(states, goal_tips, result.actions)
    seconds = timed(plan_all, states, goal_tips, jax.random.key(8), repeats=repeats)
    return {
        "problem": "reacher_true",
        "planner": name,
        "budget": budget,
        "evaluations": int(result.evaluations[0]),
        "energy": round(float(jnp.nanmean(final)), 5),
        "non_finite": int(jnp.sum(~jnp.isfinite(final))),
        "decision_ms": round(1e3 * seconds, 2),
        "batch": pairs,
        "options": options,
    }


def print_table(rows: list[dict]) -> None:
    print(f"{'problem':<18} {'planner':<9} {'budget':>7} {'evals':>7} {'success':>8} {'energy':>9} {'ms/dec':>9}")
    for r in rows:
        success = f"{r['success']:.3f}" if "success" in r else "-"
        energy = f"{r['energy']:.4f}" if "energy" in r else "-"
        print(
            f"{r['problem']:<18} {r['planner']:<9} {r['budget']:>7} {r['evaluations']:>7} {success:>8} "
            f"{energy:>9} {r['decision_ms']:>9.1f}"
        )


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = sorted({r["problem"] for r in rows})
    fig, axes = plt.subplots(1, len(problems), figsize=(5 * len(problems), 4), squeeze=False)
    for ax, problem in zip(axes[0], problems, strict=True):
        metric = "success" if problem.startswith("two_rooms") else "energy"
        mine = [r for r in rows if r["problem"] == problem]
        for name in sorted({r["planner"] for r in mine}):
            pts = sorted((r["evaluations"], r[metric]) for r in mine if r["planner"] == name)
            ax.plot(*zip(*pts, strict=True), marker="o", label=name)
        ax.set(xscale="log", xlabel="energy evaluations per decision", ylabel=metric, title=problem)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default=None, help="a trained Two-Rooms run (learned-model rows)")
    replan = "a planner/cost/eval override of the run (repeatable), e.g. --set cost.visit_weight=12"
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=replan)
    parser.add_argument("--planners", default="gradient,hybrid,cem,icem,mppi")
    parser.add_argument("--learned-budgets", default="250,1000,4000")
    parser.add_argument("--true-budgets", default="250,1000,10000,100000")
    parser.add_argument("--reacher-budgets", default="1000,10000")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--reacher", action="store_true", help="also the MJX reacher over true physics")
    parser.add_argument("--reacher-pairs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    lq_help = "also the LQ convergence rows of planner_convergence.py (defaults and the Adam before rows)"
    parser.add_argument("--lq", action="store_true", help=lq_help)
    parser.add_argument("--out", default="benchmarks/results/planners.json")
    args = parser.parse_args()
    names = args.planners.split(",")
    budgets = {
        k: [int(b) for b in getattr(args, f"{k}_budgets").split(",") if b] for k in ("learned", "true", "reacher")
    }
    rows = []

    def report(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    if args.run_dir:
        run = load_run(args.run_dir, args.set)
        for name in names:
            for budget in budgets["learned"]:
                report(learned_row(run, name, budget, args.episodes, args.repeats))
    for name in names:
        for budget in budgets["true"]:
            report(true_two_rooms_row(name, budget, args.episodes, args.repeats))
    if args.reacher:
        for name in names:
            for budget in budgets["reacher"]:
                report(reacher_row(name, budget, args.reacher_pairs, args.repeats))
    print_table(rows)
    lq_rows = []
    if args.lq:
        sizes = planner_convergence.SIZES
        lq_rows = planner_convergence.convergence_rows(names, {}, sizes, 8, args.repeats, report=print)
        planner_convergence.print_table(lq_rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": jax.local_device_count(),
        "backend": jax.default_backend(),
        "jax": metadata.version("jax"),
    }
    out.write_text(json.dumps({"machine": machine, "args": vars(args), "rows": rows, "lq_rows": lq_rows}, indent=1))
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
