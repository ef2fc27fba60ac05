"""Short-term memory (`ami.memory`): shapes, ring order, warm-start shifts, batched resets, jit."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ami import memory as mem

H, A, D, K = 4, 2, 3, 3


def assert_trees_equal(a, b):
    """Same structure, same values, same dtypes."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
        assert x.dtype == y.dtype


def item(tree, i):
    return jax.tree.map(lambda leaf: leaf[i], tree)


def test_init_shapes_dtypes_and_values():
    m = mem.init(H, A, D, history=K)
    assert m.plan.shape == (H, A) and m.latents.shape == (K, D) and m.actions.shape == (K, A)
    assert m.plan_valid.shape == () and m.plan_valid.dtype == jnp.bool_ and not m.plan_valid
    assert m.steps_since_plan.shape == () and m.steps_since_plan.dtype == jnp.int32
    for leaf in jax.tree.leaves(m):
        np.testing.assert_array_equal(leaf, 0)


@pytest.mark.parametrize("kwargs, name", [(dict(history=0), "history"), (dict(latent_size=0), "latent_size")])
def test_init_rejects_bad_sizes(kwargs, name):
    settings = {**dict(horizon=H, action_size=A, latent_size=D), **kwargs}
    with pytest.raises(ValueError, match=name):
        mem.init(**settings)


def test_update_keeps_the_newest_last_and_drops_the_oldest():
    m = mem.init(H, A, D, history=K)
    for t in range(1, 5):  # 4 pushes into a ring of 3
        m = mem.update(m, jnp.full((D,), float(t)), jnp.array([t, -t], jnp.float32))
    np.testing.assert_array_equal(m.latents, [[2, 2, 2], [3, 3, 3], [4, 4, 4]])
    np.testing.assert_array_equal(m.actions, [[2, -2], [3, -3], [4, -4]])
    assert int(m.steps_since_plan) == 4
    assert not m.plan_valid


def test_latents_valid_marks_the_recorded_rows_and_resets():
    m = mem.init(H, A, D, history=K)
    assert m.latents_valid.shape == (K,) and m.latents_valid.dtype == jnp.bool_
    m = mem.update(m, jnp.ones((D,)), jnp.zeros((A,)))
    assert m.latents_valid.tolist() == [False, False, True]  # newest last, like the latents
    for _ in range(3):
        m = mem.update(m, jnp.ones((D,)), jnp.zeros((A,)))
    assert m.latents_valid.tolist() == [True, True, True]
    assert mem.reset_where(m, jnp.array(True)).latents_valid.tolist() == [False, False, False]


def test_update_rejects_wrong_shapes():
    m = mem.init(H, A, D, history=K)
    with pytest.raises(ValueError, match="z"):
        mem.update(m, jnp.zeros((D + 1,)), jnp.zeros((A,)))
    with pytest.raises(ValueError, match="action"):
        mem.update(m, jnp.zeros((D,)), jnp.zeros((A, 1)))
    with pytest.raises(ValueError, match="plan"):
        mem.store_plan(m, jnp.zeros((H + 1, A)))


PLAN = jnp.arange(8.0).reshape(H, A)  # rows [0, 1], [2, 3], [4, 5], [6, 7]


@pytest.mark.parametrize(
    "steps, fill, expected",
    [
        (0, "last", [[0, 1], [2, 3], [4, 5], [6, 7]]),
        (1, "last", [[2, 3], [4, 5], [6, 7], [6, 7]]),
        (2, "zeros", [[4, 5], [6, 7], [0, 0], [0, 0]]),
        (6, "last", [[6, 7], [6, 7], [6, 7], [6, 7]]),
    ],
)
def test_store_plan_then_read_warm_start_shifts_by_the_steps_taken(steps, fill, expected):
    m = mem.store_plan(mem.init(H, A, D, history=K), PLAN)
    assert m.plan_valid and int(m.steps_since_plan) == 0
    for _ in range(steps):
        m = mem.update(m, jnp.zeros((D,)), jnp.zeros((A,)))
    np.testing.assert_array_equal(mem.read_warm_start(m, fill), np.array(expected, np.float32))
    m = mem.store_plan(m, PLAN + 1.0)
    assert int(m.steps_since_plan) == 0
    np.testing.assert_array_equal(mem.read_warm_start(m, fill), PLAN + 1.0)


def batch_of_memories():
    """Three memories that differ: memory i has seen i + 1 steps after storing plan PLAN * (i + 1)."""
    memories = []
    for i in range(3):
        m = mem.store_plan(mem.init(H, A, D, history=K), PLAN * (i + 1))
        for t in range(i + 1):
            m = mem.update(m, jnp.full((D,), 10.0 * i + t + 1), jnp.full((A,), -1.0 - t))
        memories.append(m)
    return memories, jax.tree.map(lambda *x: jnp.stack(x), *memories)


def test_reset_where_under_vmap_resets_only_the_done_memories():
    memories, batch = batch_of_memories()
    done = jnp.array([False, True, False])
    out = jax.jit(jax.vmap(mem.reset_where))(batch, done)
    fresh = mem.init(H, A, D, history=K)
    for i, expected in enumerate([memories[0], fresh, memories[2]]):
        assert_trees_equal(item(out, i), expected)
    assert_trees_equal(mem.reset_where(batch, done), out)  # a [B] done on a batch needs no vmap
    with pytest.raises(ValueError, match="done"):
        mem.reset_where(batch, jnp.array(True))


def test_vmapped_update_and_warm_start_equal_a_loop():
    memories, batch = batch_of_memories()
    zs, actions = jnp.arange(9.0).reshape(3, D), -jnp.arange(6.0).reshape(3, A)
    batched = jax.vmap(mem.update)(batch, zs, actions)
    warm = jax.vmap(mem.read_warm_start)(batched)
    for i, m in enumerate(memories):
        looped = mem.update(m, zs[i], actions[i])
        assert_trees_equal(item(batched, i), looped)
        np.testing.assert_array_equal(warm[i], mem.read_warm_start(looped))
    np.testing.assert_array_equal(warm[2], np.broadcast_to(PLAN[3] * 3, (H, A)))  # 4 steps >= H: last action


def test_jitted_update_equals_eager_and_traces_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(m, z, a):
        return mem.update(m, z, a)

    eager = jitted = mem.init(H, A, D, history=K)
    for t in range(5):
        z, a = jnp.full((D,), t + 0.5), jnp.full((A,), -t - 0.5)
        eager, jitted = mem.update(eager, z, a), step(jitted, z, a)
    assert_trees_equal(eager, jitted)
