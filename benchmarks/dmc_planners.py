"""Planners compared on one trained reward-task model: every planner of `ami/actor/` and the policy-only mode.

Loads a finished online run (`runs/dmc/cartpole_swingup_s0`), re-plans it with each planner at the run's
`eval.budget` (the configurator's settings for that budget: gradient 4 restarts x 16 Adam steps, sampling
planners population 64 x 4 iterations at `small`), and evaluates each on the same `eval.episodes` episodes
from the run's fixed eval seed. The world model, reward head, critic and policy prior are the same for every
row, so the rows differ only in how the energy E(a) = -(sum_t gamma^t r + gamma^H V) is minimised. Per row:
mean return +- std over episodes, the ratio to the run's own planner (measured in this process), compile
seconds and milliseconds per batched decision (all episodes act together). Writes JSON.

    python benchmarks/dmc_planners.py runs/dmc/cartpole_swingup_s0 [--planners gradient,mppi,cem,icem,hybrid]
        [--set eval.budget=medium ...] [--out benchmarks/results/dmc_planners.json]
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import jax
from record import compile_and_run, write_json

from ami import actor, configlib
from ami.config import ExperimentConfig
from ami.evaluate import run_episodes
from ami.replan import load_run
from ami.run import make_env

POLICY = "policy"


def evaluate_planner(run_dir: str, planner: str, overrides: list[str]) -> dict:
    """One row: `planner` (a planner name, or `policy` for acting with the policy alone) on the run's episodes."""
    replan = ["planner.mode=policy"] if planner == POLICY else [f"planner.name={planner}", "planner.mode=plan"]
    cfg, agent, state = load_run(run_dir, replan + overrides)
    env = make_env(cfg, auto_reset=False)
    e = cfg.eval
    run = jax.jit(
        partial(
            run_episodes,
            agent,
            env=env,
            num_episodes=e.episodes,
            num_steps=cfg.env.episode_length,
            controller="learned",
        )
    )
    out, compile_s, run_s = compile_and_run(run, state, key=jax.random.key(e.seed))
    p = cfg.planner
    settings = (
        {"mode": p.mode}
        if planner == POLICY
        else {
            k: v for k, v in (("restarts", p.restarts), ("population", p.population), ("iterations", p.iterations)) if v
        }
    )
    return {
        "planner": planner,
        "settings": settings,
        "return": float(out["return"]),
        "return_std": float(out["return_std"]),
        "compile_s": round(compile_s, 1),
        "ms_per_decision": round(1000 * run_s / cfg.env.episode_length, 2),
        "episodes": e.episodes,
    }


def format_table(rows: list[dict], baseline: str) -> str:
    base = next(r["return"] for r in rows if r["planner"] == baseline)
    lines = [f"{'planner':9} {'settings':38} {'return':>15} {'ratio':>6} {'compile s':>9} {'ms/decision':>11}"]
    for r in rows:
        settings = " ".join(f"{k}={v}" for k, v in r["settings"].items())
        ret = f"{r['return']:.1f} +- {r['return_std']:.1f}"
        ratio = r["return"] / base if base else float("nan")
        lines.append(
            f"{r['planner']:9} {settings:38} {ret:>15} {ratio:6.2f} {r['compile_s']:9.1f} {r['ms_per_decision']:11.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--planners", default=",".join(actor.planner_names()) + f",{POLICY}")
    parser.add_argument("--set", nargs="*", default=[], help="planner.* / eval.* overrides for every row")
    parser.add_argument("--out", default="benchmarks/results/dmc_planners.json")
    args = parser.parse_args()
    cfg = configlib.load(ExperimentConfig, Path(args.run_dir) / "config.yaml")
    trained_with = cfg.planner.name if cfg.planner.mode == "plan" else POLICY
    names = [n.strip() for n in args.planners.split(",") if n.strip()]
    names = [trained_with] + [n for n in names if n != trained_with]
    rows = []
    for name in names:
        rows.append(evaluate_planner(args.run_dir, name, args.set))
        print(f"{name}: {rows[-1]['return']:.1f} ({rows[-1]['compile_s']} s compile)", flush=True)
    table = format_table(rows, trained_with)
    print(f"\n{args.run_dir}: {cfg.env.name}, eval.budget={cfg.eval.budget}, trained with {trained_with}")
    print(table)
    record = {
        "run_dir": args.run_dir,
        "env": cfg.env.name,
        "budget": cfg.eval.budget,
        "trained_with": trained_with,
        "overrides": args.set,
        "rows": rows,
    }
    write_json(args.out, record)


if __name__ == "__main__":
    main()
