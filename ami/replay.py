"""Replay: a fixed-capacity ring buffer of per-environment transition streams, as a pytree.

The buffer owns `N` time-major streams, one per environment of a batched rollout, each a ring
of `C` time steps. `ReplayState.data` has the structure of one transition (usually an
`envs.rollout.Trajectory` step: obs, action, reward, done, truncated, next_obs, goal) with
every leaf `[N, C, ...]`; all streams share one write head, since a rollout `[T, N, ...]` adds
`T` steps to every stream at once.

Time inside a stream is *logical*: index 0 is the oldest valid step and `size - 1` the newest;
logical `j` lives at physical slot `(position - size + j) mod C`. A window of `L` transitions
starting at logical `s` is usable when

    s + L <= size                      (it does not run past the write head), and
    done[s], ..., done[s + L - 2] = 0  (no episode ends inside it; the last may end one).

Sampling draws `num_candidates` uniform candidates per batch element and keeps the first
usable one, which is a uniform draw over usable windows; `valid` says whether one was found,
so the caller can weight its loss.

With `groups = G > 1` the `N` streams are cut into `G` consecutive blocks of `N / G` and
batch rows `[g B / G, (g + 1) B / G)` are drawn from block `g` alone, each block with its own
key: a draw stratified over the blocks. When the streams are split along a mesh axis of `G`
devices (`ami.distributed`), every device then samples its rows from its own streams and the
batch comes out split the same way, with no gather across devices. `G = 1` is the plain
uniform draw. Every function is pure and jittable: `add` for a fixed `T`
and `sample` for fixed `batch_size` and `length` compile once. To update the buffer in place
inside a jitted train step, donate the state there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MB = 1e6


class ReplayState(NamedTuple):
    """Ring buffer contents: `data` leaves `[N, C, ...]`, `position` and `size` int32 `[]`.

    `position` is the physical slot the next step is written to; `size <= C` counts the valid
    steps of each stream.
    """

    data: Any
    position: jax.Array
    size: jax.Array


class Batch(NamedTuple):
    """Windows of consecutive transitions: `transitions` leaves `[B, L, ...]`, `valid` bool `[B]`.

    `transitions.obs[:, i]` and `transitions.next_obs[:, i]` are the observations before and
    after action `i`, so a window holds `L + 1` observations and `L` actions of one episode.
    """

    transitions: Any
    valid: jax.Array


class Pairs(NamedTuple):
    """Hindsight pairs: the transition at `t` (leaves `[B, ...]`), `obs_goal` reached at `t + offset`.

    `offset` is int32 `[B]` in `[0, max_offset]`; `obs_goal` is `obs[t]` when `offset == 0`,
    else `next_obs[t + offset - 1]`, the observation reached in the same episode (the final
    observation of a terminal step included). `valid` is bool `[B]`.
    """

    transition: Any
    obs_goal: Any
    offset: jax.Array
    valid: jax.Array


def init(example: Any, num_streams: int, capacity: int) -> ReplayState:
    """An empty buffer for transitions like `example` (one step of one env, leaves `[...]`).

    Leaves may be arrays, scalars or `jax.ShapeDtypeStruct`s; `example` must have a `done`
    field. Build it from a rollout with `jax.tree.map(lambda x: x[0, 0], trajectory)`.
    Returns `ReplayState` with `data` leaves `[num_streams, capacity, ...]` of zeros.
    """
    _check_positive(num_streams=num_streams, capacity=capacity)
    _field(example, "done")
    data = jax.tree.map(lambda x: jnp.zeros((num_streams, capacity, *_shape(x)), _dtype(x)), example)
    return ReplayState(data=data, position=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def add(state: ReplayState, traj: Any) -> ReplayState:
    """Writes `traj` (leaves `[T, N, ...]`, same structure as the buffer) at the write head.

    The `T` steps go to physical slots `position, position + 1, ...` modulo `C`, overwriting
    the oldest steps; when `T > C` only the last `C` steps are kept. Shapes and dtypes are
    checked at trace time and a mismatch raises `ValueError`.
    """
    num_steps = _check_traj(state.data, traj)
    capacity = _capacity(state)
    kept = min(num_steps, capacity)
    slots = (state.position + (num_steps - kept) + jnp.arange(kept)) % capacity

    def write(buf: jax.Array, x: jax.Array) -> jax.Array:
        return buf.at[:, slots].set(jnp.swapaxes(x[num_steps - kept :], 0, 1))

    return ReplayState(
        data=jax.tree.map(write, state.data, traj),
        position=(state.position + num_steps) % capacity,
        size=jnp.minimum(state.size + num_steps, capacity),
    )


def sample(
    state: ReplayState, key: jax.Array, batch_size: int, length: int, num_candidates: int = 32, groups: int = 1
) -> Batch:
    """`batch_size` windows of `length` consecutive transitions: `Batch` leaves `[B, L, ...]`.

    Streams and start times are uniform over usable windows (see the module docstring) of
    each of the `groups` blocks of streams; `valid[b]` is False when none of the
    `num_candidates` draws for row `b` was usable (too little data, or episodes shorter than
    `length`); row `b` then holds an unusable window, possibly across an episode end or the
    write head, and must be masked out.
    """
    _check_positive(batch_size=batch_size, length=length, num_candidates=num_candidates, groups=groups)
    _check_fits(state, "length", length)
    if groups > 1:
        return _per_group(lambda s, k, b: sample(s, k, b, length, num_candidates), state, key, batch_size, groups)
    key_stream, key_start = jax.random.split(key)
    shape = (batch_size, num_candidates)
    stream = jax.random.randint(key_stream, shape, 0, _num_streams(state))
    start = jax.random.randint(key_start, shape, 0, jnp.maximum(state.size - length + 1, 1))
    slots = _slots(state, start[..., None] + jnp.arange(length))  # [B, K, L]
    done = _done(state, stream, slots)
    usable = (state.size >= length) & ~jnp.any(done[..., :-1], axis=-1)
    pick, valid = _first(usable)
    rows = jnp.arange(batch_size)
    transitions = _gather(state.data, stream[rows, pick], slots[rows, pick])
    return Batch(transitions=transitions, valid=valid)


def sample_pairs(
    state: ReplayState, key: jax.Array, batch_size: int, max_offset: int, num_candidates: int = 32, groups: int = 1
) -> Pairs:
    """`batch_size` (transition at `t`, observation at `t + k`) pairs from one episode: `Pairs [B, ...]`.

    `(stream, t, k)` is uniform over usable triples with `k` in `[0, max_offset]` of each of
    the `groups` blocks of streams: the `k` transitions from `t` on (at least one) lie before
    the write head and none but the last ends an episode. Cost is
    `O(B * num_candidates * max_offset)`.
    """
    _check_positive(batch_size=batch_size, num_candidates=num_candidates, groups=groups)
    if not isinstance(max_offset, int) or max_offset < 0:
        raise ValueError(f"expected a non-negative int for max_offset, got {max_offset!r}")
    _check_fits(state, "max_offset", max_offset)
    if groups > 1:
        draw = lambda s, k, b: sample_pairs(s, k, b, max_offset, num_candidates)  # noqa: E731
        return _per_group(draw, state, key, batch_size, groups)
    width = max(max_offset, 1)
    key_stream, key_time, key_offset = jax.random.split(key, 3)
    shape = (batch_size, num_candidates)
    stream = jax.random.randint(key_stream, shape, 0, _num_streams(state))
    time = jax.random.randint(key_time, shape, 0, jnp.maximum(state.size, 1))
    offset = jax.random.randint(key_offset, shape, 0, max_offset + 1)
    steps = jnp.arange(width)
    slots = _slots(state, time[..., None] + steps)  # [B, K, W]
    inside = steps < offset[..., None] - 1
    crosses = jnp.any(_done(state, stream, slots) & inside, axis=-1)
    usable = (time + jnp.maximum(offset, 1) <= state.size) & ~crosses
    pick, valid = _first(usable)
    rows = jnp.arange(batch_size)
    stream, slots, offset = stream[rows, pick], slots[rows, pick], offset[rows, pick]
    transition = _gather(state.data, stream, slots[:, 0])
    last = slots[rows, jnp.maximum(offset - 1, 0)]
    reached = _gather(_field(state.data, "next_obs"), stream, last)
    obs_goal = jax.tree.map(lambda o, r: jnp.where(_expand(offset == 0, o), o, r), _field(transition, "obs"), reached)
    return Pairs(transition=transition, obs_goal=obs_goal, offset=offset.astype(jnp.int32), valid=valid)


def memory_bytes(example: Any, num_streams: int, capacity: int) -> int:
    """Bytes `init(example, num_streams, capacity)` allocates for `data`."""
    _check_positive(num_streams=num_streams, capacity=capacity)
    per_step = sum(math.prod(_shape(x)) * _dtype(x).itemsize for x in jax.tree.leaves(example))
    return int(per_step) * num_streams * capacity


def check_capacity(example: Any, num_streams: int, capacity: int, max_bytes: int) -> int:
    """Returns `memory_bytes(...)`, or raises `ValueError` when it exceeds `max_bytes`.

    Meant for config validation, before anything is allocated or compiled.
    """
    needed = memory_bytes(example, num_streams, capacity)
    if needed > max_bytes:
        per_step = needed // (num_streams * capacity)
        raise ValueError(
            f"replay buffer needs {needed / MB:.1f} MB ({num_streams} streams x {capacity} steps x "
            f"{per_step} bytes per step) but at most {max_bytes / MB:.1f} MB is allowed; "
            f"lower the capacity to {max_bytes // (num_streams * per_step)} steps or fewer"
        )
    return needed


# --- helpers ---------------------------------------------------------------------------


def _field(tree: Any, name: str) -> Any:
    """`tree.name` for records, `tree[name]` for mappings; `ValueError` when absent."""
    if isinstance(tree, Mapping) and name in tree:
        return tree[name]
    if hasattr(tree, name):
        return getattr(tree, name)
    raise ValueError(f"expected a transition with a {name!r} field, got {type(tree).__name__}")


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else tuple(jnp.shape(x))


def _dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.dtype(jnp.asarray(x).dtype)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"expected a positive int for {name}, got {value!r}")


def _num_streams(state: ReplayState) -> int:
    return _field(state.data, "done").shape[0]


def _capacity(state: ReplayState) -> int:
    return _field(state.data, "done").shape[1]


def _check_fits(state: ReplayState, name: str, value: int) -> None:
    if value > _capacity(state):
        raise ValueError(f"expected {name} <= replay capacity {_capacity(state)}, got {value}")


def _check_traj(data: Any, traj: Any) -> int:
    """Checks `traj` leaves are `[T, N, ...]` matching `data` `[N, C, ...]`; returns `T`."""
    if jax.tree.structure(traj) != jax.tree.structure(data):
        raise ValueError(
            f"expected a trajectory with structure {jax.tree.structure(data)}, got {jax.tree.structure(traj)}"
        )
    num_steps = None
    for (path, buf), x in zip(jax.tree_util.tree_leaves_with_path(data), jax.tree.leaves(traj), strict=True):
        expected = (num_steps or "T", buf.shape[0], *buf.shape[2:])
        if x.ndim != buf.ndim or x.shape[1:] != (buf.shape[0], *buf.shape[2:]) or x.dtype != buf.dtype:
            raise ValueError(
                f"trajectory leaf {jax.tree_util.keystr(path)}: expected shape {expected} dtype {buf.dtype}, "
                f"got shape {tuple(x.shape)} dtype {x.dtype}"
            )
        if num_steps is not None and x.shape[0] != num_steps:
            raise ValueError(
                f"trajectory leaf {jax.tree_util.keystr(path)}: expected {num_steps} time steps like the "
                f"leaves before it, got {x.shape[0]}"
            )
        num_steps = x.shape[0]
    if not num_steps:
        raise ValueError(f"expected at least one time step in the trajectory, got {num_steps}")
    return num_steps


def _slots(state: ReplayState, logical: jax.Array) -> jax.Array:
    """Physical slots of logical times (0 = oldest valid step), same shape as `logical`."""
    return (state.position - state.size + logical) % _capacity(state)


def _done(state: ReplayState, stream: jax.Array, slots: jax.Array) -> jax.Array:
    """`done` flags `[..., W]` at `stream [...]` and `slots [..., W]`, as bool."""
    return _field(state.data, "done")[stream[..., None], slots].astype(bool)


def _first(usable: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of the first True candidate per row of `usable [B, K]` (0 if none) and whether one exists."""
    return jnp.argmax(usable, axis=1), jnp.any(usable, axis=1)


