"""Environment throughput: `envs.rollout` against a bare `jit(scan(vmap(env.step)))`.

What is measured, per environment and batch size (number of parallel envs):

* rollout: `envs.rollout(env, policy, key, num_envs, num_steps)`, which resets the batch,
  scans the vmapped policy and `env.step` over time and records every transition
  (`Trajectory [T, N, ...]`).
* bare: the same work without the recording, built here on the SAME wrapped env object
  and the SAME policy function: `vmap(env.reset)` on the same reset keys, the same key
  splitting per step, `vmap(policy)` and `vmap(env.step)` scanned over `num_steps`,
  returning one scalar summed from the final state's recorded fields (obs, reward, done,
  truncation, final obs, goal). XLA then drops what neither the next step nor that sum
  reads, exactly as it does inside `envs.rollout`, which returns no state.
  (`--bare-output state` returns the whole final state instead; with MJX physics that
  keeps every derived physics field alive in the loop and is much slower, so it would
  flatter rollout.)

The policy is uniform random in [-1, 1]. Each function is called once to compile
(`compile_s` = first call minus the median steady call), then `--repeats` times,
alternating rollout and bare (the order flips every repeat) so machine noise hits both
alike; `jax.block_until_ready` ends every timed call. Steady time is the median;
steps/s = num_envs * num_steps / median seconds (agent steps; DMC action repeat, if
any, is inside one step).

`--brax-backends` instead compares Brax's physics backends for `brax/reacher`
(`envs.make("brax/reacher", backend=b)`) through `envs.rollout` at batch 64 and 1024,
with the mean reward of the run as a cheap check that the backends simulate the same task.

Run from the repository root:

    python benchmarks/env_throughput.py                     # rollout vs bare, default envs
    python benchmarks/env_throughput.py --brax-backends     # Brax backend comparison
    python benchmarks/env_throughput.py --envs two_rooms --batch-sizes 1 64 --num-steps 500

Results are printed as a table and written as JSON (`--out`, with machine and versions).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import envs

DEFAULT_ENVS = ("two_rooms", "brax/reacher", "dmc/CartpoleSwingup")
DEFAULT_BATCHES = (1, 64, 1024)
DEFAULT_BACKENDS = ("mjx", "generalized", "positional")
BACKEND_BATCHES = (64, 1024)
DEFAULT_OUT = "benchmarks/results/env_throughput.json"
PACKAGES = ("jax", "jaxlib", "brax", "mujoco", "mujoco-mjx", "playground")


def default_num_steps(env_name: str, num_envs: int) -> int:
    """Steps per call: 1000, except physics envs at large batches (keeps the run short)."""
    if env_name.startswith(("brax/", "dmc/")) and num_envs >= 256:
        return 100
    return 1000


def uniform_policy(action_size: int):
    """A policy for one env: actions uniform in [-1, 1], independent of the observation."""

    def policy(obs: jax.Array, key: jax.Array) -> jax.Array:
        del obs
        return jax.random.uniform(key, (action_size,), minval=-1.0, maxval=1.0)

    return policy


def summary(state) -> jax.Array:
    """One scalar from the final-state fields a transition records (obs, reward, done, ...)."""
    info = state.info
    fields = [
        state.obs,
        state.reward,
        state.done,
        info.get(envs.TRUNCATION),
        info.get(envs.FINAL_OBS),
        info.get(envs.GOAL_OBS),
    ]
    return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(fields))


def make_bare(env, policy, num_envs: int, num_steps: int, output: str = "summary"):
    """`jit(scan(vmap(env.step)))`: `envs.rollout`'s work without recording transitions.

    `output="summary"` returns `summary(final state)`, so the same per-step quantities stay
    live as in `envs.rollout`; `"state"` returns the whole final state, which also keeps
    every physics field that neither the next step nor a transition reads.
    """
    step = jax.vmap(env.step)
    act = jax.vmap(policy)

    def run(key: jax.Array):
        k_reset, k_run = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))

        def body(state, key_t):
            return step(state, act(state.obs, jax.random.split(key_t, num_envs))), None

        final, _ = jax.lax.scan(body, state, jax.random.split(k_run, num_steps))
        return summary(final) if output == "summary" else final

    return jax.jit(run)


def make_rollout(env, policy, num_envs: int, num_steps: int):
    """`envs.rollout` with everything but the key fixed (same jit cache entry every call)."""

    def run(key: jax.Array):
        return envs.rollout(env, policy, key, num_envs, num_steps)

    return run


def timed(fn, key: jax.Array) -> tuple[float, object]:
    """(wall seconds of one call until its outputs are ready, the outputs)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(key))
    return time.perf_counter() - start, out


