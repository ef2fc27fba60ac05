"""Online chunks and planning decisions against the mesh's device count, side by side in one process.

The online loop of one experiment (acting, env steps, replay writes and updates in one jitted
chunk) and batched `act` calls, timed on meshes of 1, 2, 4, ... devices of this process, and
once without any mesh or placement (the plain single-device path: `ami.online.make_chunk`
without shardings, no `jax.set_mesh`). On a CPU the devices are emulated
(`--xla_force_host_platform_device_count`, set here before JAX starts) and share the same
cores, so the rows are a correctness-and-overhead figure, not a speed-up: the number to read is
the sharded path's cost at 1 device against the plain path (target: at most 10 % more). On an
accelerator host the same script measures real devices. `--grouped` adds, for every mesh of
N > 1 devices, a row with `distributed.sample_groups=N`: each device draws its rows of the
update batch from its own replay streams, where the plain rows gather windows across devices.

    python benchmarks/scaling.py [--experiment dmc_cartpole_swingup] [--devices 1,2,4,8] [--grouped]
        [--envs 8] [--chunk 25] [--repeats 3] [--set key=value ...] [--out benchmarks/results/scaling.json]
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_DEVICES = "1,2,4,8"


def _emulate(devices: str) -> None:
    if "jax" in sys.modules:
        raise RuntimeError("scaling.py must set the device count before JAX is imported")
    most = max(int(d) for d in devices.split(","))
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={most}")


def measure(cfg, env, agent, devices: int | None, repeats: int) -> dict:
    """Seconds per online chunk and per batched decision on a mesh of `devices` (None: no mesh)."""
    import contextlib

    import jax
    import jax.numpy as jnp
    from agent_speed import time_fn as best_seconds

    from ami import distributed, online
    from ami.config import DistributedConfig
    from ami.evaluate import observe

    s = online.settings(cfg, cfg.env.action_repeat or 1)._replace(seed_steps=0)  # every decision updates
    key = jax.random.key(0)
    init = lambda k: online.init(agent, env, s, k)  # noqa: E731
    if devices is None:
        context, placement = contextlib.nullcontext(), None
        carry = jax.jit(init)(key)
    else:
        mesh = distributed.make_mesh(DistributedConfig(data=devices))
        context = jax.set_mesh(mesh)
        placement = distributed.online_shardings(jax.eval_shape(init, key), mesh)
        carry = jax.jit(init, out_shardings=placement)(key)
    with context:
        chunk = online.make_chunk(agent, env, s, placement)
        step = observe(carry.states, carry.first, agent.spec.goal_conditioned)
        act = jax.jit(lambda a, st, k: agent.act(a, st, k)[1])

        def one_chunk(c, k):
            return chunk(jax.tree.map(jnp.copy, c), k)[1]["updates"]  # the chunk donates its carry

        t_chunk = best_seconds(one_chunk, (carry, key), repeats)
        t_act = best_seconds(act, (carry.agent, step, key), repeats)
    env_steps = s.chunk * s.num_envs * s.action_repeat
    return {
        "devices": devices,
        "sample_groups": cfg.distributed.sample_groups,
        "s_per_chunk": round(t_chunk, 4),
        "env_steps_per_s": round(env_steps / t_chunk, 1),
        "updates_per_s": round(s.chunk * s.updates / t_chunk, 1),
        "decisions_per_s": round(s.num_envs / t_act, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="dmc_cartpole_swingup")
    parser.add_argument("--devices", default=DEFAULT_DEVICES)
    parser.add_argument("--envs", type=int, default=8, help="data.num_envs (divisible by every device count)")
    parser.add_argument("--chunk", type=int, default=25, help="decisions per timed online chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grouped", action="store_true", help="add rows with distributed.sample_groups = devices")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="benchmarks/results/scaling.json")
    args = parser.parse_args()
    _emulate(args.devices)

    from pathlib import Path

    import jax
    from record import write_json

    from ami.config import load_experiment
    from ami.run import build

    path = Path(__file__).resolve().parents[1] / "experiments" / f"{args.experiment}.yaml"
    overrides = [f"data.num_envs={args.envs}", f"online.chunk={args.chunk}", "eval.episodes=8", *args.set]
    cfg, env, agent = build(load_experiment(path, overrides))
    counts = [int(d) for d in args.devices.split(",")]
    rows = [measure(cfg, env, agent, None, args.repeats)]
    for d in counts:
        rows.append(measure(cfg, env, agent, d, args.repeats))
        if args.grouped and d > 1:
            grouped = build(load_experiment(path, [*overrides, f"distributed.sample_groups={d}"]))
            rows.append(measure(*grouped, d, args.repeats))
    base = rows[0]
    devices = f"{jax.device_count()} {jax.default_backend()} devices"
    print(f"{args.experiment}: {args.envs} envs, chunks of {args.chunk} decisions; {devices}")
    print(f"{'path':28} {'s/chunk':>8} {'x plain':>8} {'env st/s':>9} {'upd/s':>7} {'dec/s':>7}")
    for r in rows:
        name = "plain (no mesh)" if r["devices"] is None else f"mesh of {r['devices']}"
        name += f", groups {r['sample_groups']}" if r["sample_groups"] > 1 else ""
        print(
            f"{name:28} {r['s_per_chunk']:8.3f} {r['s_per_chunk'] / base['s_per_chunk']:8.3f} "
            f"{r['env_steps_per_s']:9.1f} {r['updates_per_s']:7.1f} {r['decisions_per_s']:7.1f}"
        )
    write_json(
        args.out, {"experiment": args.experiment, "backend": jax.default_backend(), "rows": rows, "args": vars(args)}
    )


if __name__ == "__main__":
    main()
