"""DMC benchmark: the AMI agent's return on DeepMind Control tasks next to published agents at 100k env steps.

For each task and seed, trains `experiments/dmc_<task>.yaml` with `seed=<s>` into `<runs-dir>/<task>_s<seed>`
(a run dir with checkpoints resumes; one with `summary.json` is not trained again), then reads every run dir
and prints per task: mean +- std over seeds (ddof 0) of the final return and of the eval returns at 25/50/100 %
of the budget (the last eval at or before that step), the random controller's return, wall-clock, env steps/s
and updates/s over the whole run, and its time split (compile estimate: the first online chunk minus the mean of
later chunks of the same kind, seeding or learning; eval: each eval's wall time and the final evaluation).
Reference rows come from ../shared/reference/ (`dmc_returns.csv`: tdmpc2, dreamerv3, sac; and every algorithm of
`dmc_returns_100k_more.csv`). Writes JSON and PNGs of eval return against env steps and wall-clock minutes.

    python benchmarks/dmc.py --tasks cartpole_swingup,pendulum_swingup --seeds 0,1,2 [--env-steps 100000]
        [--set key=value ...] [--runs-dir runs/dmc] [--report-only] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from record import machine

PROTOCOL = (
    "action repeat 2, 1000 control steps per episode (500 decisions), env steps = control steps; "
    "MuJoCo Playground MJX ports (reference rows: original dm_control)"
)
FRACTIONS = (0.25, 0.5, 1.0)
REF_STEPS = 100_000
MAIN_REFS = ("tdmpc2", "dreamerv3", "sac")
PLOT_REFS = ("tdmpc2", "dreamerv3")


def reference_dir() -> Path | None:
    """`shared/reference` beside the checkout (`../shared/reference`), else `shared/` inside it, else None."""
    here = Path(__file__).resolve()
    for path in (here.parents[2] / "shared" / "reference", here.parents[1] / "shared"):
        if (path / "dmc_returns.csv").exists():
            return path
    return None


def references(task: str) -> list[dict] | None:
    """Published mean returns at 100k env steps for `task` (`cartpole_swingup`), or None without the files."""
    ref = reference_dir()
    if ref is None:
        return None
    name, rows = task.replace("_", "-"), []
    for file in ("dmc_returns.csv", "dmc_returns_100k_more.csv"):
        if not (ref / file).exists():
            continue
        with (ref / file).open() as f:
            for r in csv.DictReader(f):
                main = file == "dmc_returns.csv"
                if r["task"] == name and int(r["env_steps"]) == REF_STEPS and (r["algorithm"] in MAIN_REFS or not main):
                    source = file if main else f"{file}: {r['source']}"
                    seeds = int(r["seeds"]) if r["seeds"] else None
                    row = {"algorithm": r["algorithm"], "return": float(r["mean_return"]), "seeds": seeds}
                    rows.append({**row, "source": source})
    return rows


def train_runs(args: argparse.Namespace) -> None:
    """Trains (or resumes, or skips when finished) every task x seed of `args` into `args.runs_dir`."""
    from ami.config import load_experiment
    from ami.run import train

    for task in args.tasks:
        for seed in args.seeds:
            run_dir = Path(args.runs_dir) / f"{task}_s{seed}"
            if (run_dir / "summary.json").exists():
                print(f"{run_dir}: finished, not trained again")
                continue
            overrides = [f"seed={seed}"] + ([f"online.env_steps={args.env_steps}"] if args.env_steps else [])
            cfg = load_experiment(Path("experiments") / f"dmc_{task}.yaml", overrides + args.set)
            print(f"== training {task} seed {seed} into {run_dir}", flush=True)
            summary = train(cfg, run_dir, quiet=args.quiet)
            print(f"{run_dir}: return {summary['mean_return']:.1f} in {summary['wall_time_s']:.0f} s", flush=True)


def read_run(run_dir: Path) -> dict | None:
    """One finished run's numbers from `summary.json`, `config.yaml` and `metrics.jsonl` (None: unfinished).

    Wall times of a resumed run are made cumulative: each `resume` record starts a new clock.
    """
    import yaml

    if not (run_dir / "summary.json").exists():
        return None
    summary = json.loads((run_dir / "summary.json").read_text())
    budget = yaml.safe_load((run_dir / "config.yaml").read_text())["online"]["env_steps"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    offset, prev, curve, compile_s, eval_s, chunks, updates = 0.0, None, {}, 0.0, 0.0, [], 0
    train_curve = {}
    total = summary["wall_time_s"]
    for r in [*records, {"phase": "resume"}]:
        if r["phase"] == "resume":  # closes a segment (one process's clock): its compile estimate
            compile_s += compile_estimate(chunks)
            offset, prev, chunks, updates = prev["wall"] if prev else offset, None, [], 0
            continue
        wall = offset + r["wall_time_s"]
        if r["phase"] == "online":
            since = prev["wall"] if prev else offset
            chunks.append((wall - since, r["updates"] > updates, prev is not None and prev["phase"] == "online"))
            updates = r["updates"]
            if "train_return" in r:
                train_curve[r["env_steps"]] = (r["train_return"], round(wall / 60, 2))
        elif r["phase"] == "eval":
            curve[r["env_steps"]] = (r["return"], round(wall / 60, 2))
        if prev and (r["phase"] == "summary" or (r["phase"] == "eval" and prev["phase"] == "online")):
            eval_s += wall - prev["wall"]
        if r["phase"] == "summary":
            total = offset + summary["wall_time_s"]
        prev = {"phase": r["phase"], "wall": wall}
    at = {f: last_at(curve, f * budget) for f in FRACTIONS}
    return {
        "final": summary["mean_return"],
        "random": summary.get("random_return"),
        "budget": budget,
        "at": at,
        "at_100k": last_at(curve, REF_STEPS) if budget >= REF_STEPS else None,
        "curve": [(s, r) for s, (r, _) in sorted(curve.items())],
        "wall_curve": [(m, r) for _, (r, m) in sorted(curve.items())],
        "train_curve": [(s, r, m) for s, (r, m) in sorted(train_curve.items())],
        "wall_s": total,
        "env_steps": summary["env_steps"],
        "updates": summary["updates"],
        "env_steps_per_s": round(summary["env_steps"] / total, 2),
        "updates_per_s": round(summary["updates"] / total, 2) if summary.get("updates") is not None else None,
        "compile_s": round(compile_s, 1),
        "eval_s": round(eval_s, 1),
    }


def compile_estimate(chunks: list[tuple[float, bool, bool]]) -> float:
    """The first chunk's seconds minus the mean of later chunks of its kind (learning or seeding) that follow
    another chunk directly; `chunks` holds (seconds, learned, follows a chunk) per online record."""
    if not chunks:
        return 0.0
    later = [t for t, learns, direct in chunks[1:] if direct and learns == chunks[0][1]]
    return max(0.0, chunks[0][0] - (float(np.mean(later)) if later else 0.0))


def last_at(curve: dict, step: float) -> float | None:
    """The return of the last evaluation at or before `step`."""
    steps = [s for s in curve if s <= step]
    return curve[max(steps)][0] if steps else None


def stat(values: list) -> str:
    """`mean+-std` over the values that exist, `-` when none does."""
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.1f}+-{np.std(values):.1f}" if values else "-"


def report(task: str, runs: dict[int, dict], refs: list[dict] | None) -> dict:
    """Prints one task's table and returns its JSON entry."""
    print(f"\n== {task} ==")
    heads = ["method", "seeds", "final", "@25%", "@50%", "@100%", "@100k", "random", "wall min", "env st/s", "upd/s"]
    line = "{:<20} {:>5} {:>13} {:>13} {:>13} {:>13} {:>13} {:>11} {:>8} {:>9} {:>7} {:>9} {:>7}"
    print(line.format(*heads, "compile s", "eval s"))
    r = list(runs.values())
    if r:
        budgets = sorted({x["budget"] for x in r})
        returns = [stat([x[k] for x in r]) for k in ("final",)] + [stat([x["at"][f] for x in r]) for f in FRACTIONS]
        returns += [stat([x[k] for x in r]) for k in ("at_100k", "random")]
        wall = f"{np.mean([x['wall_s'] for x in r]) / 60:.1f}"
        means = [
            f"{np.mean([x[k] for x in r]):.1f}" for k in ("env_steps_per_s", "updates_per_s", "compile_s", "eval_s")
        ]
        print(line.format("ami", len(r), *returns, wall, *means))
        print(f"  budget {budgets} env steps, seeds {sorted(runs)}")
    else:
        print("  (no finished runs)")
    if refs is None:
        print("  reference rows unavailable (no shared/reference/dmc_returns.csv)")
    for x in refs or []:
        print(line.format(x["algorithm"], x["seeds"] or "?", *["-"] * 4, f"{x['return']:.1f}", *["-"] * 6))
    return {"seeds": runs, "reference": refs}