def measure(fns: dict, key: jax.Array, repeats: int) -> dict:
    """First-call and steady (median) seconds of each function, calls interleaved."""
    first = {name: timed(fn, key)[0] for name, fn in fns.items()}
    runs = {name: [] for name in fns}
    outs = {}
    for i in range(repeats):
        order = list(fns) if i % 2 == 0 else list(reversed(fns))
        for name in order:
            seconds, outs[name] = timed(fns[name], key)
            runs[name].append(seconds)
    steady = {name: statistics.median(times) for name, times in runs.items()}
    compile_s = {name: max(first[name] - steady[name], 0.0) for name in fns}
    return {"steady_s": steady, "compile_s": compile_s, "runs_s": runs, "outputs": outs}


def compare_row(env_name: str, num_envs: int, num_steps: int, args: argparse.Namespace) -> dict:
    """One table row: rollout and bare on the same env, batch and step count."""
    env = envs.make(env_name)
    policy = uniform_policy(env.action_size)
    fns = {
        "rollout": make_rollout(env, policy, num_envs, num_steps),
        "bare": make_bare(env, policy, num_envs, num_steps, args.bare_output),
    }
    m = measure(fns, jax.random.key(args.seed), args.repeats)
    steps = num_envs * num_steps
    sps = {name: steps / m["steady_s"][name] for name in fns}
    return {
        "env": env_name,
        "batch": num_envs,
        "num_steps": num_steps,
        "bare_output": args.bare_output,
        "compile_s_rollout": m["compile_s"]["rollout"],
        "compile_s_bare": m["compile_s"]["bare"],
        "steady_s_rollout": m["steady_s"]["rollout"],
        "steady_s_bare": m["steady_s"]["bare"],
        "steps_per_s_rollout": sps["rollout"],
        "steps_per_s_bare": sps["bare"],
        "ratio_rollout_over_bare": sps["rollout"] / sps["bare"],
        "ratio_of_fastest_calls": min(m["runs_s"]["bare"]) / min(m["runs_s"]["rollout"]),
        "runs_s": m["runs_s"],
    }


