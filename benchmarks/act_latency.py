"""Agent speed: compile time and per-decision latency of `act`, and world-model updates/s.

`act` is timed on decisions that re-plan (the expensive ones: `replan_every` is forced to 1)
for 1, 64 and 1024 environments, with the quickstart's networks and planner budget. Updates
are timed as jitted chunks of `train.chunk` updates on Two-Rooms data. Each timing is the
median of `--repeats` calls after a warm-up call; compile time is the first call minus it.

    python benchmarks/act_latency.py [--batch-sizes 1 64 1024] [--repeats 5] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp

from ami.config import load_experiment
from ami.evaluate import observe
from ami.run import build
from ami.train import collect, make_train_chunk, to_replay


def timed(fn, *args, repeats: int) -> tuple[float, float]:
    """(first call s, median of `repeats` later calls s)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def act_row(cfg, batch: int, repeats: int) -> dict:
    cfg, env, agent = build(cfg)
    state = agent.init(jax.random.key(0), batch)
    reset = jax.vmap(env.reset)(jax.random.split(jax.random.key(1), batch))
    step = observe(reset, jnp.zeros((batch,), jnp.bool_), agent.spec.goal_conditioned)
    act = jax.jit(agent.act)
    first, steady = timed(act, state, step, jax.random.key(2), repeats=repeats)
    p = cfg.planner
    return {
        "what": "act (re-planning decision)",
        "batch": batch,
        "compile_s": round(first - steady, 2),
        "latency_ms": round(1e3 * steady, 2),
        "decisions_per_s": round(batch / steady, 1),
        "planner": f"{p.name} H={p.horizon} restarts={p.restarts} iterations={p.iterations}",
    }


def update_row(cfg, repeats: int) -> dict:
    cfg, env, agent = build(cfg)
    data = jax.jit(collect, static_argnums=(0, 2, 3, 4))(env, jax.random.key(0), 64, 200, 0.8)
    buffer = to_replay(data)
    chunk = make_train_chunk(cfg, agent)
    state = agent.init(jax.random.key(1), 1)
    start = time.perf_counter()
    state, _ = jax.block_until_ready(chunk(state, buffer, jax.random.key(2)))
    first = time.perf_counter() - start
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        state, _ = jax.block_until_ready(chunk(state, buffer, jax.random.key(3 + i)))
        times.append(time.perf_counter() - start)
    steady = statistics.median(times)
    return {
        "what": "world model + critic updates",
        "batch": cfg.train.batch_size,
        "compile_s": round(first - steady, 2),
        "updates_per_s": round(cfg.train.chunk / steady, 1),
    }


def environment() -> dict:
    versions = {p: metadata.version(p) for p in ("jax", "jaxlib", "flax", "optax")}
    return {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "devices": [str(d) for d in jax.devices()],
        **versions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/quickstart.yaml")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/act_latency.json")
    args = parser.parse_args()
    cfg = load_experiment(args.config, ["planner.replan_every=1"])
    rows = [act_row(cfg, b, args.repeats) for b in args.batch_sizes]
    rows.append(update_row(load_experiment(args.config), args.repeats))
    print(f"{'what':30s} {'batch':>6s} {'compile s':>10s} {'latency ms':>11s} {'per s':>12s}")
    for r in rows:
        rate = r.get("decisions_per_s", r.get("updates_per_s"))
        print(
            f"{r['what']:30s} {r['batch']:6d} {r['compile_s']:10.2f} {r.get('latency_ms', float('nan')):11.2f} "
            f"{rate:12.1f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": environment(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
