"""The `ami` command.

ami envs                        list every environment name `envs.make` accepts
ami rollout NAME [options]      batched random-policy rollout: returns, success, steps/s
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ami", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("envs", help="list environment names").set_defaults(func=_cmd_envs)
    roll = sub.add_parser("rollout", help="batched random-policy rollout of one environment")
    roll.add_argument("name", nargs="?", default="two_rooms")
    roll.add_argument("--num-envs", type=int, default=1024)
    roll.add_argument("--num-steps", type=int, default=200)
    roll.add_argument("--seed", type=int, default=0)
    roll.set_defaults(func=_cmd_rollout)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"ami: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