def backend_row(backend: str, num_envs: int, num_steps: int, repeats: int, seed: int) -> dict:
    """`brax/reacher` on one physics backend through `envs.rollout`: speed and mean reward."""
    env = envs.make("brax/reacher", backend=backend)
    fn = make_rollout(env, uniform_policy(env.action_size), num_envs, num_steps)
    m = measure({"rollout": fn}, jax.random.key(seed), repeats)
    reward = m["outputs"]["rollout"].reward
    return {
        "env": "brax/reacher",
        "backend": backend,
        "batch": num_envs,
        "num_steps": num_steps,
        "compile_s": m["compile_s"]["rollout"],
        "steady_s": m["steady_s"]["rollout"],
        "steps_per_s": num_envs * num_steps / m["steady_s"]["rollout"],
        "mean_reward": float(jnp.mean(reward)),
        "finite": bool(jnp.all(jnp.isfinite(reward))),
        "runs_s": m["runs_s"]["rollout"],
    }


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else `platform.processor()`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """Where the numbers come from: CPU, cores, OS, Python, JAX device and package versions."""
    return {
        "cpu_model": cpu_model(),
        "processor": platform.processor(),
        "uname": " ".join(platform.uname()),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "versions": {p: version(p) for p in PACKAGES},
    }


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """`rows` as a markdown table; `columns` are (header, key, format spec)."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [format(row[k], spec) if spec else str(row[k]) for _, k, spec in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COMPARE_COLUMNS = [
    ("env", "env", ""),
    ("batch", "batch", ""),
    ("num_steps", "num_steps", ""),
    ("compile_s rollout", "compile_s_rollout", ".1f"),
    ("compile_s bare", "compile_s_bare", ".1f"),
    ("steps/s rollout", "steps_per_s_rollout", ",.0f"),
    ("steps/s bare", "steps_per_s_bare", ",.0f"),
    ("rollout/bare", "ratio_rollout_over_bare", ".3f"),
]
BACKEND_COLUMNS = [
    ("backend", "backend", ""),
    ("batch", "batch", ""),
    ("num_steps", "num_steps", ""),
    ("compile_s", "compile_s", ".1f"),
    ("steps/s", "steps_per_s", ",.0f"),
    ("mean reward", "mean_reward", ".4f"),
]


def run_compare(args) -> list[dict]:
    """Rollout-vs-bare rows for every env and batch size, printed as they finish."""
    rows = []
    for env_name in args.envs:
        for num_envs in args.batch_sizes:
            num_steps = args.num_steps or default_num_steps(env_name, num_envs)
            rows.append(compare_row(env_name, num_envs, num_steps, args))
            print(markdown_table(rows[-1:], COMPARE_COLUMNS).splitlines()[-1], flush=True)
    return rows


def run_backends(args) -> list[dict]:
    """Brax backend rows for `brax/reacher`, printed as they finish."""
    rows = []
    for backend in args.backends:
        for num_envs in args.backend_batch_sizes:
            num_steps = args.num_steps or default_num_steps("brax/reacher", num_envs)
            rows.append(backend_row(backend, num_envs, num_steps, args.repeats, args.seed))
            print(markdown_table(rows[-1:], BACKEND_COLUMNS).splitlines()[-1], flush=True)
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS), help="env names for envs.make")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=list(DEFAULT_BATCHES))
    p.add_argument(
        "--num-steps",
        type=int,
        default=None,
        help="steps per call for every row (default: 1000; 100 for physics envs at batch >= 256)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed calls per function after the first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--bare-output",
        choices=("summary", "state"),
        default="summary",
        help="what the bare baseline returns: a scalar of the recorded fields, or the whole final state",
    )
    p.add_argument(
        "--brax-backends", action="store_true", help="compare Brax backends on brax/reacher instead of rollout vs bare"
    )
    p.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS))
    p.add_argument("--backend-batch-sizes", nargs="+", type=int, default=list(BACKEND_BATCHES))
    p.add_argument("--out", default=None, help=f"JSON path (default {DEFAULT_OUT}, or *_brax_backends.json)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    load_start, start = os.getloadavg(), time.perf_counter()
    if args.brax_backends:
        out = Path(args.out or DEFAULT_OUT.replace(".json", "_brax_backends.json"))
        columns, header = BACKEND_COLUMNS, "brax/reacher backends (envs.rollout)"
        print(markdown_table([], columns), flush=True)
        rows = run_backends(args)
    else:
        out = Path(args.out or DEFAULT_OUT)
        columns, header = COMPARE_COLUMNS, "envs.rollout vs bare jit(scan(vmap(env.step)))"
        print(markdown_table([], columns), flush=True)
        rows = run_compare(args)
    print(f"\n{header}\n{markdown_table(rows, columns)}")
    result = {
        "benchmark": header,
        "argv": sys.argv[1:],
        "repeats": args.repeats,
        "seed": args.seed,
        "machine": machine_info(),
        "loadavg_1_5_15min": {"start": load_start, "end": os.getloadavg()},
        "wall_s": time.perf_counter() - start,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
