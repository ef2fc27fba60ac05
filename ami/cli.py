"""The `ami` command.

ami train CONFIG [key=value ...]   run an experiment into a run directory
ami eval RUN_DIR                   re-evaluate a finished run from its checkpoint
ami plan RUN_DIR [options]         planners on the learned vs the true energy: landscape.json and figures
ami report RUN_DIR [options]       one self-contained HTML page: config, summary, curves, plans, episode videos
ami envs                           list every environment name `envs.make` accepts
ami rollout NAME [options]         batched random-policy rollout: returns, success, steps/s

`ami COMMAND --help` gives each command's options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp

PLAN_PAIRS, PLAN_EPISODES = 8, 2  # `ami plan` defaults: 2-3 minutes on the quickstart run with 2 CPU cores


def _cmd_envs(args: argparse.Namespace) -> int:
    import envs

    for name in envs.registered():
        about = envs.describe(name)
        print(f"{name:32s} {about}" if about else name)
    return 0


def _uniform_policy(action_size: int):
    def policy(obs: jax.Array, key: jax.Array) -> jax.Array:
        del obs
        return jax.random.uniform(key, (action_size,), minval=-1.0, maxval=1.0)

    return policy


def rollout_summary(name: str, num_envs: int, num_steps: int, seed: int) -> dict:
    """Runs a random policy on `num_envs` copies of `name`; returns timings and statistics."""
    import envs

    env = envs.make(name)
    policy = _uniform_policy(env.action_size)
    key = jax.random.key(seed)
    start = time.perf_counter()
    jax.block_until_ready(envs.rollout(env, policy, key, num_envs, num_steps))
    first = time.perf_counter() - start
    start = time.perf_counter()
    traj = jax.block_until_ready(envs.rollout(env, policy, jax.random.fold_in(key, 1), num_envs, num_steps))
    run = time.perf_counter() - start
    episodes = jnp.sum(traj.done)
    summary = {
        "env": name,
        "num_envs": num_envs,
        "num_steps": num_steps,
        "compile_s": round(first - run, 3),
        "run_s": round(run, 4),
        "env_steps_per_s": round(num_envs * num_steps / run, 1),
        "episodes_finished": int(episodes),
        "mean_reward_per_step": float(jnp.mean(traj.reward)),
        "all_finite": bool(jnp.all(jnp.isfinite(traj.reward))),
    }
    return summary


def _cmd_rollout(args: argparse.Namespace) -> int:
    summary = rollout_summary(args.name, args.num_envs, args.num_steps, args.seed)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import shlex

    from ami.config import load_experiment
    from ami.preemption import PreemptedError
    from ami.run import train

    cfg = load_experiment(args.config, args.overrides)
    run_dir = args.run_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{_stem(args.config)}"
    print(f"ami train: run directory {run_dir}", flush=True)
    try:
        summary = train(cfg, run_dir, quiet=args.quiet)
    except PreemptedError as stopped:
        again = shlex.join(["ami", "train", args.config, "--run-dir", str(run_dir), *args.overrides])
        print(f"ami train: stopped by {stopped}; continue with: {again}", flush=True)
        return 0
    if cfg.log.report and summary.get("status") != "unfinished":
        _report_after_training(run_dir)
    print(json.dumps({k: v for k, v in summary.items() if k != "controllers"}, indent=2))  # last: for scripts
    return 0


def _report_after_training(run_dir: str) -> None:
    """`RUN_DIR/report.html` at the end of `ami train` (process 0); a failure is a warning, the run is kept."""
    from ami import distributed
    from ami.report import write_report

    if not distributed.is_writer():
        return
    print("ami train: writing the report (log.report=false skips it)", flush=True)
    try:
        path = write_report(run_dir)
    except Exception as error:  # the run and its summary are written; the page is a view of them
        print(f"ami train: no report ({type(error).__name__}: {error}); try `ami report {run_dir}`", file=sys.stderr)
        return
    print(f"ami train: report {path}", flush=True)


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ami.replan import load_run
    from ami.run import evaluate_run

    cfg, agent, state = load_run(args.run_dir, args.overrides)
    results = evaluate_run(cfg, agent, state, cfg.eval.controllers if args.all else ("learned",))
    key, metric = ("success_rate", "success_rate") if agent.spec.goal_conditioned else ("mean_return", "return")
    out = {key: results["learned"][metric], "controllers": results}
    summary_path = Path(args.run_dir) / "summary.json"
    if summary_path.exists():
        out[f"trained_{key}"] = json.loads(summary_path.read_text())[key]
    print(json.dumps(out, indent=2))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ami.diagnostics import output, plots, report

    try:
        plots.pyplot()  # fail before any work when matplotlib is missing
    except ImportError as e:
        print(f"ami: error: {e}", file=sys.stderr)
        return 2
    planners = [p.strip() for p in args.planners.split(",") if p.strip()] if args.planners else None
    fallback = None if args.fallback == "none" else args.fallback
    out_dir = Path(args.out) if args.out else Path(args.run_dir) / "plan"
    record = report.report(args.run_dir, planners, args.pairs, args.episodes, fallback)
    record = output.jsonable(record)
    paths = output.write(record, out_dir) + plots.write_figures(record, out_dir)
    print(output.format_table(record["table"]))
    print(f"ami plan: {record['wall_time_s']} s; wrote {', '.join(str(p) for p in paths)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ami.report import write_report

    path = write_report(
        args.run_dir,
        out=args.out,
        episodes=args.episodes,
        video=not args.no_video,
        video_format=args.video_format,
        max_steps=args.max_steps,
        clips_dir=args.clips,
    )
    print(f"ami report: wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ami", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser(
        "train",
        help="run an experiment config",
        description="Trains and evaluates an experiment into a run directory (config.yaml, metrics.jsonl, "
        "tensorboard/, checkpoints/, summary.json, report.html). The same command on a run directory that "
        "holds checkpoints of the same config continues it; SIGTERM or Ctrl-C saves and exits 0.",
    )
    tr.add_argument("config", help="experiment YAML, e.g. experiments/quickstart.yaml")
    tr.add_argument("overrides", nargs="*", help="dotted overrides, e.g. planner.horizon=40")
    tr.add_argument("--run-dir", default=None, help="where to write the run (default runs/<time>-<config>)")
    tr.add_argument("--quiet", action="store_true", help="print only the summary (no progress bars or lines)")
    tr.set_defaults(func=_cmd_train)
    ev = sub.add_parser(
        "eval",
        help="re-evaluate a finished run from its checkpoint",
        description="Reloads RUN_DIR's newest checkpoint and evaluates the learned controller on the run's "
        "evaluation episodes (all of eval.controllers with --all), optionally re-planned with other settings.",
    )
    ev.add_argument("run_dir", help="a run directory written by `ami train`")
    ev.add_argument("--all", action="store_true", help="every controller in eval.controllers, not only the learned one")
    replan = "planner.*, cost.* or eval.* overrides to re-plan with, e.g. planner.name=cem eval.budget=large"
    ev.add_argument("overrides", nargs="*", help=replan)
    ev.set_defaults(func=_cmd_eval)
    pl = sub.add_parser(
        "plan",
        help="planners on the learned vs the true energy of a finished run",
        description="Runs planners on the learned and the true energy of a finished run: a table, "
        "landscape.json and figures in RUN_DIR/plan (needs matplotlib: pip install 'ami[plot]').",
    )
    pl.add_argument("run_dir", help="a finished run directory written by `ami train`")
    names = "comma-separated planner names (default: every registered one); 'run' is the run's own planner"
    pl.add_argument("--planners", default=None, help=names)
    pl.add_argument("--pairs", type=_positive, default=PLAN_PAIRS, help="start/goal pairs planned and sliced")
    pl.add_argument("--episodes", type=_positive, default=PLAN_EPISODES, help="evaluation episodes per planner")
    pl.add_argument("--out", default=None, help="output folder (default RUN_DIR/plan)")
    fallback = "planner used by gradient planners where the true gradient is unhealthy (if registered), or 'none'"
    pl.add_argument("--fallback", default="cem", help=fallback)
    pl.set_defaults(func=_cmd_plan)
    rep = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run (RUN_DIR/report.html)",
        description="Writes one HTML page that loads nothing from the network: the resolved config, the summary "
        "(or that the run is unfinished), learning curves from metrics.jsonl against env steps or updates and "
        "against wall-clock time, ami plan's figures when it has run, and clips of evaluation episodes played by "
        "the agent reloaded from the newest checkpoint (on Two-Rooms with the planner's path drawn over them).",
    )
    rep.add_argument("run_dir", help="a run directory written by `ami train` (finished or not)")
    rep.add_argument("--out", default=None, help="where to write the page (default RUN_DIR/report.html)")
    rep.add_argument("--episodes", type=_positive, default=2, help="evaluation episodes filmed, batched (default 2)")
    rep.add_argument("--no-video", action="store_true", help="no clips: the page without reloading the agent")
    formats = "clip format: webm (VP9, needs imageio-ffmpeg), webp or gif (Pillow); auto: webm if installed, else webp"
    rep.add_argument("--video-format", default="auto", choices=("auto", "webm", "webp", "gif"), help=formats)
    steps = "cut the filmed episodes to this many agent steps (default: the whole episode)"
    rep.add_argument("--max-steps", type=_positive, default=None, help=steps)
    rep.add_argument("--clips", default=None, help="also save each clip as a file in this folder (episode_<i>.<fmt>)")
    rep.set_defaults(func=_cmd_report)
    about_envs = "Lists every environment name `ami train` and `envs.make` accept, with one line each."
    sub.add_parser("envs", help="list environment names", description=about_envs).set_defaults(func=_cmd_envs)
    roll = sub.add_parser(
        "rollout",
        help="batched random-policy rollout of one environment",
        description="Steps NUM_ENVS copies of an environment with uniform random actions (jitted, vmapped, "
        "lax.scan) and prints returns, episodes, success and env steps/s as JSON.",
    )
    roll.add_argument("name", nargs="?", default="two_rooms", help="an environment name from `ami envs`")
    roll.add_argument("--num-envs", type=_positive, default=1024, help="environments stepped in one batch")
    roll.add_argument("--num-steps", type=_positive, default=200, help="steps per environment")
    roll.add_argument("--seed", type=int, default=0, help="PRNG seed of resets and actions")
    roll.set_defaults(func=_cmd_rollout)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and (args.func not in (_cmd_train, _cmd_eval) or any(x.startswith("-") or "=" not in x for x in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # overrides after --run-dir: `ami train CONFIG --run-dir DIR key=value`
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except ValueError as e:
        print(f"ami: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
