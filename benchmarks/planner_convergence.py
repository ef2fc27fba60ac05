"""Planner convergence on linear-quadratic problems with a closed-form optimum (`ami.diagnostics.lq`).

Every planner at its default options (or `--set name.option=value`), on `--seeds` random,
well-conditioned LQ problems per size, horizons 3-16 and 1-6 action dimensions (the sizes the
DMC tasks plan over), optimum inside the bounds. One batched call plans all seeds of a size.
Per row: the gap `(E - E*) / (E(0) - E*)` of the returned plan (energy recomputed in float64;
0 at the optimum, 1 at zero actions), its maximum and median over seeds, the energy
evaluations per decision, and the milliseconds of one batched call (median of `--repeats`
after a warm-up). The `before` rows are the gradient and hybrid planners with the Adam
descent they had before L-BFGS became their default. Prints a table, writes JSON.

    python benchmarks/planner_convergence.py [--planners gradient,hybrid,cem,icem,mppi] [--seeds 8]
        [--sizes 3x1,8x3,16x6] [--set cem.iterations=12] [--out benchmarks/results/planner_convergence.json]
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from record import write_json

from ami.actor import make_planner
from ami.diagnostics import lq

SIZES = ((3, 1), (3, 3), (3, 6), (8, 1), (8, 3), (8, 6), (16, 1), (16, 3), (16, 6))
TARGETS = {"gradient": 1e-3, "hybrid": 1e-3, "cem": 1e-2, "icem": 1e-2, "mppi": 1e-2}
# the options the gradient and hybrid planners had before L-BFGS became their default
BEFORE = {"gradient": {"optimizer": "adam", "parameterization": "tanh"}, "hybrid": {"optimizer": "adam"}}


def plan_all(planner, problems: list[lq.LQProblem], key: jax.Array):
    """`jit`-ted `plan() -> PlanResult` with a leading axis over `problems` (all of one size, one `r`)."""
    gain = jnp.asarray(np.stack([p.gain for p in problems]), jnp.float32)
    free_x0 = jnp.asarray(np.stack([p.free_x0 for p in problems]), jnp.float32)
    keys = jax.random.split(key, len(problems))
    r = problems[0].r

    def one(g, f, k):
        return planner.optimize(lambda a: lq.stacked_energy(g, f, r, a), k)

    return jax.jit(lambda: jax.vmap(one)(gain, free_x0, keys))


def row(label: str, name: str, options: dict, size: tuple[int, int], seeds: int, repeats: int) -> dict:
    """One planner on `seeds` problems of `size = (H, A)`: gaps, evaluations and batched wall time."""
    horizon, action_size = size
    problems = [lq.make_problem(seed, horizon, action_size) for seed in range(seeds)]
    planner = make_planner(name, horizon=horizon, action_size=action_size, **options)
    plan = plan_all(planner, problems, jax.random.key(0))
    result = jax.block_until_ready(plan())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(plan())
        times.append(time.perf_counter() - start)
    gaps = [lq.exact_gap(p, np.asarray(a)) for p, a in zip(problems, result.actions, strict=True)]
    return {
        "planner": label,
        "horizon": horizon,
        "action_size": action_size,
        "options": options,
        "gap_max": max(gaps),
        "gap_median": statistics.median(gaps),
        "evaluations": int(result.evaluations[0]),
        "ms_per_call": 1e3 * statistics.median(times),
        "seeds": seeds,
        "condition_max": max(p.condition for p in problems),
    }


def parse_sets(sets: list[str]) -> dict[str, dict]:
    """`["cem.iterations=12", ...]` -> `{"cem": {"iterations": 12}}` (values as Python literals)."""
    options: dict[str, dict] = {}
    for item in sets:
        key, _, value = item.partition("=")
        name, _, option = key.partition(".")
        if not option or not value:
            raise SystemExit(f"--set {item!r}: expected planner.option=value")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        options.setdefault(name, {})[option] = parsed
    return options


def variants(names: list[str], sets: dict[str, dict], before: bool) -> list[tuple[str, str, dict]]:
    """`(label, planner, options)` per row group: each planner at its defaults (+ `--set`), and the
    Adam `before` rows of the planners with a gradient descent."""
    out = []
    for name in names:
        options = sets.get(name, {})
        if before and name in BEFORE:
            out.append((f"{name} (adam, before)", name, {**options, **BEFORE[name]}))
        out.append((name, name, options))
    return out


def print_table(rows: list[dict]) -> None:
    print(f"{'planner':24} {'H':>3} {'A':>2} {'gap max':>9} {'median':>9} {'target':>7} {'evals':>6} {'ms':>8}")
    for r in rows:
        target = TARGETS.get(r["planner"].split(" ")[0])
        mark = "" if target is None or "before" in r["planner"] else (" ok" if r["gap_max"] <= target else " MISS")
        print(
            f"{r['planner']:24} {r['horizon']:>3} {r['action_size']:>2} {r['gap_max']:>9.1e} {r['gap_median']:>9.1e}"
            f" {target or float('nan'):>7.0e} {r['evaluations']:>6} {r['ms_per_call']:>8.1f}{mark}"
        )


def convergence_rows(names, sets, sizes, seeds, repeats, before=True, report=print) -> list[dict]:
    rows = []
    for label, name, options in variants(names, sets, before):
        for size in sizes:
            rows.append(row(label, name, options, size, seeds, repeats))
            report(rows[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--planners", default="gradient,hybrid,cem,icem,mppi")
    parser.add_argument("--sizes", default=",".join(f"{h}x{a}" for h, a in SIZES), help="HxA,...")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="PLANNER.OPTION=VALUE")
    parser.add_argument("--no-before", action="store_true", help="leave out the Adam rows")
    parser.add_argument("--out", default="benchmarks/results/planner_convergence.json")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]

    def report(r: dict) -> None:
        print(f"{r['planner']} H={r['horizon']} A={r['action_size']}: gap {r['gap_max']:.1e}", flush=True)

    names, sets = args.planners.split(","), parse_sets(args.set)
    rows = convergence_rows(names, sets, sizes, args.seeds, args.repeats, not args.no_before, report)
    print_table(rows)
    write_json(args.out, {"args": vars(args), "targets": TARGETS, "rows": rows})


if __name__ == "__main__":
    main()
