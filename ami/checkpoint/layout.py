"""The layout of a checkpoint: how a state pytree becomes stored arrays plus a JSON record per
leaf, and back. No Orbax here (`ami.checkpoint` reads and writes the files).

A layout is `{"format": 2, "leaves": [record, ...]}`, one record per leaf in tree order:
`name` (the stored array's key), `path` and `keys` (where the leaf sits in the tree), `kind`
(`key`, `jax`, `numpy`, `bool`, `int`, `float`), the leaf's `shape` and `dtype`, the stored
array's `data_shape` and `data_dtype` (a key is stored as its key data), the PRNG `impl` of a
key, and `crc32`, the CRC-32 of the stored bytes in C order (None for an empty array, which is
not stored). Format 1 (before checksums) has no `crc32` and is restored without verification.
"""

from __future__ import annotations

import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ami import distributed

_PYTHON = {bool: np.dtype(np.bool_), int: np.dtype(np.int64), float: np.dtype(np.float64)}  # scalar -> stored dtype
_KINDS = ("key", "jax", "numpy", "bool", "int", "float")
_MESSAGE_CHARS = 400
FORMAT = 2


class CheckpointError(ValueError):
    """A checkpoint step is missing, partial or corrupt; the message names directory and step."""


def encode_tree(state: Any) -> tuple[dict[str, Any], dict[str, Any]]:
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
        record.update(name=f"leaf_{i:06d}", data_shape=list(array.shape), data_dtype=str(array.dtype), crc32=None)
        if array.size:  # Orbax refuses empty arrays; their shape and dtype say all there is
            stored[record["name"]] = array
            record["crc32"] = crc32(array)
        records.append(record)
    return stored, {"format": FORMAT, "leaves": records}


def crc32(array: Any) -> int:
    """CRC-32 of an array's bytes in C order (a jax array is copied to the host first)."""
    data = np.ascontiguousarray(np.asarray(jax.device_get(array)))
    return zlib.crc32(data.reshape(-1).view(np.uint8))


def _encode_leaf(path: tuple, leaf: Any) -> tuple[dict[str, Any], Any]:
    """The layout record of one leaf and the array stored for it."""
    record = {"path": jax.tree_util.keystr(path), "keys": [_key_json(k) for k in path], "impl": None}
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        record.update(kind="key", impl=str(jax.random.key_impl(leaf)))
        array = _whole(jax.random.key_data(leaf))
    elif isinstance(leaf, jax.Array):
        record["kind"], array = "jax", _whole(leaf)
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


def _whole(array: jax.Array) -> Any:
    """An array split over several processes, gathered whole into host memory (every process
    writes and checksums the same global value); others as they are."""
    return array if array.is_fully_addressable else distributed.host(array)


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


def check_layout(layout: Any, where: str) -> list[dict[str, Any]]:
    fields = {"name", "path", "keys", "kind", "shape", "dtype", "impl", "data_shape", "data_dtype"}
    good = isinstance(layout, dict) and layout.get("format") in (1, FORMAT)
    if good and layout["format"] >= 2:
        fields = fields | {"crc32"}
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
        and (record.get("crc32") is None or isinstance(record["crc32"], int))
    )


def match_target(records: list[dict[str, Any]], target: Any, where: str) -> tuple[Any, list[int], list[Any]]:
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


def decode_leaf(record: dict[str, Any], stored: Any, where: str) -> Any:
    """The saved leaf of `record`, as it was saved; `CheckpointError` when it does not match the layout."""
    if 0 in record["data_shape"]:
        array = np.zeros(record["data_shape"], jnp.dtype(record["data_dtype"]))
    else:
        array = stored.get(record["name"]) if isinstance(stored, dict) else None
    if array is None:
        raise CheckpointError(f"{where} is missing leaf {record['path']}")
    expected = record.get("crc32")
    if expected is not None and crc32(array) != expected:
        raise CheckpointError(
            f"{where}: leaf {record['path']} fails its checksum (crc32 {crc32(array):#010x}, "
            f"saved {expected:#010x}): the stored data is damaged"
        )
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


def as_target(leaf: Any, like: Any) -> Any:
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


def nest(items: list[tuple[tuple, Any]]) -> Any:
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
