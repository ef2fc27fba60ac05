"""Replay buffer: exact ring contents, window validity against a brute-force reference, no retrace."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ami import replay
from envs.rollout import Trajectory

NUM_STREAMS = 3


def make_traj(t0: int, num_steps: int, done_table: np.ndarray | None = None) -> Trajectory:
    """Steps `t0 .. t0 + num_steps - 1` of `NUM_STREAMS` streams with time and stream encoded.

    `obs[t, n] = [t, n]`, `next_obs[t, n] = [t + 1, n]`, `action = t`; `done` from `done_table [time, N]`.
    """
    t = np.arange(t0, t0 + num_steps, dtype=np.float32)[:, None].repeat(NUM_STREAMS, axis=1)
    n = np.broadcast_to(np.arange(NUM_STREAMS, dtype=np.float32), t.shape)
    done = np.zeros(t.shape, bool) if done_table is None else done_table[t0 : t0 + num_steps]
    return Trajectory(
        obs=jnp.asarray(np.stack([t, n], -1)),
        action=jnp.asarray(t[..., None]),
        reward=jnp.asarray(-t),
        done=jnp.asarray(done),
        truncated=jnp.zeros(t.shape, bool),
        next_obs=jnp.asarray(np.stack([t + 1, n], -1)),
    )


def example() -> Trajectory:
    return jax.tree.map(lambda x: x[0, 0], make_traj(0, 1))


def fill(capacity: int, total: int, chunk: int, done_table: np.ndarray | None = None) -> replay.ReplayState:
    state = replay.init(example(), NUM_STREAMS, capacity)
    for t0 in range(0, total, chunk):
        state = replay.add(state, make_traj(t0, chunk, done_table))
    return state


def random_dones(total: int, seed: int = 0, p: float = 0.15) -> np.ndarray:
    return np.random.default_rng(seed).random((total, NUM_STREAMS)) < p


def test_init_shapes_and_goal_none():
    state = replay.init(example(), NUM_STREAMS, 7)
    assert state.data.obs.shape == (NUM_STREAMS, 7, 2)
    assert state.data.done.shape == (NUM_STREAMS, 7) and state.data.done.dtype == jnp.bool_
    assert state.data.goal is None
    assert int(state.position) == 0 and int(state.size) == 0
    assert state.position.dtype == jnp.int32 and state.size.dtype == jnp.int32


def test_add_wraps_around_with_exact_contents():
    state = replay.init(example(), NUM_STREAMS, 5)
    state = replay.add(state, make_traj(0, 3))
    assert (int(state.position), int(state.size)) == (3, 3)
    np.testing.assert_array_equal(state.data.action[1, :, 0], [0, 1, 2, 0, 0])
    state = replay.add(state, make_traj(3, 3))
    assert (int(state.position), int(state.size)) == (1, 5)
    np.testing.assert_array_equal(state.data.action[1, :, 0], [5, 1, 2, 3, 4])
    state = replay.add(state, make_traj(6, 3))
    assert (int(state.position), int(state.size)) == (4, 5)
    for n in range(NUM_STREAMS):
        np.testing.assert_array_equal(state.data.obs[n, :, 0], [5, 6, 7, 8, 4])
        np.testing.assert_array_equal(state.data.obs[n, :, 1], [n] * 5)
        np.testing.assert_array_equal(state.data.next_obs[n, :, 0], [6, 7, 8, 9, 5])
        np.testing.assert_array_equal(state.data.reward[n], [-5, -6, -7, -8, -4])


def test_add_longer_than_capacity_keeps_the_last_steps():
    state = replay.add(replay.init(example(), NUM_STREAMS, 5), make_traj(0, 7))
    assert (int(state.position), int(state.size)) == (2, 5)
    np.testing.assert_array_equal(state.data.action[0, :, 0], [5, 6, 2, 3, 4])


def test_add_rejects_wrong_shapes():
    state = replay.init(example(), NUM_STREAMS, 5)
    wrong = make_traj(0, 3)._replace(action=jnp.zeros((3, NUM_STREAMS + 1, 1)))
    with pytest.raises(ValueError, match=r"\.action.*expected shape \(3, 3, 1\).*got shape \(3, 4, 1\)"):
        replay.add(state, wrong)
    with pytest.raises(ValueError, match="dtype bool"):
        replay.add(state, make_traj(0, 3)._replace(done=jnp.zeros((3, NUM_STREAMS))))
    with pytest.raises(ValueError, match="structure"):
        replay.add(state, make_traj(0, 3)._replace(goal=jnp.zeros((3, NUM_STREAMS, 2))))


def test_init_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive int for capacity, got 0"):
        replay.init(example(), NUM_STREAMS, 0)
    with pytest.raises(ValueError, match="'done' field"):
        replay.init({"obs": jnp.zeros(2)}, NUM_STREAMS, 4)


def window_starts(batch: replay.Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start time [B], stream [B], valid [B]) after checking every window is consecutive in time."""
    obs, next_obs = np.asarray(batch.transitions.obs), np.asarray(batch.transitions.next_obs)
    length = obs.shape[1]
    np.testing.assert_array_equal(obs[:, :, 0], obs[:, :1, 0] + np.arange(length))
    np.testing.assert_array_equal(next_obs[:, :, 0], obs[:, :, 0] + 1)
    np.testing.assert_array_equal(obs[:, :, 1], obs[:, :1, 1].repeat(length, axis=1))
    np.testing.assert_array_equal(np.asarray(batch.transitions.action)[..., 0], obs[:, :, 0])
    return obs[:, 0, 0].astype(int), obs[:, 0, 1].astype(int), np.asarray(batch.valid)


