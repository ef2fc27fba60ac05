"""Milliseconds per update and per batched `act` of agent families, side by side in one process.

Builds each experiment's agent for its env's sizes, fills a replay with random transitions (no
physics in the timed part), and times jitted chunks of `--updates` updates (`lax.scan` of
`agent.sample` + `agent.update`, as the online loop runs them) and of `--acts` calls of `act` on
`data.num_envs` envs, after one compile each; prints the ratio of every row to the first. The
online loop's cost per 100k env steps follows: updates x ms/update + decisions x ms/act (+ physics,
evaluation and compilation, which `benchmarks/dmc.py` reports per run).

    python benchmarks/agent_speed.py [--experiments dmc_cartpole_swingup,dreamer_cartpole_swingup]
        [--updates 20] [--acts 50] [--repeats 3] [--set key=value ...] [--out benchmarks/results/agent_speed.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from record import write_json

from ami import online, replay
from ami.config import load_experiment
from ami.evaluate import observe
from ami.run import build

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def random_replay(agent, env, num_envs: int, steps: int, key: jax.Array) -> replay.ReplayState:
    """A replay of `num_envs` streams of `steps` random transitions shaped like `env`'s, episodes of 500."""
    from ami.train import transition

    states = jax.vmap(env.reset)(jax.random.split(key, num_envs))
    example = jax.eval_shape(lambda s: transition(s, jnp.zeros((num_envs, env.action_size)), s), states)
    k = iter(jax.random.split(key, 8))
    shape = lambda x: (num_envs, steps, *x.shape[1:])  # noqa: E731
    data = jax.tree.map(lambda x: jax.random.normal(next(k), shape(x)).astype(x.dtype), example)
    t = jnp.arange(steps)
    done = jnp.broadcast_to((t % 500 == 499).astype(jnp.float32), (num_envs, steps))
    data = data._replace(done=done, truncated=done, action=jnp.clip(data.action, -1, 1))
    return replay.ReplayState(data, jnp.zeros((), jnp.int32), jnp.asarray(steps, jnp.int32))


def time_fn(fn, args, repeats: int) -> float:
    """Best wall seconds of `repeats` calls of compiled `fn(*args)` (first call compiles, untimed)."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def measure(name: str, updates: int, acts: int, repeats: int, overrides: list[str]) -> dict:
    cfg, env, agent = build(load_experiment(EXPERIMENTS / f"{name}.yaml", overrides))
    n = cfg.data.num_envs
    key = jax.random.key(0)
    state = agent.init(key, n)
    buffer = random_replay(agent, env, n, 4096, key)
    update_chunk = jax.jit(lambda s, k: online._updates(agent, updates, s, buffer, k)[0].learner)
    states = jax.vmap(env.reset)(jax.random.split(key, n))
    step = observe(states, jnp.zeros((n,), bool), agent.spec.goal_conditioned)

    def act_chunk(s, k):
        def body(s, k):
            s, a, _ = agent.act(s, step, k)
            return s, a

        return jax.lax.scan(body, s, jax.random.split(k, acts))[1]

    t_update = time_fn(update_chunk, (state, key), repeats) / updates
    t_act = time_fn(jax.jit(act_chunk), (state, key), repeats) / acts
    s = online.settings(cfg, cfg.env.action_repeat or 1)
    decisions = cfg.online.env_steps // (cfg.env.action_repeat or 1) // n  # batched decisions of the run
    return {
        "experiment": name,
        "agent": cfg.agent.name,
        "ms_per_update": round(1000 * t_update, 2),
        "ms_per_act": round(1000 * t_act, 2),
        "num_envs": n,
        "updates_per_decision": s.updates,
        "minutes_per_run": round((decisions * (s.updates * t_update + t_act)) / 60, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", default="dmc_cartpole_swingup,dreamer_cartpole_swingup")
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--acts", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="for every row")
    parser.add_argument("--out", default="benchmarks/results/agent_speed.json")
    args = parser.parse_args()
    names = [e.strip() for e in args.experiments.split(",")]
    rows = [measure(e, args.updates, args.acts, args.repeats, args.set) for e in names]
    base = rows[0]
    print(
        f"{'experiment':28} {'agent':8} {'ms/update':>9} {'x':>5} {'ms/act':>7} {'x':>5} {'upd/dec':>7} {'min/run':>7}"
    )
    for r in rows:
        print(
            f"{r['experiment']:28} {r['agent']:8} {r['ms_per_update']:9.2f} "
            f"{r['ms_per_update'] / base['ms_per_update']:5.2f} {r['ms_per_act']:7.2f} "
            f"{r['ms_per_act'] / base['ms_per_act']:5.2f} {r['updates_per_decision']:7d} {r['minutes_per_run']:7.1f}"
        )
    print("min/run: updates and acting of one run at the experiment's budget (no physics, evaluation, compile)")
    record = {
        "rows": rows,
        "args": vars(args),
    }
    write_json(args.out, record)


if __name__ == "__main__":
    main()