def _gather(tree: Any, stream: jax.Array, slots: jax.Array) -> Any:
    """Leaves `[N, C, ...]` at `stream [B]` and `slots [B]` or `[B, L]`: `[B, ...]` or `[B, L, ...]`."""
    rows = stream.reshape(stream.shape + (1,) * (slots.ndim - 1))
    return jax.tree.map(lambda x: x[rows, slots], tree)


def _per_group(draw: Any, state: ReplayState, key: jax.Array, batch_size: int, groups: int) -> Any:
    """`draw(state, key, batch_size // groups)` on each of the `groups` blocks of streams
    (`vmap` over a leading block axis), the block results concatenated along the batch axis."""
    num_streams = _num_streams(state)
    for name, count in (("streams", num_streams), ("batch_size", batch_size)):
        if count % groups:
            raise ValueError(f"expected {name} ({count}) to divide into groups={groups}")
    blocks = jax.tree.map(lambda x: x.reshape(groups, num_streams // groups, *x.shape[1:]), state.data)
    per_block = lambda data, k: draw(state._replace(data=data), k, batch_size // groups)  # noqa: E731
    out = jax.vmap(per_block)(blocks, jax.random.split(key, groups))
    return jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), out)


def _expand(flag: jax.Array, like: jax.Array) -> jax.Array:
    """`flag [B]` reshaped to broadcast against `like [B, ...]`."""
    return flag.reshape(flag.shape + (1,) * (like.ndim - 1))