def reference_windows(done_table: np.ndarray, oldest: int, total: int, length: int) -> set[tuple[int, int]]:
    return {
        (s, n)
        for n in range(NUM_STREAMS)
        for s in range(oldest, total - length + 1)
        if not done_table[s : s + length - 1, n].any()
    }


@pytest.mark.parametrize("total", [24, 61])  # before and after the ring wraps (capacity 40)
def test_sample_matches_reference_windows(total):
    capacity, length = 40, 5
    dones = random_dones(total)
    state = fill(capacity, total, 1 if total == 61 else 8, dones)
    batch = jax.jit(partial(replay.sample, batch_size=16384, length=length))(state, jax.random.key(1))
    assert batch.transitions.obs.shape == (16384, length, 2) and batch.valid.shape == (16384,)
    start, stream, valid = window_starts(batch)
    assert valid.all()
    oldest = max(total - capacity, 0)
    expected = reference_windows(dones, oldest, total, length)
    counts: dict[tuple[int, int], int] = {}
    for s, n in zip(start, stream, strict=True):
        counts[(s, n)] = counts.get((s, n), 0) + 1
    assert set(counts) == expected  # inside the write head, never across a done, every valid window reachable
    mean = len(start) / len(expected)
    assert 0.6 * mean < min(counts.values()) and max(counts.values()) < 1.4 * mean
    done = np.asarray(batch.transitions.done)
    assert not done[:, :-1].any() and done[:, -1].any()  # a done may only close the window


def test_sample_flags_invalid_when_nothing_fits():
    state = fill(capacity=10, total=3, chunk=3)
    batch = replay.sample(state, jax.random.key(0), batch_size=8, length=4)
    assert not np.asarray(batch.valid).any()
    dones = np.ones((10, NUM_STREAMS), bool)
    state = fill(capacity=10, total=10, chunk=5, done_table=dones)
    assert not np.asarray(replay.sample(state, jax.random.key(0), batch_size=8, length=2).valid).any()
    assert np.asarray(replay.sample(state, jax.random.key(0), batch_size=8, length=1).valid).all()


def test_sample_is_deterministic_per_key():
    state = fill(capacity=20, total=30, chunk=6, done_table=random_dones(30))
    a = replay.sample(state, jax.random.key(3), batch_size=64, length=4)
    b = replay.sample(state, jax.random.key(3), batch_size=64, length=4)
    c = replay.sample(state, jax.random.key(4), batch_size=64, length=4)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a.transitions.obs, c.transitions.obs)


def test_sample_rejects_length_beyond_capacity():
    state = replay.init(example(), NUM_STREAMS, 4)
    with pytest.raises(ValueError, match="length <= replay capacity 4, got 5"):
        replay.sample(state, jax.random.key(0), batch_size=2, length=5)


