"""Compounding errors and re-planning: does energy minimisation with re-planning correct what
autoregressive prediction gets wrong?

Per trained run (goal or reward task), two measurements from one process:

(a) **Prediction error against horizon.** `--trajectories` true trajectories of `max(--horizons)`
    steps from fresh resets, driven by the smooth random actions the offline runs explore with
    (`ami.train.collect` with the run's `data.smoothing`; the env's time limit is lifted so no
    trajectory ends early). The world model is unrolled from the embedding of the first
    observation under the same actions, and compared with the embeddings of the observations
    that really followed (`ami.diagnostics.compounding`): `e_h = ||zhat_h - z_h||^2 / D`,
    divided by the mean per-dimension variance of the true embeddings (1 = no better than
    predicting the mean latent). The ground truth has no error by definition; its column is
    the constant predictor `zhat_h = z_0`, i.e. how far the true latent moves in h steps.
    Mean, median and quartiles over the trajectories.

(b) **One plan executed open loop against re-planning.** At each planner horizon H of
    `--plan-horizons` the run is re-planned (`ami.replan.replan_config`; nothing trained
    changes) and evaluated on the same `--episodes` episodes (the run's eval seed) with
    `planner.replan_every = H` (*open loop*: each plan is executed to its end before the
    next one is made, so the agent never sees the consequence of an action before H steps
    have passed) and `planner.replan_every = 1` (*receding horizon*: re-planned at every
    step from the observed state, warm-started from the shifted previous plan). The
    controllers are `learned` (the planner over the world model) and `true_dynamics` (the
    ground-truth twin: the same planner, energy and heads over the real simulator), so the
    twin's gap between open loop and re-planning is what the planner alone loses and the
    learned model's gap adds its prediction error. Reported: `success_any`, `success_final`
    and `final_distance` on goal tasks, the mean return on reward tasks, energy evaluations
    per plan (one plan at the episodes' first state), compile and run seconds and ms per
    batched plan. The twin runs on `--twin-episodes` episodes, the first of the learned
    controller's (the same starts and goals: `jax.random.split` gives the same first keys
    whatever the count). The run's own `(planner.horizon, planner.replan_every)` is evaluated too, as a
    reference (`every_R` rows), where it is neither of the two.

    A run with an amortised policy (`policy.enabled`, the DMC runs) was trained for its
    planner horizon, which cannot be overridden; there the horizon stays fixed and the rows
    vary the open-loop length instead: `replan_every = R` for R in {1, 2, H} and the
    `--plan-horizons` below H (R steps of each H-step plan are executed before re-planning).

    python benchmarks/compounding.py runs/quickstart runs/reacher_goal runs/cartpole_30k \\
        [--horizons 1,2,4,8,16,32,64] [--plan-horizons 4,8,16,32] [--episodes 64] \\
        [--twin-episodes 16] [--out benchmarks/results/compounding.json] [--figure docs/compounding.png]

Prints the tables, writes the JSON (`benchmarks/record.py`; each run's record keeps the settings
it was measured with) and the figure. With `--merge` the runs already in `--out` are kept, so
runs of different cost can be measured one at a time with their own episode counts.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from record import write_json

import envs
from ami import configlib
from ami.config import ExperimentConfig
from ami.diagnostics import compounding
from ami.evaluate import run_episodes
from ami.replan import load_run, replan_config
from ami.run import build, make_env
from ami.train import collect

QUANTILES = (0.25, 0.5, 0.75)


# ----- (a) prediction error against horizon -----


def true_trajectories(cfg: ExperimentConfig, key: jax.Array, num: int, length: int) -> tuple[jax.Array, jax.Array]:
    """`num` trajectories of `length` steps with the run's smooth random exploration actions:
    `obs [N, T+1, ...]`, `actions [N, T, A]` (an env without auto-reset whose time limit is past `length`)."""
    e = cfg.env
    env = envs.make(
        e.name,
        episode_length=max(length, e.episode_length) + 1,
        action_repeat=e.action_repeat,
        auto_reset=False,
        **e.kwargs,
    )
    data = jax.jit(partial(collect, env, num_envs=num, num_steps=length, smoothing=cfg.data.smoothing))(key)
    obs = jnp.concatenate([data.obs[:1], data.next_obs], axis=0)  # [T+1, N, ...]
    return jnp.swapaxes(obs, 0, 1), jnp.swapaxes(data.action, 0, 1)


def summarise(values: np.ndarray) -> dict:
    """Mean, median and quartiles over trajectories of `values [N, K]`: lists of K numbers each."""
    q25, q50, q75 = np.quantile(values, QUANTILES, axis=0)
    return {"mean": _r(values.mean(0)), "median": _r(q50), "q25": _r(q25), "q75": _r(q75)}


def _r(x) -> list:
    return [float(f"{v:.4g}") for v in np.asarray(x)]


def prediction_record(cfg, agent, state, horizons: list[int], num: int, key: jax.Array) -> dict:
    m, params = agent.modules, state.learner.params
    obs, actions = true_trajectories(cfg, key, num, max(horizons))
    encode = partial(m.perception.encode, params.encoder)
    rollout = partial(m.world_model.rollout, params.predictor)
    errors, scale = jax.jit(lambda o, a: compounding.normalised_errors(encode, rollout, o, a, horizons))(obs, actions)
    return {
        "horizons": horizons,
        "trajectories": num,
        "latent_scale": float(scale),
        "model": summarise(np.asarray(errors.model)),
        "constant": summarise(np.asarray(errors.constant)),
    }


# ----- (b) open loop against receding horizon -----


def control_settings(cfg: ExperimentConfig, plan_horizons: list[int]) -> list[tuple[int, int]]:
    """The `(horizon, replan_every)` pairs to evaluate for a run (module docstring)."""
    steps = cfg.env.episode_length
    if cfg.policy.enabled:
        h = cfg.planner.horizon
        return [(h, r) for r in sorted({1, 2, h, *(k for k in plan_horizons if k < h)})]
    usable = [h for h in plan_horizons if h <= steps]
    pairs = [(h, r) for h in usable for r in (h, 1)]
    own = (cfg.planner.horizon, cfg.planner.replan_every)  # the run's own setting, as a reference
    return pairs if own in pairs else [*pairs, own]


def mode_name(horizon: int, replan_every: int) -> str:
    if replan_every == horizon:
        return "open_loop"
    return "receding" if replan_every == 1 else f"every_{replan_every}"


def control_row(run_dir, saved, state, horizon, replan_every, controller, episodes) -> dict:
    overrides = [f"planner.replan_every={replan_every}"]
    if not saved.policy.enabled:
        overrides.append(f"planner.horizon={horizon}")
    cfg, _, agent = build(replan_config(saved, overrides))
    env = make_env(cfg, auto_reset=False)
    steps = cfg.env.episode_length
    run = jax.jit(partial(run_episodes, agent, env=env, num_episodes=episodes, num_steps=steps, controller=controller))
    key = jax.random.key(cfg.eval.seed)
    start = time.perf_counter()
    compiled = run.lower(state, key=key).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = {k: float(v) for k, v in jax.block_until_ready(compiled(state, key=key)).items()}
    run_s = time.perf_counter() - start
    plans = math.ceil(steps / replan_every)
    row = {
        "run": str(run_dir),
        "controller": controller,
        "mode": mode_name(horizon, replan_every),
        "horizon": horizon,
        "replan_every": replan_every,
        "episodes": episodes,
        "steps": steps,
        **{k: round(v, 4) for k, v in out.items()},
        "evaluations_per_plan": plan_evaluations(agent, state, env, key),
        "plans_per_episode": plans,
        "compile_s": round(compile_s, 1),
        "run_s": round(run_s, 1),
        "ms_per_plan": round(1e3 * run_s / plans, 1),
    }
    return row


def plan_evaluations(agent, state, env, key: jax.Array) -> int:
    """Energy evaluations of one learned plan from the first evaluation episode's start (the twin
    runs the same planner with the same settings)."""
    m, params = agent.modules, state.learner.params
    first = env.reset(jax.random.split(jax.random.split(key)[0], 1)[0])
    z = m.perception.encode(params.encoder, first.obs[None])
    goal = m.perception.encode(params.encoder, first.info[envs.GOAL_OBS][None]) if m.goal_task else None
    init = jnp.zeros((1, *m.planner.space.shape))
    return int(jax.jit(agent.plan)(params, z, goal, init, jax.random.key(0)).evaluations[0])


# ----- tables and figure -----


def print_prediction(name: str, rec: dict) -> None:
    print(f"\n{name}: normalised latent prediction error (mean [q25, q75] over {rec['trajectories']} trajectories)")
    print(f"{'h':>4} {'model':>26} {'constant z_0':>26}")
    m, c = rec["model"], rec["constant"]
    for i, h in enumerate(rec["horizons"]):
        print(
            f"{h:>4} {m['mean'][i]:>10.4g} [{m['q25'][i]:.3g}, {m['q75'][i]:.3g}]".ljust(31)
            + f" {c['mean'][i]:>10.4g} [{c['q25'][i]:.3g}, {c['q75'][i]:.3g}]"
        )


def print_control(name: str, rows: list[dict]) -> None:
    print(f"\n{name}: open loop against re-planning")
    head = f"{'controller':<14} {'H':>3} {'R':>3} {'mode':<10} {'any':>6} {'final':>6} {'dist':>7} {'return':>9}"
    print(head + f" {'evals':>6} {'ms/plan':>8} {'run s':>7}")
    for r in rows:
        cells = [f"{r[k]:.3f}" if k in r else "-" for k in ("success_any", "success_final", "final_distance")]
        print(
            f"{r['controller']:<14} {r['horizon']:>3} {r['replan_every']:>3} {r['mode']:<10} {cells[0]:>6} "
            f"{cells[1]:>6} {cells[2]:>7} {r['return']:>9.2f} {r['evaluations_per_plan']:>6} {r['ms_per_plan']:>8.1f} "
            f"{r['run_s']:>7.1f}"
        )


def plot(record: dict, path: Path) -> None:
    from ami.diagnostics.plots import pyplot

    plt = pyplot()
    runs = record["runs"]
    cols = 2 if len(runs) > 1 else 1 + len(runs)
    rows = math.ceil((1 + len(runs)) / cols)
    fig, grid = plt.subplots(rows, cols, figsize=(6 * cols, 4.5 * rows), squeeze=False)
    axes = grid.reshape(-1)
    for ax in axes[1 + len(runs) :]:
        ax.set_visible(False)
    ax = axes[0]
    for i, (name, run) in enumerate(runs.items()):
        p, color = run["prediction"], f"C{i}"
        h = np.asarray(p["horizons"])
        ax.plot(h, p["model"]["median"], marker="o", color=color, label=f"{name}: model")
        ax.fill_between(h, p["model"]["q25"], p["model"]["q75"], color=color, alpha=0.15)
        ax.plot(h, p["constant"]["median"], ls="--", color=color, label=f"{name}: constant z_0")
    ax.set(xscale="log", yscale="log", xlabel="prediction horizon h (steps)", title="latent prediction error")
    ax.set_ylabel("error / mean latent variance (median, quartiles)")
    ax.legend(fontsize=7)
    for ax, (name, run) in zip(axes[1 : 1 + len(runs)], runs.items(), strict=True):
        metric = run["metric"]
        fixed = run["fixed_horizon"]
        for j, controller in enumerate(("learned", "true_dynamics")):
            mine = [r for r in run["control"] if r["controller"] == controller]
            if not mine:
                continue
            if fixed:
                pts = sorted((r["replan_every"], r[metric]) for r in mine)
                ax.plot(*zip(*pts, strict=True), marker="o", color=f"C{j}", label=controller)
                continue
            for mode, ls in (("open_loop", "-"), ("receding", "--")):
                pts = sorted((r["horizon"], r[metric]) for r in mine if r["mode"] == mode)
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", ls=ls, color=f"C{j}", label=f"{controller} {mode}")
            for r in mine:
                if r["mode"] not in ("open_loop", "receding"):
                    label = f"{controller} re-planning every {r['replan_every']} (the run's own)"
                    ax.plot([r["horizon"]], [r[metric]], marker="*", ms=12, ls="", color=f"C{j}", label=label)
        xlabel = f"steps executed per plan (H = {run['horizon']})" if fixed else "planner horizon H"
        ax.set_xscale("log", base=2)
        ax.set(xlabel=xlabel, ylabel=metric, title=name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


# ----- main -----


def row_key(row: dict) -> tuple:
    return row["controller"], row["horizon"], row["replan_every"], row["episodes"]


def measure_run(run_dir: str, args, report, previous: dict | None = None) -> dict:
    """Run `run_dir`'s record; the control rows of `previous` (an earlier record of the same run)
    with the same controller, horizon, interval and episodes are kept instead of measured again."""
    saved = configlib.load(ExperimentConfig, Path(run_dir) / "config.yaml")
    cfg, agent, state = load_run(run_dir)
    name = Path(run_dir).name
    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    prediction = prediction_record(cfg, agent, state, args.horizons, args.trajectories, key)
    prediction["wall_s"] = round(time.perf_counter() - t0, 1)
    print_prediction(name, prediction)
    goal = agent.spec.goal_conditioned
    controllers = [c for c in args.controllers if c != "true_dynamics" or args.twin_episodes > 0]
    kept = {row_key(r): r for r in (previous or {}).get("control", [])}
    rows = []
    for horizon, every in control_settings(cfg, args.plan_horizons):
        for controller in controllers:
            twin_receding = controller == "true_dynamics" and every == 1 and not cfg.policy.enabled
            if twin_receding and horizon not in args.twin_receding_horizons:
                continue  # the twin's re-planning costs H simulated steps per evaluation, every step
            episodes = args.twin_episodes if controller == "true_dynamics" else args.episodes
            old = kept.get((controller, horizon, every, episodes))
            rows.append(old or control_row(run_dir, saved, state, horizon, every, controller, episodes))
            if old is None:
                report(rows[-1])
    print_control(name, rows)
    return {
        "env": cfg.env.name,
        "goal_task": goal,
        "metric": f"success_{cfg.eval.success}" if goal else "return",
        "horizon": cfg.planner.horizon,
        "run_replan_every": cfg.planner.replan_every,
        "fixed_horizon": bool(cfg.policy.enabled),
        "planner": {"name": cfg.planner.name, "restarts": cfg.planner.restarts, "iterations": cfg.planner.iterations},
        "prediction": prediction,
        "control": rows,
    }


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="trained run directories")
    parser.add_argument("--horizons", type=ints, default=ints("1,2,4,8,16,32,64"), help="prediction horizons")
    parser.add_argument("--plan-horizons", type=ints, default=ints("4,8,16,32"), help="planner horizons H")
    parser.add_argument("--trajectories", type=int, default=256, help="true trajectories for the prediction error")
    parser.add_argument("--episodes", type=int, default=64, help="evaluation episodes of the learned controller")
    parser.add_argument("--twin-episodes", type=int, default=16, help="episodes of the twin (0: no twin)")
    twin = "planner horizons at which the twin also re-plans every step (default: all; it runs open loop at all)"
    parser.add_argument("--twin-receding-horizons", type=ints, default=None, help=twin)
    parser.add_argument("--controllers", type=lambda s: s.split(","), default=["learned", "true_dynamics"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the prediction trajectories")
    parser.add_argument("--out", default="benchmarks/results/compounding.json")
    parser.add_argument("--figure", default="docs/compounding.png")
    merge = (
        "keep the runs already in --out, and of a run measured again the rows already measured with the same "
        "settings (so runs can be measured one invocation at a time, each with its own episode counts)"
    )
    parser.add_argument("--merge", action="store_true", help=merge)
    args = parser.parse_args()
    if args.twin_receding_horizons is None:
        args.twin_receding_horizons = args.plan_horizons
    out = Path(args.out)
    runs = json.loads(out.read_text())["runs"] if args.merge and out.exists() else {}
    settings = {k: v for k, v in vars(args).items() if k not in ("run_dirs", "out", "figure", "merge")}
    for run_dir in args.run_dirs:
        start = time.perf_counter()
        name = Path(run_dir).name
        record = measure_run(run_dir, args, report=lambda row: print(row, flush=True), previous=runs.get(name))
        record["settings"] = settings
        record["invocation_s"] = round(time.perf_counter() - start, 1)  # rows kept by --merge cost nothing here
        spent = sum(r["compile_s"] + r["run_s"] for r in record["control"]) + record["prediction"]["wall_s"]
        record["measured_s"] = round(spent, 1)  # prediction + every row's compile and run, whenever measured
        runs[name] = record
    write_json(out, {"runs": runs})
    plot({"runs": runs}, Path(args.figure))


if __name__ == "__main__":
    main()
