"""Brax and MuJoCo Playground envs through the same API (each compiles for 5-60 s on a CPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from tests.conftest import uniform_policy

pytestmark = pytest.mark.physics

FAST = ["brax/reacher", "dmc/CartpoleSwingup"]
SLOW = ["brax/ant", "brax/inverted_pendulum", "dmc/CheetahRun", "dmc/ReacherEasy", "dmc/PendulumSwingup"]
ALL = [*FAST, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW)]


@pytest.mark.parametrize("name", ALL)
def test_physics_env_conforms_never_retraces_and_resets_fresh(name):
    env = envs.make(name, episode_length=3)
    envs.check_env(env, name)
    traces = []

    @jax.jit
    def step(state, action):
        traces.append(1)
        return env.step(state, action)

    state = jax.jit(env.reset)(jax.random.key(0))
    starts = [state.obs]
    for t in range(1, 7):
        state = step(state, jnp.full(env.action_size, 0.3))
        assert bool(jnp.all(jnp.isfinite(state.obs))), f"{name}: non-finite obs at step {t}"
        if float(state.done) == 1.0:  # time limit (every 3 steps) or the task's own end
            assert int(state.info[envs.STEPS]) == 0
            starts.append(state.obs)
    assert len(traces) == 1, f"{name}: step retraced"
    assert len(starts) >= 3, f"{name}: expected at least two episode ends in 6 steps"
    assert len(np.unique(np.stack(starts), axis=0)) == len(starts), f"{name}: an auto-reset repeated a start"


@pytest.mark.parametrize("name", ALL)
def test_physics_rollout_is_batched_and_deterministic(name):
    env = envs.make(name)
    policy = uniform_policy(env.action_size)
    a = envs.rollout(env, policy, jax.random.key(0), 4, 20)
    b = envs.rollout(env, policy, jax.random.key(0), 4, 20)
    assert a.obs.shape == (20, 4, env.observation_size)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    # batched equals single: env 0 of the batch, re-run alone from the same reset key
    k_reset, _k_run = jax.random.split(jax.random.key(0))
    first = env.reset(jax.random.split(k_reset, 4)[0])
    action = a.action[0, 0]
    np.testing.assert_allclose(jax.jit(env.step)(first, action).obs, a.next_obs[0, 0], rtol=1e-4, atol=1e-5)
