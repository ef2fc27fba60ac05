"""Flat against two-level (H-JEPA) planning on one trained run, at the same budget.

Loads a run trained with `hierarchy.enabled` (e.g. `ami train experiments/maze.yaml --run-dir
runs/maze`) and evaluates, on the same episodes from the run's fixed eval seed:

* `flat`: the low planner alone, at the run's settings (`hierarchy.plan=false`);
* `flat H=<reach>`: the same planner and search budget over as many steps as the high
  level looks ahead (`planner.horizon = hierarchy.horizon x stride`);
* `two-level`: the high planner chooses macro-actions, the low planner plans to the first
  subgoal; on a run with `hierarchy.subgoals: landmarks`, the landmark graph chooses the
  waypoint (`ami.landmarks`; its critic evaluations per decision are counted apart).

Per row: success at any step and at the last step, mean final distance, energy evaluations per
decision (each planner's `PlanResult.evaluations` per call, divided by its re-planning interval,
summed over the levels), predictor steps per decision (evaluations x the rollout length they
imagine), compile seconds and milliseconds per batched decision (all episodes act together).
Rows are measured in one process, one after the other. Writes JSON.

    python benchmarks/hierarchy.py runs/maze [--episodes 100] [--set hierarchy.planner=gradient ...]
        [--out benchmarks/results/hierarchy.json]
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
from record import compile_and_run, write_json

from ami import configlib, hierarchy
from ami.config import ExperimentConfig
from ami.evaluate import run_episodes
from ami.replan import load_run
from ami.run import make_env


def rows_for(cfg) -> list[tuple[str, list[str]]]:
    reach = cfg.hierarchy.horizon * cfg.hierarchy.stride
    return [
        ("flat", ["hierarchy.plan=false"]),
        (f"flat H={reach}", ["hierarchy.plan=false", f"planner.horizon={reach}"]),
        ("two-level", []),
    ]


def planning_cost(agent, state) -> dict:
    """Energy evaluations and predictor steps per decision of `agent`'s planning, from one call of each level."""
    m, params = agent.modules, state.learner.params
    d, h, a = m.perception.latent_size, m.planner.horizon, m.planner.action_size
    z, g = jnp.zeros((1, d)), jnp.ones((1, d))
    low = int(agent.plan(params, z, g, jnp.zeros((1, h, a)), jax.random.key(0), state.memory).evaluations[0])
    out = {"low_evaluations": low, "evaluations": low / m.acting.replan_every}
    out["predictor_steps"] = out["evaluations"] * h
    if m.high_planning is not None:
        hp, high_params = m.high_planning, state.learner.high.params
        init = jnp.zeros((hp.planner.horizon, m.high.macro_size))
        energy = partial(hierarchy.high_energy, m.high, hp, high_params, z[0], g[0])
        high = int(hp.planner.optimize(energy, jax.random.key(1), init).evaluations)
        out.update(high_evaluations=high)
        out["evaluations"] += high / hp.replan_every
        out["predictor_steps"] += high * hp.planner.horizon / hp.replan_every
    if m.landmarks is not None:  # edges of the graph, then each landmark to the agent and to the goal
        lp = m.landmarks
        out["graph_critic_evaluations"] = (lp.num * lp.num + 2 * lp.num + 1) / lp.replan_every
    return out


def evaluate_row(run_dir: str, overrides: list[str], episodes: int | None) -> dict:
    cfg, agent, state = load_run(run_dir, overrides)
    env = make_env(cfg, auto_reset=False)
    n, steps = episodes or cfg.eval.episodes, cfg.env.episode_length
    run = jax.jit(partial(run_episodes, agent, env=env, num_episodes=n, num_steps=steps, controller="learned"))
    out, compile_s, wall = compile_and_run(run, state, key=jax.random.key(cfg.eval.seed))
    row = {k: float(v) for k, v in out.items()}
    row.update(planning_cost(agent, agent.reset(state, 1)))
    row.update(compile_s=compile_s, ms_per_decision=1000.0 * wall / steps, episodes=n, steps=steps)
    row["planner"] = cfg.planner.name
    row["horizon"] = cfg.planner.horizon
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument(
        "--episodes", type=int, default=None, help="episodes per row (default: the run's eval.episodes)"
    )
    parser.add_argument("--set", nargs="*", default=[], help="re-planning overrides applied to every row")
    parser.add_argument("--rows", default=None, help="comma-separated subset of the row names")
    parser.add_argument("--out", default="benchmarks/results/hierarchy.json")
    args = parser.parse_args()
    saved = configlib.load(ExperimentConfig, Path(args.run_dir) / "config.yaml")
    if not saved.hierarchy.enabled:
        raise SystemExit(f"{args.run_dir} was trained without hierarchy.enabled: there is no high level to compare")
    rows = rows_for(saved)
    if args.rows:
        keep = {r.strip() for r in args.rows.split(",")}
        rows = [r for r in rows if r[0] in keep]
    results = []
    print(f"{'row':<22} {'any':>6} {'final':>6} {'dist':>6} {'evals/dec':>9} {'pred steps/dec':>14} {'ms/dec':>8}")
    for name, overrides in rows:
        row = {"row": name, "overrides": overrides + args.set}
        row.update(evaluate_row(args.run_dir, overrides + args.set, args.episodes))
        results.append(row)
        dist = row.get("final_distance", float("nan"))
        success = f"{row['success_any']:>6.3f} {row['success_final']:>6.3f} {dist:>6.3f}"
        cost = f"{row['evaluations']:>9.1f} {row['predictor_steps']:>14.0f} {row['ms_per_decision']:>8.1f}"
        print(f"{name:<22} {success} {cost}  (compile {row['compile_s']:.0f} s)", flush=True)
    write_json(args.out, {"run_dir": args.run_dir, "rows": results})


if __name__ == "__main__":
    main()
