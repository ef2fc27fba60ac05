"""Scale-free reward and value heads chosen by return: two-hot, symlog and plain MSE on a reward task learned online.

Each row trains the same online recipe (JEPA world model with reward head, Q ensemble, policy prior, gradient
planning) with `world_model.reward_head` and `value.head` both set to the row's kind, on each seed, and reports
the mean over seeds (std ddof 0) of the learned controller's evaluation return, the random controller's on the
same episodes, the final reward-head error and wall-clock, with the ratio of each row's return gap over random
to the first row's. The default task is the native `pendulum` (rewards in [-16, 0]: a scale where the choice of
head matters; DMC rewards lie in [0, 1]). Writes JSON.

    python benchmarks/heads.py [--heads twohot,symlog,mse] [--seeds 0,1,2] [--env-steps 3000]
        [--set key=value ...] [--out benchmarks/results/heads.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from record import write_json

from ami.config import load_experiment
from ami.run import train

RECIPE = (
    "env.name=pendulum",
    "data.num_envs=2",
    "online.seed_steps=400",
    "online.chunk=100",
    "online.eval_every=1000000",
    "perception.hidden=[64]",
    "perception.activation=elu",
    "world_model.hidden=[64,64]",
    "world_model.activation=elu",
    "world_model.reward_hidden=[64]",
    "world_model.prediction_horizon=3",
    "value.hidden=[64,64]",
    "policy.hidden=[64,64]",
    "train.batch_size=64",
    "eval.budget=small",
    "eval.episodes=8",
)


def run_one(head: str, seed: int, env_steps: int, extra: list[str], root: Path) -> dict:
    overrides = [*RECIPE, f"world_model.reward_head={head}", f"value.head={head}", f"seed={seed}"]
    cfg = load_experiment({}, [*overrides, f"online.env_steps={env_steps}", *extra])
    run_dir = root / f"{head}_s{seed}"
    start = time.perf_counter()
    summary = train(cfg, run_dir, quiet=True)
    wall = time.perf_counter() - start
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    errors = [r["reward_abs_error"] for r in last if "reward_abs_error" in r]
    return {
        "head": head,
        "seed": seed,
        "return": summary["mean_return"],
        "random_return": summary["random_return"],
        "reward_abs_error": errors[-1] if errors else None,
        "wall_s": round(wall, 1),
    }


def aggregate(runs: list[dict], heads: list[str]) -> list[dict]:
    rows = []
    for head in heads:
        mine = [r for r in runs if r["head"] == head]
        ret = np.array([r["return"] for r in mine])
        rnd = np.array([r["random_return"] for r in mine])
        err = [r["reward_abs_error"] for r in mine if r["reward_abs_error"] is not None]
        rows.append(
            {
                "head": head,
                "return": float(ret.mean()),
                "return_std": float(ret.std()),
                "random_return": float(rnd.mean()),
                "gap": float((ret - rnd).mean()),
                "reward_abs_error": float(np.mean(err)) if err else None,
                "wall_s": float(np.mean([r["wall_s"] for r in mine])),
                "seeds": len(mine),
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    base = rows[0]["gap"]
    lines = [f"{'head':8} {'return':>18} {'random':>9} {'gap':>8} {'gap ratio':>9} {'|r err|':>8} {'wall s':>7}"]
    for r in rows:
        ret = f"{r['return']:.1f} +- {r['return_std']:.1f}"
        err = f"{r['reward_abs_error']:.4f}" if r["reward_abs_error"] is not None else "-"
        lines.append(
            f"{r['head']:8} {ret:>18} {r['random_return']:9.1f} {r['gap']:8.1f} "
            f"{r['gap'] / base if base else float('nan'):9.2f} {err:>8} {r['wall_s']:7.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", default="twohot,symlog,mse")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--env-steps", type=int, default=3000)
    parser.add_argument("--set", nargs="*", default=[], help="further overrides for every run")
    parser.add_argument("--out", default="benchmarks/results/heads.json")
    args = parser.parse_args()
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as root:
        for seed in seeds:  # seeds outermost: a stopped benchmark has compared every head on the first seeds
            for head in heads:
                runs.append(run_one(head, seed, args.env_steps, args.set, Path(root)))
                r = runs[-1]
                print(f"{head} seed {seed}: {r['return']:.1f} (random {r['random_return']:.1f}, {r['wall_s']} s)")
    rows = aggregate(runs, heads)
    print(f"\nnative pendulum online, {args.env_steps} env steps, seeds {args.seeds}")
    print(format_table(rows))
    record = {
        "env_steps": args.env_steps,
        "recipe": [*RECIPE, *args.set],
        "rows": rows,
        "runs": runs,
    }
    write_json(args.out, record)


if __name__ == "__main__":
    main()
