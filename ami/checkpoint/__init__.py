"""Checkpoints: complete snapshots of a training run, one step directory each. The only Orbax importer.

A checkpoint of step `s` is the directory `<directory>/<s>` holding three Orbax items:

    state/      every leaf of the state pytree, as a flat dict `leaf_000000, leaf_000001, ...`
    layout/     JSON: for each leaf its path, kind, shape, dtype (and PRNG implementation) and
                the CRC-32 of its stored bytes
    metadata/   JSON: the caller's metadata (resolved config, run info)

Leaves may be jax arrays, numpy arrays, Python `bool`/`int`/`float` and typed PRNG keys from
`jax.random.key` (stored as `jax.random.key_data`, rewrapped on restore). Orbax writes a step
into `<s>.orbax-checkpoint-tmp` and renames it when complete, so a killed save never leaves a
step that `latest_step` or `restore` would pick; such leftovers are named in a warning when a
directory is restored. Orbax does not checksum array payloads, so the layout holds a CRC-32 of
every stored array, verified on restore. Restoring checks every leaf against the layout and
raises `CheckpointError` (a `ValueError` naming directory, step and leaf) when the step cannot
be read back or a checksum differs; `restore(..., fallback=True)` then moves on to the newest
older step that can.

With `target` (e.g. a fresh init), `restore` returns exactly the target's structure, container
and leaf types; without it, nested dicts and lists keyed by the saved path names.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from ami.checkpoint import layout
from ami.checkpoint.layout import CheckpointError

log = logging.getLogger(__name__)

_STATE, _LAYOUT, _METADATA = "state", "layout", "metadata"
_MESSAGE_CHARS = 400
_TMP_MARK = ".orbax-checkpoint-tmp"


def save(
    directory: str | os.PathLike,
    step: int,
    state: Any,
    metadata: Mapping[str, Any] | None = None,
    *,
    max_to_keep: int | None = None,
) -> Path:
    """Writes `state` and JSON `metadata` as step `step` of `directory`; returns the step directory.

    Blocks until the step is on disk. With `max_to_keep`, older steps beyond the newest
    `max_to_keep` are deleted afterwards. Raises `ValueError` for a negative or existing step,
    an unsupported leaf (naming its path) or metadata that is not JSON-serialisable.
    """
    with Writer(directory, max_to_keep=max_to_keep) as writer:
        return writer.save(step, state, metadata)


class Writer:
    """Writes the steps of one checkpoint directory, keeping its Orbax manager open between saves.

    With `asynchronous=True`, `save` returns once the state is copied to host memory and its
    checksums are taken; the files are written in the background while training goes on. The
    step becomes visible (renamed from its temporary directory) only when complete, so a
    process killed mid-write leaves the previous steps as they were. The next `save`, `wait`
    and `close` (also on leaving a `with` block) wait for the write in flight.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = None, asynchronous: bool = False):
        if max_to_keep is not None and (not isinstance(max_to_keep, int) or max_to_keep < 1):
            raise ValueError(f"expected max_to_keep to be None or a positive int, got {max_to_keep!r}")
        self.directory, self.asynchronous = Path(directory), asynchronous
        policy = None if max_to_keep is None else ocp.checkpoint_managers.LatestN(n=max_to_keep)
        options = ocp.CheckpointManagerOptions(enable_async_checkpointing=asynchronous, preservation_policy=policy)
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def save(self, step: int, state: Any, metadata: Mapping[str, Any] | None = None) -> Path:
        """Starts (asynchronous) or completes the save of step `step`; returns its directory."""
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"expected a non-negative int step, got {step!r}")
        stored, records = layout.encode_tree(state)
        if self.asynchronous or jax.process_count() > 1:  # host copies: the caller may donate the arrays
            stored = {name: np.array(array) for name, array in stored.items()}
        metadata = _check_metadata(metadata)
        self._manager.wait_until_finished()
        if step in self._manager.all_steps():
            raise ValueError(f"step {step} already exists in checkpoint directory {self.directory}")
        items = {_LAYOUT: ocp.args.JsonSave(records), _METADATA: ocp.args.JsonSave(metadata)}
        if stored:
            items[_STATE] = ocp.args.StandardSave(stored)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        return self.directory / str(step)

    def wait(self) -> None:
        """Returns when every save started so far is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()  # waits for a save in flight

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def all_steps(directory: str | os.PathLike) -> list[int]:
    """Completed steps in `directory`, ascending; `[]` when it holds none or does not exist."""
    if not Path(directory).is_dir():
        return []
    with _reader(directory) as manager:
        return sorted(manager.all_steps())


def unfinished(directory: str | os.PathLike) -> list[Path]:
    """Temporary step directories a killed save left behind in `directory` (never restored)."""
    if not Path(directory).is_dir():
        return []
    return sorted(p for p in Path(directory).iterdir() if _TMP_MARK in p.name)


def set_aside(directory: str | os.PathLike, step: int) -> Path:
    """Renames damaged step `step` to `<step>.damaged[-k]` (kept for inspection, never restored),
    so that a run falling back to an older step can write `step` again; returns the new path."""
    source = Path(directory) / str(step)
    target, k = source.with_name(f"{step}.damaged"), 1
    while target.exists():
        target, k = source.with_name(f"{step}.damaged-{k}"), k + 1
    source.rename(target)
    log.warning("set aside damaged checkpoint step %d as %s", step, target)
    return target


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest completed step in `directory`, or None."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def read_metadata(directory: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """The JSON metadata of step `step` (default: the newest) alone, without reading any array."""
    step = latest_step(directory) if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint in {directory}")
    where = f"checkpoint step {step} in {directory}"
    with _reader(directory) as manager:
        return dict(_read(manager, step, where, metadata=ocp.args.JsonRestore())[_METADATA] or {})


def restore(
    directory: str | os.PathLike,
    step: int | None = None,
    target: Any = None,
    *,
    fallback: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Reads step `step` (default: the newest) of `directory`: `(state, metadata)`.

    `target` is a pytree like the saved state (arrays, `jax.ShapeDtypeStruct`s, scalars or
    keys as leaves); the result then has its structure and leaf types, and a leaf whose path,
    shape or dtype differs raises `ValueError` naming the path. A step that cannot be read
    raises `CheckpointError`; with `fallback=True` the newest older step that reads cleanly is
    returned instead, and each skipped step is logged.
    """
    steps = all_steps(directory)
    for partial in unfinished(directory):
        log.warning("ignoring unfinished checkpoint %s (a save that did not complete)", partial)
    if not steps:
        raise CheckpointError(f"no checkpoint in {directory}")
    if step is not None and step not in steps:
        raise CheckpointError(f"no checkpoint for step {step} in {directory}; steps there: {steps}")
    newest = steps[-1] if step is None else step
    candidates = [s for s in reversed(steps) if s <= newest]
    failures = []
    for candidate in candidates if fallback else candidates[:1]:
        try:
            restored = _restore_step(directory, candidate, target)
        except CheckpointError as error:
            if not fallback:
                raise
            log.warning("skipping checkpoint: %s", error)
            failures.append(candidate)
            continue
        if failures:
            log.warning("restored step %d from %s after steps %s failed", candidate, directory, failures)
        return restored
    raise CheckpointError(f"no checkpoint in {directory} restores cleanly; tried steps {failures}")