def plot(results: dict, path: Path, wallclock: bool = False) -> None:
    """One panel per task: eval return vs env steps (or mean wall-clock minutes at those steps) over the eval
    steps all seeds share, mean over seeds with a min-max band; each seed's training episodes (acting with
    exploration noise, mean per chunk of the episodes that ended in it) as thin lines; and the reference 100k
    figures as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.6), squeeze=False)
    for ax, (task, entry) in zip(axes[0], results.items(), strict=True):
        runs = [
            {s: (r, m) for (s, r), (m, _) in zip(x["curve"], x["wall_curve"], strict=True)}
            for x in entry["seeds"].values()
        ]
        steps = sorted(set.intersection(*(set(c) for c in runs))) if runs else []
        for i, x in enumerate(entry["seeds"].values()):
            train = np.array([(m if wallclock else s, r) for s, r, m in x.get("train_curve", [])]).reshape(-1, 2)
            label = "training episodes (per seed)" if i == 0 else None
            ax.plot(train[:, 0], train[:, 1], lw=0.6, alpha=0.5, color="C0", label=label)
        if steps:
            ys = np.array([[c[s][0] for s in steps] for c in runs])
            xs = np.array([[c[s][1] for s in steps] for c in runs]).mean(0) if wallclock else np.array(steps)
            ax.plot(xs, ys.mean(0), marker="o", label=f"ami ({len(runs)} seeds)")
            ax.fill_between(xs, ys.min(0), ys.max(0), alpha=0.25)
        for ref in entry["reference"] or []:
            if ref["algorithm"] in PLOT_REFS:
                color = f"C{PLOT_REFS.index(ref['algorithm']) + 1}"
                ax.axhline(ref["return"], ls="--", color=color, label=f"{ref['algorithm']} @100k")
        xlabel = "wall-clock minutes" if wallclock else "env steps"
        ax.set(xlabel=xlabel, ylabel="eval return", title=task, ylim=(0, 1000))
        ax.set_xlim(left=0)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="cartpole_swingup,pendulum_swingup")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--env-steps", type=int, default=None, help="online.env_steps (default: the yaml's)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--runs-dir", default="runs/dmc")
    parser.add_argument("--report-only", action="store_true", help="only read existing run dirs")
    parser.add_argument("--quiet", action="store_true", help="no per-chunk progress lines")
    parser.add_argument("--out", default="benchmarks/results", help="folder for dmc.json and the PNGs")
    args = parser.parse_args()
    args.tasks, args.seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    if not args.report_only:
        train_runs(args)
    print(f"\nDMC benchmark, protocol: {PROTOCOL}")
    print("ours: mean+-std over seeds (ddof 0); @X%: last eval at or before X % of the run's budget; @100k: the same")
    print("at 100k env steps (runs of >= 100k only), where the reference rows (published means) stand")
    results = {}
    for task in args.tasks:
        runs = {}
        for run_dir in sorted(Path(args.runs_dir).glob(f"{task}_s*")):
            if not run_dir.name.removeprefix(f"{task}_s").isdigit():  # another task's name, e.g. `<task>_sparse_s0`
                continue
            run = read_run(run_dir)
            if run is None:
                print(f"{run_dir}: unfinished, left out")
            else:
                runs[int(run_dir.name.removeprefix(f"{task}_s"))] = run
        results[task] = report(task, runs, references(task))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"protocol": PROTOCOL, "machine": machine(), "args": vars(args), "tasks": results}
    (out / "dmc.json").write_text(json.dumps(payload, indent=1))
    plot(results, out / "dmc_curves.png")
    plot(results, out / "dmc_curves_wallclock.png", wallclock=True)
    print(f"\nwrote {out / 'dmc.json'}, {out / 'dmc_curves.png'} and {out / 'dmc_curves_wallclock.png'}")


if __name__ == "__main__":
    main()
