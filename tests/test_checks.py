"""Finiteness at the boundary: `finite_flags` (jittable) and `check_finite` (host side)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from tests.conftest import uniform_policy


def _state(n: int = 4, goal: bool = True) -> envs.State:
    """A batch of `n` clean states `[N]` with a PRNG key and an int counter in `info`."""
    info = {"steps": jnp.zeros((n,), jnp.int32), envs.RESET_KEY: jax.random.split(jax.random.key(0), n)}
    if goal:
        info[envs.GOAL_OBS] = jnp.ones((n, 2))
    return envs.State(
        pipeline_state=jnp.zeros((n, 3)),
        obs=jnp.zeros((n, 2)),
        reward=jnp.zeros((n,)),
        done=jnp.zeros((n,)),
        metrics={},
        info=info,
    )


def _trajectory(t: int = 5, n: int = 3) -> envs.Trajectory:
    return envs.rollout(envs.make("two_rooms"), uniform_policy(2), jax.random.key(0), n, t)


def test_finite_flags_of_a_state_checks_obs_reward_and_goal_only():
    flags = envs.finite_flags(_state())
    assert set(flags) == {"obs", "reward", "info.goal_obs"}
    assert all(f.shape == () and f.dtype == jnp.bool_ and bool(f) for f in flags.values())
    assert set(envs.finite_flags(_state(goal=False))) == {"obs", "reward"}
    state = _state()
    unchecked = state.replace(pipeline_state=jnp.full((4, 3), jnp.nan), done=jnp.full((4,), jnp.inf))
    assert all(bool(f) for f in envs.finite_flags(unchecked).values())


def test_finite_flags_of_a_trajectory_checks_every_floating_leaf():
    traj = _trajectory()
    flags = envs.finite_flags(traj)
    assert set(flags) == {"obs", "action", "reward", "done", "truncated", "next_obs", "goal"}
    assert all(bool(f) for f in flags.values())
    bad = traj._replace(next_obs=traj.next_obs.at[2, 1, 0].set(jnp.nan))
    assert {k for k, f in envs.finite_flags(bad).items() if not bool(f)} == {"next_obs"}


def test_finite_flags_works_under_jit_and_names_nested_states():
    state = _state()
    bad = state.replace(info={**state.info, envs.GOAL_OBS: state.info[envs.GOAL_OBS].at[0, 1].set(-jnp.inf)})
    flags = jax.jit(envs.finite_flags)((state, bad))
    assert set(flags) == {"0.obs", "0.reward", "0.info.goal_obs", "1.obs", "1.reward", "1.info.goal_obs"}
    assert [k for k, f in flags.items() if not bool(f)] == ["1.info.goal_obs"]
    assert envs.finite_flags(jnp.array([1.0, jnp.nan])) == {"value": False}
    assert envs.finite_flags({"n": jnp.arange(3), "key": jax.random.key(0)}) == {}


def test_check_finite_names_nan_obs_and_inf_reward():
    state = _state()
    envs.check_finite(state, "clean")
    envs.check_finite(_trajectory(), "clean")
    nan_obs = state.replace(obs=state.obs.at[1, 0].set(jnp.nan))
    with pytest.raises(FloatingPointError, match=r"env 'pkg.mod:factory' produced non-finite values in obs \("):
        envs.check_finite(nan_obs, "pkg.mod:factory")
    inf_reward = state.replace(reward=state.reward.at[3].set(jnp.inf))
    with pytest.raises(FloatingPointError, match=r"non-finite values in reward \(checked once per rollout chunk\)"):
        envs.check_finite(inf_reward)
    both = nan_obs.replace(reward=inf_reward.reward)
    with pytest.raises(FloatingPointError, match=r"non-finite values in obs, reward \("):
        envs.check_finite(both, "both")


def test_check_finite_names_the_trajectory_field():
    traj = _trajectory()
    bad = traj._replace(obs=traj.obs.at[0, 0, 1].set(jnp.nan), reward=traj.reward.at[4, 2].set(-jnp.inf))
    with pytest.raises(FloatingPointError, match=r"env 'traj' produced non-finite values in obs, reward \("):
        envs.check_finite(bad, "traj")
    envs.check_finite(jax.tree.map(np.asarray, traj), "numpy leaves")


def test_check_finite_refuses_traced_values():
    with pytest.raises(TypeError, match=r"check_finite\(env 'inside'\) needs concrete arrays.*finite_flags"):
        jax.jit(lambda s: envs.check_finite(s, "inside"))(_state())
