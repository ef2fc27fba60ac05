"""Brax and MuJoCo Playground envs through the same API.

Each env compiles for 20-130 s on these CPUs, so one test per env compiles it once: a
batched rollout (twice: deterministic), and one env of the batch stepped alone by a jitted
`step` that must not retrace, through auto-resets. Heavier envs are checked abstractly
(`envs.check_env` traces without compiling)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import envs
from tests.conftest import uniform_policy

pytestmark = pytest.mark.physics

FAST = ["brax/inverted_pendulum", "dmc/CartpoleSwingup"]
SLOW = ["dmc/ReacherEasy", "dmc/PendulumSwingup"]
COMPILED = [*FAST, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW)]
TRACED = ["brax/reacher", "brax/ant", "dmc/CheetahRun", "dmc/WalkerWalk"]
NUM_ENVS, NUM_STEPS = 4, 7  # episodes of 3 steps: every env resets twice


@pytest.mark.parametrize("name", COMPILED)
def test_physics_env_is_batched_deterministic_never_retraces_and_resets_fresh(name):
    env = envs.make(name, episode_length=3)
    envs.check_env(env, name)
    policy = uniform_policy(env.action_size)
    a = envs.rollout(env, policy, jax.random.key(0), NUM_ENVS, NUM_STEPS)
    b = envs.rollout(env, policy, jax.random.key(0), NUM_ENVS, NUM_STEPS)
    assert a.obs.shape == (NUM_STEPS, NUM_ENVS, env.observation_size)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert np.all(np.isfinite(a.obs)) and np.all(np.isfinite(a.reward)), f"{name}: non-finite rollout"

    traces = []

    @jax.jit
    def step(state, action):
        traces.append(1)
        return env.step(state, action)

    # env 0 of the batch alone, from the same reset key and with the batch's actions
    k_reset, _ = jax.random.split(jax.random.key(0))
    state = jax.jit(env.reset)(jax.random.split(k_reset, NUM_ENVS)[0])
    starts = [np.asarray(state.obs)]
    for t in range(NUM_STEPS - 1):
        state = step(state, a.action[t, 0])
        np.testing.assert_allclose(state.obs, a.obs[t + 1, 0], rtol=1e-4, atol=1e-5, err_msg=f"{name}: step {t}")
        assert float(state.done) == float(a.done[t, 0])
        if float(state.done) == 1.0:  # time limit (every 3 steps) or the task's own end
            assert int(state.info[envs.STEPS]) == 0
            starts.append(np.asarray(state.obs))
    assert len(traces) == 1, f"{name}: step retraced"
    assert len(starts) >= 3, f"{name}: expected at least two episode ends in {NUM_STEPS - 1} steps"
    assert len(np.unique(np.stack(starts), axis=0)) == len(starts), f"{name}: an auto-reset repeated a start"
    first = np.asarray(a.obs[0])
    assert len(np.unique(first, axis=0)) == NUM_ENVS, f"{name}: batched resets share a start"


@pytest.mark.parametrize("name", TRACED)
def test_heavier_physics_envs_conform_when_traced(name):
    env = envs.make(name)
    envs.check_env(env, name)  # shapes, dtypes and step == reset structure, abstractly
    assert env.observation_size > 0 and env.action_size > 0
