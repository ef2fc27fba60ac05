"""Checkpoints: complete snapshots of a training run, one step directory each. The only Orbax importer.

A checkpoint of step `s` is the directory `<directory>/<s>` holding three Orbax items:

    state/      every leaf of the state pytree, as a flat dict `leaf_000000, leaf_000001, ...`
    layout/     JSON: for each leaf its path, kind, shape and dtype (and PRNG implementation)
    metadata/   JSON: the caller's metadata (resolved config, run info)

Leaves may be jax arrays, numpy arrays, Python `bool`/`int`/`float` and typed PRNG keys from
`jax.random.key` (stored as `jax.random.key_data`, rewrapped on restore). Orbax writes a step
into `<s>.orbax-checkpoint-tmp` and renames it when complete, so a killed save never leaves a
step that `latest_step` or `restore` would pick. Restoring checks every leaf against the layout
and raises `CheckpointError` (a `ValueError` naming directory and step) when the step cannot
be read back; `restore(..., fallback=True)` then moves on to the newest older step that can.

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

log = logging.getLogger(__name__)

_STATE, _LAYOUT, _METADATA = "state", "layout", "metadata"
_PYTHON = {bool: np.dtype(np.bool_), int: np.dtype(np.int64), float: np.dtype(np.float64)}  # scalar -> stored dtype
_KINDS = ("key", "jax", "numpy", "bool", "int", "float")
_MESSAGE_CHARS = 400


class CheckpointError(ValueError):
    """A checkpoint step is missing, partial or corrupt; the message names directory and step."""


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
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"expected a non-negative int step, got {step!r}")
    if max_to_keep is not None and (not isinstance(max_to_keep, int) or max_to_keep < 1):
        raise ValueError(f"expected max_to_keep to be None or a positive int, got {max_to_keep!r}")
    stored, layout = _encode_tree(state)
    metadata = _check_metadata(metadata)
    policy = None if max_to_keep is None else ocp.checkpoint_managers.LatestN(n=max_to_keep)
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False, preservation_policy=policy)
    with ocp.CheckpointManager(os.path.abspath(directory), options=options) as manager:
        if step in manager.all_steps():
            raise ValueError(f"step {step} already exists in checkpoint directory {directory}")
        items = {_LAYOUT: ocp.args.JsonSave(layout), _METADATA: ocp.args.JsonSave(metadata)}
        if stored:
            items[_STATE] = ocp.args.StandardSave(stored)
        manager.save(step, args=ocp.args.Composite(**items), force=True)
    return Path(directory) / str(step)


def all_steps(directory: str | os.PathLike) -> list[int]:
    """Completed steps in `directory`, ascending; `[]` when it holds none or does not exist."""
    if not Path(directory).is_dir():
        return []
    with _reader(directory) as manager:
        return sorted(manager.all_steps())


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest completed step in `directory`, or None."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


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


# --- saving ------------------------------------------------------------------------------


def _encode_tree(state: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The flat dict of stored arrays and the JSON layout describing each leaf."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    if not flat:
        raise ValueError("expected a state with at least one leaf, got none")
    stored, records, seen = {}, [], {}
    for i, (path, leaf) in enumerate(flat):
        record, array = _encode_leaf(path, leaf)
        names = tuple(map(str, record["keys"]))
        if names in seen:
            raise ValueError(f"state leaves {seen[names]} and {record['path']} have the same path names {names}")
        seen[names] = record["path"]
        record.update(name=f"leaf_{i:06d}", data_shape=list(array.shape), data_dtype=str(array.dtype))
        if array.size:  # Orbax refuses empty arrays; their shape and dtype say all there is
            stored[record["name"]] = array
        records.append(record)
    return stored, {"format": 1, "leaves": records}


def _encode_leaf(path: tuple, leaf: Any) -> tuple[dict[str, Any], Any]:
    """The layout record of one leaf and the array stored for it."""
    record = {"path": jax.tree_util.keystr(path), "keys": [_key_json(k) for k in path], "impl": None}
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        record.update(kind="key", impl=str(jax.random.key_impl(leaf)))
        array = jax.random.key_data(leaf)
    elif isinstance(leaf, jax.Array):
        record["kind"], array = "jax", leaf
    elif isinstance(leaf, np.ndarray | np.generic) and leaf.dtype != object:
        record["kind"], array = "numpy", np.asarray(leaf)
    elif type(leaf) in _PYTHON:
        record["kind"], array = type(leaf).__name__, _python_to_numpy(record["path"], leaf)
    else:
        raise ValueError(
            f"state leaf {record['path']}: expected a jax/numpy array, a typed PRNG key or a Python "
            f"bool/int/float, got {type(leaf).__name__}"
        )
    record["shape"], record["dtype"] = _spec(record["path"], leaf)
    return record, array


def _python_to_numpy(path: str, value: bool | int | float) -> np.ndarray:
    dtype = _PYTHON[type(value)]
    try:
        return np.asarray(value, dtype=dtype)
    except OverflowError as error:
        raise ValueError(f"state leaf {path}: expected a value that fits {np.dtype(dtype)}, got {value}") from error


def _key_json(key: Any) -> str | int:
    """A path element as JSON: the index of a sequence, else the field or dict key as a string."""
    if isinstance(key, jax.tree_util.SequenceKey):
        return key.idx
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    return str(getattr(key, "key", key))


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


# --- restoring ---------------------------------------------------------------------------


def _reader(directory: str | os.PathLike) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        read_only=True, create=False, save_interval_steps=0, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _restore_step(directory: str | os.PathLike, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    """`(state, metadata)` of one step; `CheckpointError` when unreadable, `ValueError` on a target mismatch."""
    where = f"checkpoint step {step} in {directory}"
    with _reader(directory) as manager:
        items = _read(manager, step, where, layout=ocp.args.JsonRestore(), metadata=ocp.args.JsonRestore())
        records = _check_layout(items[_LAYOUT], where)
        matched = None if target is None else _match_target(records, target, where)
        empty = all(0 in r["data_shape"] for r in records)
        stored = (
            {} if empty else _read(manager, step, where, state=ocp.args.StandardRestore(_abstract(records)))[_STATE]
        )
    try:
        leaves = [_decode_leaf(record, stored, where) for record in records]
    except (TypeError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{where} cannot be decoded: {type(error).__name__}: {error}") from error
    metadata = dict(items[_METADATA] or {})
    if matched is None:
        return _nest([(tuple(r["keys"]), leaf) for r, leaf in zip(records, leaves, strict=True)]), metadata
    treedef, order, like = matched
    return jax.tree.unflatten(treedef, [_as_target(leaves[i], t) for i, t in zip(order, like, strict=True)]), metadata


def _read(manager: ocp.CheckpointManager, step: int, where: str, **args: Any) -> Any:
    try:
        return manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as error:  # Orbax and TensorStore raise many types for damaged files
        message = " ".join(str(error).split())[:_MESSAGE_CHARS]
        raise CheckpointError(f"{where} cannot be read: {type(error).__name__}: {message}") from error


def _abstract(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What Orbax restores each stored leaf as: jax leaves on the default device, numpy leaves in host memory.

    Naming the device keeps a checkpoint written on an accelerator readable on a machine without one.
    """
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
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


