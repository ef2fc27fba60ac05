"""Agents side by side on one task: same env, budget, seeds, protocol and run directory layout.

    python benchmarks/compare.py --task dmc/CartpoleSwingup --env-steps 100000 \
        --agents ami,tdmpc2,dreamer,ppo,sac --seeds 3 [--runs-dir runs/compare] [--report-only]

Each agent is an experiment file: `ami` is `experiments/dmc_<task>.yaml`, the others
`experiments/<agent>_<task>.yaml` (`<task>`: `cartpole_swingup` for `dmc/CartpoleSwingup`); where a
task has no file of its own, the agent's cartpole-swingup file runs with `env.name=<task>` (one
recipe per agent across tasks). Runs go to `<runs-dir>/<task>/<agent>_s<seed>` with `seed=<seed>`
and `online.env_steps=<env-steps>`; a finished run (with `summary.json`) is read, not trained again;
an unfinished one of the agent contract resumes from its checkpoints (Brax's PPO and SAC restart).
Agents and seeds run one after another in this process, so every row is measured on the same machine
in the same session. Prints per agent the mean +- std over seeds (ddof 0) of the evaluation return at
25 / 50 / 100 % of the budget (the last evaluation at or before it), the final return, env steps/s,
updates/s and wall-clock minutes, then the reference rows of `../shared/reference/`; writes
`compare_<task>.json` and learning curves against env steps and wall-clock (`compare_<task>*.png`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dmc  # benchmarks/dmc.py: run reading, reference rows, machine record

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TEMPLATE = "cartpole_swingup"
AGENT_FILES = {"ami": "dmc_{task}.yaml"}


def task_slug(env_name: str) -> str:
    """`dmc/CartpoleSwingup` -> `cartpole_swingup`."""
    name = env_name.split("/")[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def experiment(agent: str, env_name: str) -> tuple[Path, list[str]]:
    """The experiment file of `agent` for `env_name`, and the overrides that put it on that task."""
    pattern = AGENT_FILES.get(agent, f"{agent}_{{task}}.yaml")
    own = EXPERIMENTS / pattern.format(task=task_slug(env_name))
    if own.exists():
        return own, []
    template = EXPERIMENTS / pattern.format(task=TEMPLATE)
    if not template.exists():
        raise SystemExit(f"compare: no experiment file for agent {agent!r} ({own.name} or {template.name})")
    return template, [f"env.name={env_name}"]


def train_all(args: argparse.Namespace, slug: str) -> None:
    from ami.config import load_experiment
    from ami.run import train

    for seed in range(args.seeds):
        for agent in args.agents:  # seeds outermost: a stopped comparison has every agent on its first seeds
            run_dir = Path(args.runs_dir) / slug / f"{agent}_s{seed}"
            if (run_dir / "summary.json").exists():
                print(f"{run_dir}: finished, not trained again", flush=True)
                continue
            path, overrides = experiment(agent, args.task)
            overrides += [f"seed={seed}", f"online.env_steps={args.env_steps}", *args.set]
            cfg = load_experiment(path, overrides)
            print(f"== {agent} seed {seed}: {path.name} {' '.join(overrides)} -> {run_dir}", flush=True)
            summary = train(cfg, run_dir, quiet=args.quiet)
            print(f"{run_dir}: return {summary['mean_return']:.1f} in {summary['wall_time_s']:.0f} s", flush=True)


def read_agent(root: Path, agent: str) -> dict[int, dict]:
    runs = {}
    for run_dir in sorted(root.glob(f"{agent}_s*")):
        seed = run_dir.name.removeprefix(f"{agent}_s")
        if seed.isdigit() and (run := dmc.read_run(run_dir)) is not None:
            runs[int(seed)] = run
    return runs


def mean_of(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs if r.get(key) is not None]
    return f"{np.mean(values):.1f}" if values else "-"


def table(results: dict[str, dict[int, dict]], refs: list[dict] | None) -> str:
    heads = ["agent", "seeds", "@25%", "@50%", "@100%", "final", "env st/s", "upd/s", "wall min"]
    line = "{:<20} {:>5} {:>13} {:>13} {:>13} {:>13} {:>9} {:>7} {:>9}"
    rows = [line.format(*heads)]
    for agent, seeds in results.items():
        r = list(seeds.values())
        if not r:
            rows.append(line.format(agent, 0, *["-"] * 7))
            continue
        at = [dmc.stat([x["at"][f] for x in r]) for f in dmc.FRACTIONS]
        wall = f"{np.mean([x['wall_s'] for x in r]) / 60:.1f}"
        speed = [mean_of(r, "env_steps_per_s"), mean_of(r, "updates_per_s")]
        rows.append(line.format(agent, len(r), *at, dmc.stat([x["final"] for x in r]), *speed, wall))
    for ref in refs or []:
        rows.append(line.format(ref["algorithm"], ref["seeds"] or "?", "-", "-", f"{ref['return']:.1f}", *["-"] * 4))
    return "\n".join(rows)


def plot(results: dict[str, dict[int, dict]], refs: list[dict] | None, path: Path, title: str, wall: bool) -> None:
    """Mean eval return over seeds (min-max band) per agent against env steps or wall-clock minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (agent, seeds) in enumerate(results.items()):
        curves = [
            {s: (r, m) for (s, r), (m, _) in zip(x["curve"], x["wall_curve"], strict=True)} for x in seeds.values()
        ]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not steps:
            continue
        ys = np.array([[c[s][0] for s in steps] for c in curves])
        xs = np.array([[c[s][1] for s in steps] for c in curves]).mean(0) if wall else np.array(steps)
        ax.plot(xs, ys.mean(0), marker="o", color=f"C{i}", label=f"{agent} ({len(curves)} seeds)")
        ax.fill_between(xs, ys.min(0), ys.max(0), color=f"C{i}", alpha=0.2)
    for j, ref in enumerate(r for r in refs or [] if r["algorithm"] in ("tdmpc2", "dreamerv3", "dreamerv3-official")):
        ax.axhline(ref["return"], ls="--", lw=1, color=f"C{len(results) + j}", label=f"{ref['algorithm']} @100k")
    ax.set(xlabel="wall-clock minutes" if wall else "env steps", ylabel="eval return", title=title, ylim=(0, 1000))
    ax.set_xlim(left=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="dmc/CartpoleSwingup")
    parser.add_argument("--env-steps", type=int, default=100_000)
    parser.add_argument("--agents", default="ami,tdmpc2,dreamer,ppo,sac")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="for every run")
    parser.add_argument("--runs-dir", default="runs/compare")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    args.agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    slug = task_slug(args.task)
    if not args.report_only:
        train_all(args, slug)
    results = {agent: read_agent(Path(args.runs_dir) / slug, agent) for agent in args.agents}
    refs = dmc.references(slug)
    print(f"\n{args.task}, {args.env_steps} env steps; protocol: {dmc.PROTOCOL}")
    print("mean+-std over seeds (ddof 0); @X%: last eval at or before X % of the budget; reference rows: @100k")
    print(table(results, refs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"task": args.task, "protocol": dmc.PROTOCOL, "machine": dmc.machine(), "args": vars(args)}
    payload.update(agents=results, reference=refs)
    (out / f"compare_{slug}.json").write_text(json.dumps(payload, indent=1))
    plot(results, refs, out / f"compare_{slug}.png", args.task, wall=False)
    plot(results, refs, out / f"compare_{slug}_wallclock.png", args.task, wall=True)
    print(f"wrote {out / f'compare_{slug}.json'} and the curves beside it")


if __name__ == "__main__":
    main()
