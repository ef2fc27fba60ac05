"""`envs.rollout`: determinism, equality with a step-by-step loop over single envs, jit == no-jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import envs
from tests.conftest import uniform_policy


def reference_rollout(env, policy, key, num_envs, num_steps):
    """The same semantics as `envs.rollout`, written as Python loops over time and envs."""
    k_reset, k_run = jax.random.split(key)
    states = [env.reset(k) for k in jax.random.split(k_reset, num_envs)]
    obs, actions, rewards, dones, next_obs = [], [], [], [], []
    for key_t in jax.random.split(k_run, num_steps):
        keys = jax.random.split(key_t, num_envs)
        acts = [policy(s.obs, k) for s, k in zip(states, keys, strict=True)]
        nxt = [env.step(s, a) for s, a in zip(states, acts, strict=True)]
        obs.append([s.obs for s in states])
        actions.append(acts)
        rewards.append([s.reward for s in nxt])
        dones.append([s.done for s in nxt])
        next_obs.append([s.info[envs.FINAL_OBS] for s in nxt])
        states = nxt
    return envs.Trajectory(*(np.asarray(x) for x in (obs, actions, rewards, dones, np.zeros(1), next_obs)))


def test_rollout_equals_loop_of_single_envs(native_name):
    env = envs.make(native_name, episode_length=4)
    policy = uniform_policy(env.action_size)
    key = jax.random.key(7)
    traj = envs.rollout(env, policy, key, 3, 9)
    ref = reference_rollout(env, policy, key, 3, 9)
    for field in ("obs", "action", "reward", "done", "next_obs"):
        np.testing.assert_allclose(getattr(traj, field), getattr(ref, field), rtol=1e-5, atol=1e-6, err_msg=field)


def test_rollout_is_deterministic_and_depends_on_the_key():
    env = envs.make("two_rooms")
    policy = uniform_policy(2)
    a = envs.rollout(env, policy, jax.random.key(0), 16, 50)
    b = envs.rollout(env, policy, jax.random.key(0), 16, 50)
    c = envs.rollout(env, policy, jax.random.key(1), 16, 50)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a.obs, c.obs)


def test_rollout_jit_equals_no_jit():
    env = envs.make("point_mass", episode_length=5)
    policy = uniform_policy(2)
    key = jax.random.key(3)
    jitted = envs.rollout(env, policy, key, 4, 12)
    with jax.disable_jit():
        k_reset, k_run = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k_reset, 4))
        _, eager = envs.rollout_from(env, policy, state, k_run, 12)
    for x, y in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_rollout_does_not_recompile_for_the_same_env_and_policy():
    env = envs.make("two_rooms")
    policy = uniform_policy(2)
    envs.rollout(env, policy, jax.random.key(0), 8, 10)
    size = envs.rollout._cache_size()
    envs.rollout(env, policy, jax.random.key(1), 8, 10)
    assert envs.rollout._cache_size() == size


def test_rollout_from_continues_where_it_stopped():
    env = envs.make("pendulum")
    policy = uniform_policy(1)
    state = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 5))
    key_a, key_b = jax.random.split(jax.random.key(1))
    run = jax.jit(envs.rollout_from, static_argnums=(0, 1, 4))
    mid, first = run(env, policy, state, key_a, 6)
    end, second = run(env, policy, mid, key_b, 6)
    np.testing.assert_array_equal(second.obs[0], first.next_obs[-1])
    assert jnp.shape(end.obs) == (5, 3)
