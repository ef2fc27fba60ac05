"""Devices and hosts through JAX's own runtime: one `jax.sharding.Mesh` per run, `NamedSharding`s
for what the run carries, and `jax.distributed` for several processes.

The mesh has a `data` axis over the run's devices (and a `model` axis of size 1 kept for
sharding parameters later). What a run carries is placed by one rule:

    replicated          parameters, optimiser states, target networks, keys, counters
    split along data    the leading axis of per-env leaves: env states, episode flags and
                        returns, replay streams `[N, C, ...]`, agent memories `[N, ...]`;
                        and the batch axis of every sampled update batch

so `act`, the update chunk, the online loop and evaluation are the same jitted programs on 1 or
N devices: XLA partitions them from the placement (GSPMD), and the modules never read the device
count. An agent state is split by the family contract's fields: `learner` replicated, `memory`
along data. With one device every placement is that device and the programs are unchanged.

Several processes (hosts) start with `initialize` before anything touches a device; every
process then runs the same program on its local devices, env states and replay streams are
created on device from keys (no host feeds data), and only process 0 writes logs and summaries.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA, MODEL = "data", "model"
# Environment variables that make `jax.distributed.initialize()` find its cluster by itself.
CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "OMPI_COMM_WORLD_SIZE")


def initialize(cfg) -> bool:
    """Starts `jax.distributed` from `cfg` (a `DistributedConfig`) or the cluster's environment;
    returns whether this is a multi-process run. Call before anything touches a device."""
    if cfg.coordinator is not None:
        if not jax.distributed.is_initialized():
            jax.distributed.initialize(cfg.coordinator, cfg.num_processes, cfg.process_id)
    elif any(name in os.environ for name in CLUSTER_ENV) and not jax.distributed.is_initialized():
        jax.distributed.initialize()
    return jax.process_count() > 1


def make_mesh(cfg) -> Mesh:
    """The run's `data` x `model` mesh over `cfg.data` devices (None: all of them)."""
    devices = jax.devices()
    data = cfg.data if cfg.data is not None else len(devices) // cfg.model
    if data * cfg.model > len(devices):
        raise ValueError(
            f"distributed.data: {data} x {cfg.model} devices asked for, {len(devices)} available "
            f"({jax.default_backend()}: {jax.device_count()} devices in {jax.process_count()} processes)"
        )
    grid = np.asarray(devices[: data * cfg.model]).reshape(data, cfg.model)
    return Mesh(grid, (DATA, MODEL))


def data_size(mesh: Mesh) -> int:
    return int(mesh.shape[DATA])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def along_data(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA))


def split(tree: Any, mesh: Mesh) -> Any:
    """Shardings for `tree` with every leaf of rank >= 1 split along its leading axis (scalars replicated)."""
    return jax.tree.map(lambda x: along_data(mesh) if np.ndim(x) else replicated(mesh), tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    return jax.tree.map(lambda _: replicated(mesh), tree)


def agent_shardings(state: Any, mesh: Mesh, per_env: bool = True) -> Any:
    """An agent state's shardings: `learner` replicated, `memory` along data when `per_env`
    (offline training holds one memory, replicated), any other field replicated."""
    fields = {name: replicate(value, mesh) for name, value in state._asdict().items()}
    if per_env:
        fields["memory"] = split(state.memory, mesh)
    return type(state)(**fields)


def replay_shardings(r: Any, mesh: Mesh) -> Any:
    """A replay's streams `[N, C, ...]` split along data; its write head replicated."""
    return r._replace(data=split(r.data, mesh), position=replicated(mesh), size=replicated(mesh))


def online_shardings(o: Any, mesh: Mesh) -> Any:
    """Shardings of the online loop's carry (`ami.online.Online`)."""
    return o._replace(
        agent=agent_shardings(o.agent, mesh),
        states=split(o.states, mesh),
        first=along_data(mesh),
        replay=replay_shardings(o.replay, mesh),
        episode_return=along_data(mesh),
        env_steps=replicated(mesh),
        episodes=replicated(mesh),
        updates=replicated(mesh),
    )


def training_shardings(t: Any, mesh: Mesh) -> Any:
    """Shardings of an offline run's checkpointed state (`ami.run.Training`)."""
    return t._replace(
        agent=agent_shardings(t.agent, mesh, per_env=False),
        replay=replay_shardings(t.replay, mesh),
        updates=replicated(mesh),
    )


def place(tree: Any, shardings: Any) -> Any:
    """`tree` moved onto its shardings (a checkpoint restored on one device spread over the mesh).

    With several processes every process holds the whole (identical) value and contributes
    the shards of its own devices (`jax.make_array_from_callback`)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    return jax.tree.map(_place_global, tree, shardings)


def _place_global(x: Any, sharding: NamedSharding) -> jax.Array:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _place_global(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding) if x.sharding == sharding else _place_global(host(x), sharding)
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def host(x: jax.Array) -> np.ndarray:
    """The whole value of a (possibly multi-process) array in host memory, in every process."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def constrain_batch(tree: Any) -> Any:
    """Inside a jitted function: the leading (batch) axis of every leaf split along `data` of the
    mesh set by `jax.set_mesh` (as `ami.run` does); unchanged without one or on one device."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA not in mesh.axis_names or mesh.shape[DATA] == 1:
        return tree
    spec = lambda x: PartitionSpec(DATA) if np.ndim(x) and x.shape[0] % mesh.shape[DATA] == 0 else PartitionSpec()  # noqa: E731
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, spec(x)), tree)


def is_writer() -> bool:
    """Whether this process writes the run directory's logs, summary and figures (process 0)."""
    return jax.process_index() == 0


def check_divisible(cfg, devices: int) -> None:
    """`ConfigError` naming the key when a count split along `data` does not divide by `devices`."""
    from ami.configlib import ConfigError

    counts = {"data.num_envs": cfg.data.num_envs, "eval.episodes": cfg.eval.episodes}
    batch = {"ami": "train.batch_size", "dreamer": "dreamer.batch_size"}.get(cfg.agent.name)
    if batch is not None:
        section, name = batch.split(".")
        counts[batch] = getattr(getattr(cfg, section), name)
    for key, count in counts.items():
        if count is not None and count % devices:
            raise ConfigError(f"{count} does not divide over the {devices} devices of the mesh's data axis", key)