@pytest.mark.parametrize("total", [24, 61])
def test_sample_pairs_match_reference(total):
    capacity, max_offset = 40, 6
    dones = random_dones(total, seed=2)
    state = fill(capacity, total, 1 if total == 61 else 8, dones)
    pairs = jax.jit(partial(replay.sample_pairs, batch_size=16384, max_offset=max_offset))(state, jax.random.key(5))
    obs = np.asarray(pairs.transition.obs)
    goal = np.asarray(pairs.obs_goal)
    offset = np.asarray(pairs.offset)
    assert np.asarray(pairs.valid).all() and pairs.offset.dtype == jnp.int32
    np.testing.assert_array_equal(goal[:, 0], obs[:, 0] + offset)  # observation at t + k
    np.testing.assert_array_equal(goal[:, 1], obs[:, 1])  # same stream
    np.testing.assert_array_equal(np.asarray(pairs.transition.next_obs)[:, 0], obs[:, 0] + 1)
    oldest = max(total - capacity, 0)
    expected = {
        (t, n, k)
        for n in range(NUM_STREAMS)
        for t in range(oldest, total)
        for k in range(max_offset + 1)
        if t + max(k, 1) <= total and not dones[t : t + max(k - 1, 0), n].any()
    }
    found = set(zip(obs[:, 0].astype(int), obs[:, 1].astype(int), offset.tolist(), strict=True))
    assert found == expected


def test_grouped_sample_draws_each_block_of_rows_from_its_own_streams():
    """groups = 3 over 3 streams: rows [g B/3, (g+1) B/3) come from stream g alone and reach
    every usable window of it, uniformly; the pairs too."""
    capacity, total, length, batch_size = 40, 61, 5, 3 * 4096
    dones = random_dones(total, seed=4)
    state = fill(capacity, total, 1, dones)
    batch = jax.jit(partial(replay.sample, batch_size=batch_size, length=length, groups=3))(state, jax.random.key(1))
    start, stream, valid = window_starts(batch)
    assert valid.all()
    np.testing.assert_array_equal(stream, np.repeat(np.arange(3), batch_size // 3))
    expected = reference_windows(dones, total - capacity, total, length)
    for g in range(3):
        rows = slice(g * batch_size // 3, (g + 1) * batch_size // 3)
        counts = np.unique(start[rows], return_counts=True)
        assert {(s, g) for s in counts[0]} == {w for w in expected if w[1] == g}
        mean = batch_size / 3 / len(counts[0])
        assert 0.6 * mean < counts[1].min() and counts[1].max() < 1.4 * mean
    pairs = replay.sample_pairs(state, jax.random.key(2), batch_size=batch_size, max_offset=6, groups=3)
    obs, goal = np.asarray(pairs.transition.obs), np.asarray(pairs.obs_goal)
    np.testing.assert_array_equal(obs[:, 1], np.repeat(np.arange(3.0), batch_size // 3))
    np.testing.assert_array_equal(goal[:, 0], obs[:, 0] + np.asarray(pairs.offset))
    assert np.asarray(pairs.valid).all()


def test_grouped_sample_rejects_counts_that_do_not_divide():
    state = fill(capacity=10, total=10, chunk=5)
    with pytest.raises(ValueError, match=r"streams \(3\) to divide into groups=2"):
        replay.sample(state, jax.random.key(0), batch_size=4, length=2, groups=2)
    with pytest.raises(ValueError, match=r"batch_size \(4\) to divide into groups=3"):
        replay.sample_pairs(state, jax.random.key(0), batch_size=4, max_offset=2, groups=3)
    with pytest.raises(ValueError, match="positive int for groups, got 0"):
        replay.sample(state, jax.random.key(0), batch_size=4, length=2, groups=0)


def test_no_retrace_for_add_and_sample():
    traces = {"add": 0, "sample": 0}

    def counted(name, fn):
        def wrapped(*args, **kwargs):
            traces[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    add = jax.jit(counted("add", replay.add))
    sample = jax.jit(counted("sample", partial(replay.sample, batch_size=4, length=3)))
    state = replay.init(example(), NUM_STREAMS, 8)
    for i in range(5):
        state = add(state, make_traj(3 * i, 3))
        sample(state, jax.random.key(i))
    assert traces == {"add": 1, "sample": 1}
    assert (int(state.position), int(state.size)) == (15 % 8, 8)


def test_memory_bytes_and_check_capacity():
    # per step: obs 2*4 + action 4 + reward 4 + done 1 + truncated 1 + next_obs 2*4 = 26 bytes
    assert replay.memory_bytes(example(), 3, 1000) == 26 * 3 * 1000
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), example())
    assert replay.memory_bytes(abstract, 3, 1000) == 78_000
    assert replay.check_capacity(example(), 3, 1000, max_bytes=78_000) == 78_000
    with pytest.raises(ValueError, match=r"needs 78\.0 MB .*3 streams x 1000000 steps x 26 bytes.* 50\.0 MB"):
        replay.check_capacity(example(), 3, 1_000_000, max_bytes=50_000_000)
