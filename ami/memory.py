"""Short-term memory: the recent latents and actions, and the previous plan for warm starts.

`Memory` is a pytree written for one agent; `vmap` the functions below (or pass a batch of
memories with a `[B]` `done` to `reset_where`) for many. All functions are pure:

    memory = init(horizon, action_size, latent_size, history=K)
    memory = update(memory, z, action)          # after each step
    warm = read_warm_start(memory)              # the last plan, minus the steps already taken
    memory = store_plan(memory, plan)           # after each planning call
    memory = reset_where(memory, done)          # fresh memory where an episode ended

A fresh memory is all zeros (`plan_valid` False): `read_warm_start` then returns zeros, so
a caller that always warm-starts spends one restart on the centre of symmetric bounds.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ami.actor.base import check_int, shift_plan

Array = jax.Array


class Memory(NamedTuple):
    """One agent's short-term memory.

    Attributes:
      plan: `[H, A]` the last plan stored (zeros before the first).
      plan_valid: `[]` bool, whether `plan` holds a real plan.
      latents: `[K, D]` the K most recent latents, newest last (zeros before they exist).
      latents_valid: `[K]` bool, which rows of `latents` hold a recorded latent.
      actions: `[K, A]` the K most recent actions taken, newest last.
      steps_since_plan: `[]` int32, `update` calls since the last `store_plan`.
    """

    plan: Array
    plan_valid: Array
    latents: Array
    actions: Array
    steps_since_plan: Array
    latents_valid: Array


def init(horizon: int, action_size: int, latent_size: int, history: int = 1) -> Memory:
    """An empty memory: `plan [H, A]`, `latents [K, D]`, `actions [K, A]` zeros; `plan_valid` False."""
    check_int("horizon", horizon, minimum=1)
    check_int("action_size", action_size, minimum=1)
    check_int("latent_size", latent_size, minimum=1)
    check_int("history", history, minimum=1)
    return Memory(
        plan=jnp.zeros((horizon, action_size), jnp.float32),
        plan_valid=jnp.zeros((), jnp.bool_),
        latents=jnp.zeros((history, latent_size), jnp.float32),
        actions=jnp.zeros((history, action_size), jnp.float32),
        steps_since_plan=jnp.zeros((), jnp.int32),
        latents_valid=jnp.zeros((history,), jnp.bool_),
    )


def _check_shape(name: str, value: Array, expected: tuple[int, ...]) -> Array:
    value = jnp.asarray(value, jnp.float32)
    if value.shape != expected:
        raise ValueError(f"memory: {name} must have shape {list(expected)}, got {list(value.shape)}")
    return value


def _push(ring: Array, item: Array) -> Array:
    """`[K, X]`, `[X]` -> `[K, X]`: drops the oldest row, appends `item` last."""
    return jnp.concatenate([ring[1:], item[None]], axis=0)


def update(memory: Memory, z: Array, action: Array) -> Memory:
    """Records one step: latent `z [D]` and the `action [A]` taken; `steps_since_plan += 1`."""
    z = _check_shape("z", z, memory.latents.shape[1:])
    action = _check_shape("action", action, memory.actions.shape[1:])
    return memory._replace(
        latents=_push(memory.latents, z),
        latents_valid=_push(memory.latents_valid, jnp.ones((), jnp.bool_)),
        actions=_push(memory.actions, action),
        steps_since_plan=memory.steps_since_plan + 1,
    )


def store_plan(memory: Memory, plan: Array) -> Memory:
    """Keeps `plan [H, A]` for later warm starts; `plan_valid` True, `steps_since_plan` 0."""
    plan = _check_shape("plan", plan, memory.plan.shape)
    return memory._replace(plan=plan, plan_valid=jnp.ones((), jnp.bool_), steps_since_plan=jnp.zeros((), jnp.int32))


def read_warm_start(memory: Memory, fill: str | Array = "last") -> Array:
    """`[H, A]`: the stored plan without the `steps_since_plan` steps already taken, padded at the end.

    `fill` as in `ami.actor.shift_plan` (`"last"`, `"zeros"` or an `[A]` array). Check
    `memory.plan_valid` to know whether the result comes from a real plan.
    """
    return shift_plan(memory.plan, memory.steps_since_plan, fill)


def recent_latents(memory: Memory | None, n: int, latent_size: int) -> tuple[Array, Array]:
    """The recent latents `[N, K, D]` and their validity `[N, K]` of a batch of `n` memories;
    without a memory, one invalid row each."""
    if memory is None:
        return jnp.zeros((n, 1, latent_size), jnp.float32), jnp.zeros((n, 1), jnp.bool_)
    return memory.latents, memory.latents_valid


def reset_where(memory: Memory, done: Array) -> Memory:
    """A fresh memory where `done` is true, `memory` elsewhere.

    `done` is `[]` for one memory, or `[B]` for a batch of memories whose leaves are `[B, ...]`
    (the same result as `vmap`ping over the batch).
    """
    done = jnp.asarray(done, jnp.bool_)
    if done.shape != memory.plan_valid.shape:
        raise ValueError(f"reset_where: done must have the batch shape {memory.plan_valid.shape}, got {done.shape}")
    return zeros_where(memory, done)


def zeros_where(tree, done: Array):
    """`tree` (any pytree of batched state, leaves `[*done.shape, ...]`) with zeros where `done` is true."""

    def pick(leaf: Array) -> Array:
        mask = jnp.reshape(done, done.shape + (1,) * (leaf.ndim - done.ndim))
        return jnp.where(mask, jnp.zeros_like(leaf), leaf)

    return jax.tree.map(pick, tree)


def batched(tree, n: int):
    """`n` copies of an unbatched state `tree`, stacked on a new leading axis."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), tree)