def _check_layout(layout: Any, where: str) -> list[dict[str, Any]]:
    fields = {"name", "path", "keys", "kind", "shape", "dtype", "impl", "data_shape", "data_dtype"}
    good = isinstance(layout, dict) and layout.get("format") == 1
    records = layout.get("leaves") if good else None
    if not isinstance(records, list) or not records:
        raise CheckpointError(f"{where} has an unreadable layout: {str(layout)[:_MESSAGE_CHARS]}")
    for record in records:
        if not isinstance(record, dict) or not fields <= set(record) or not _well_formed(record):
            raise CheckpointError(f"{where} has a malformed layout record: {str(record)[:_MESSAGE_CHARS]}")
    return records


def _well_formed(record: dict[str, Any]) -> bool:
    """Whether a layout record's fields have the types and values `save` writes."""
    try:
        jnp.dtype(record["data_dtype"])
    except TypeError:
        return False
    shapes = (record["shape"], record["data_shape"])
    return (
        record["kind"] in _KINDS
        and all(isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s) for s in shapes)
        and isinstance(record["keys"], list)
        and all(isinstance(k, str | int) for k in record["keys"])
        and isinstance(record["name"], str)
        and (record["kind"] != "key" or isinstance(record["impl"], str))
    )


def _match_target(records: list[dict[str, Any]], target: Any, where: str) -> tuple[Any, list[int], list[Any]]:
    """Target treedef, the record index for each target leaf, and the target leaves; `ValueError` on mismatch."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(target)
    index = {tuple(map(str, r["keys"])): i for i, r in enumerate(records)}
    order = []
    for path, leaf in flat:
        name = jax.tree_util.keystr(path)
        i = index.get(tuple(str(_key_json(k)) for k in path))
        if i is None:
            raise ValueError(f"target leaf {name} is not in {where}; it holds {[r['path'] for r in records]}")
        shape, dtype = _spec(name, leaf)
        record = records[i]
        if shape != record["shape"] or dtype != record["dtype"]:
            raise ValueError(
                f"target leaf {name}: expected shape {tuple(shape)} dtype {dtype} from the target, "
                f"{where} has shape {tuple(record['shape'])} dtype {record['dtype']}"
            )
        order.append(i)
    unused = sorted(set(range(len(records))) - set(order))
    if unused:
        raise ValueError(f"{where} has leaves missing from the target: {[records[i]['path'] for i in unused]}")
    return treedef, order, [leaf for _, leaf in flat]


def _spec(name: str, leaf: Any) -> tuple[list[int], str]:
    """Shape and dtype name of a leaf as the layout records them (`key<fry>` for keys)."""
    if type(leaf) in _PYTHON:
        return [], _PYTHON[type(leaf)].name
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return list(leaf.shape), str(leaf.dtype)
    raise ValueError(
        f"target leaf {name}: expected an array, ShapeDtypeStruct, key or scalar, got {type(leaf).__name__}"
    )


def _decode_leaf(record: dict[str, Any], stored: Any, where: str) -> Any:
    """The saved leaf of `record`, as it was saved; `CheckpointError` when it does not match the layout."""
    if 0 in record["data_shape"]:
        array = np.zeros(record["data_shape"], jnp.dtype(record["data_dtype"]))
    else:
        array = stored.get(record["name"]) if isinstance(stored, dict) else None
    if array is None:
        raise CheckpointError(f"{where} is missing leaf {record['path']}")
    kind = record["kind"]
    if kind == "key":
        leaf = jax.random.wrap_key_data(jnp.asarray(array), impl=record["impl"])
    elif kind == "jax":
        leaf = jnp.asarray(array)
    else:
        leaf = np.asarray(array)
    if tuple(leaf.shape) != tuple(record["shape"]) or str(leaf.dtype) != record["dtype"]:
        raise CheckpointError(
            f"{where}: leaf {record['path']} has shape {tuple(leaf.shape)} dtype {leaf.dtype}, "
            f"its layout says shape {tuple(record['shape'])} dtype {record['dtype']}"
        )
    if kind in ("bool", "int", "float"):
        return leaf.item()
    return leaf


def _as_target(leaf: Any, like: Any) -> Any:
    """`leaf` with the leaf type of `like` (shape and dtype already match)."""
    if type(like) in _PYTHON:
        return type(like)(np.asarray(leaf).item())
    if isinstance(like, np.generic):
        return np.asarray(leaf)[()]
    if isinstance(like, np.ndarray):
        return np.asarray(leaf)
    if isinstance(like, jax.Array):
        return jax.device_put(leaf, like.sharding)
    return leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf)


def _nest(items: list[tuple[tuple, Any]]) -> Any:
    """Nested dicts from `(path elements, leaf)` pairs; nodes keyed 0..n-1 by ints become lists."""
    if len(items) == 1 and not items[0][0]:
        return items[0][1]
    root: dict = {}
    for keys, leaf in items:
        node = root
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = leaf
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    node = {key: _listify(child) for key, child in node.items()}
    if node and all(isinstance(key, int) for key in node) and sorted(node) == list(range(len(node))):
        return [node[i] for i in range(len(node))]
    return node