def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"expected metadata to be a dict, got {type(metadata).__name__}")
    try:
        json.dumps(dict(metadata), allow_nan=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"expected JSON-serialisable metadata: {error}") from error
    return dict(metadata)


def _reader(directory: str | os.PathLike) -> ocp.CheckpointManager:
    """A read-only manager that involves no other process (no root metadata, so no barrier):
    processes may read while another creates the directory, and each reads on its own."""
    options = ocp.CheckpointManagerOptions(
        read_only=True,
        create=False,
        save_interval_steps=0,
        enable_async_checkpointing=False,
        save_root_metadata=False,
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _restore_step(directory: str | os.PathLike, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    """`(state, metadata)` of one step; `CheckpointError` when unreadable, `ValueError` on a target mismatch."""
    where = f"checkpoint step {step} in {directory}"
    with _reader(directory) as manager:
        items = _read(manager, step, where, layout=ocp.args.JsonRestore(), metadata=ocp.args.JsonRestore())
        records = layout.check_layout(items[_LAYOUT], where)
        matched = None if target is None else layout.match_target(records, target, where)
        empty = all(0 in r["data_shape"] for r in records)
        stored = (
            {} if empty else _read(manager, step, where, state=ocp.args.StandardRestore(_abstract(records)))[_STATE]
        )
    try:
        leaves = [layout.decode_leaf(record, stored, where) for record in records]
    except (TypeError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{where} cannot be decoded: {type(error).__name__}: {error}") from error
    metadata = dict(items[_METADATA] or {})
    if matched is None:
        return layout.nest([(tuple(r["keys"]), leaf) for r, leaf in zip(records, leaves, strict=True)]), metadata
    treedef, order, like = matched
    ordered = [layout.as_target(leaves[i], t) for i, t in zip(order, like, strict=True)]
    return jax.tree.unflatten(treedef, ordered), metadata


def _read(manager: ocp.CheckpointManager, step: int, where: str, **args: Any) -> Any:
    try:
        return manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as error:  # Orbax and TensorStore raise many types for damaged files
        message = " ".join(str(error).split())[:_MESSAGE_CHARS]
        raise CheckpointError(f"{where} cannot be read: {type(error).__name__}: {message}") from error


def _abstract(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What Orbax restores each stored leaf as: jax leaves on this process's first device, numpy leaves in host memory.

    Naming the device keeps a checkpoint written on an accelerator readable on a machine without one.
    """
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = {}
    for record in records:
        shape, dtype = tuple(record["data_shape"]), jnp.dtype(record["data_dtype"])
        if 0 in shape:
            continue
        if record["kind"] in ("jax", "key"):
            abstract[record["name"]] = jax.ShapeDtypeStruct(shape, dtype, sharding=device)
        else:
            abstract[record["name"]] = np.empty(shape, dtype)
    return abstract
