"""Wrappers: time limit, auto-reset to fresh states, action repeat and rescale, dtypes, checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.base import NativeEnv, State
from envs.native import PointMass, TwoRooms


class Recorder(NativeEnv):
    """Counts steps and reports the last action as the observation; reward = step count."""

    def __init__(self, obs_shape=(1,), weak_reward=False, nan_at=None):
        self._observation_size, self._action_size = 1, 1
        self.obs_shape, self.weak_reward, self.nan_at = obs_shape, weak_reward, nan_at

    def reset(self, rng):
        return State(
            pipeline_state=jnp.zeros((), jnp.int32),
            obs=jnp.zeros(self.obs_shape, jnp.float32),
            reward=jnp.zeros((), jnp.float32),
            done=jnp.zeros((), jnp.float32),
            metrics={},
            info={},
        )

    def step(self, state, action):
        n = state.pipeline_state + 1
        reward = 1.0 * n if self.weak_reward else n.astype(jnp.float32)
        obs = jnp.broadcast_to(action[0], self.obs_shape).astype(jnp.float32)
        if self.nan_at is not None:
            obs = jnp.where(n == self.nan_at, jnp.nan, obs)
        return state.replace(pipeline_state=n, obs=obs, reward=reward)


def run(env, actions, key=0):
    state = env.reset(jax.random.key(key))
    out = []
    for a in actions:
        state = env.step(state, jnp.asarray(a, jnp.float32))
        out.append(state)
    return out


def test_time_limit_ends_and_marks_truncation():
    env = envs.TimeLimit(Recorder(), episode_length=3)
    states = run(env, [[0.0]] * 3)
    assert [float(s.done) for s in states] == [0.0, 0.0, 1.0]
    assert [float(s.info[envs.TRUNCATION]) for s in states] == [0.0, 0.0, 1.0]
    assert [int(s.info[envs.STEPS]) for s in states] == [1, 2, 3]


def test_auto_reset_draws_fresh_initial_states_and_keeps_final_obs():
    env = envs.make("two_rooms", episode_length=4)
    step = jax.jit(env.step)
    state = env.reset(jax.random.key(0))
    starts, goals = [state.obs], [state.info[envs.GOAL_OBS]]
    for t in range(1, 21):
        before = state
        state = step(state, jnp.array([0.5, 0.5]))
        if t % 4 == 0:
            assert float(state.done) == 1.0 and float(state.info[envs.TRUNCATION]) == 1.0
            expected_final = TwoRooms().move(before.pipeline_state, jnp.array([0.5, 0.5]))
            np.testing.assert_allclose(state.info[envs.FINAL_OBS], expected_final, atol=1e-6)
            assert int(state.info[envs.STEPS]) == 0
            starts.append(state.obs)
            goals.append(state.info[envs.GOAL_OBS])
        else:
            assert float(state.done) == 0.0
            np.testing.assert_array_equal(state.info[envs.FINAL_OBS], state.obs)
    starts, goals = np.stack(starts), np.stack(goals)
    assert len(np.unique(starts, axis=0)) == len(starts), "every auto-reset must draw a new start"
    assert len(np.unique(goals, axis=0)) == len(goals), "every auto-reset must draw a new goal"


def test_auto_reset_on_task_termination():
    env = envs.AutoReset(envs.TimeLimit(TwoRooms(terminate_on_success=True, success_radius=3.0), 100))
    state = env.reset(jax.random.key(1))
    nxt = env.step(state, jnp.zeros(2))
    assert float(nxt.done) == 1.0 and float(nxt.info[envs.TRUNCATION]) == 0.0
    assert not np.allclose(nxt.obs, state.obs)


def test_action_repeat_equals_repeated_steps():
    inner = PointMass()
    env = envs.ActionRepeat(inner, 3)
    state = inner.reset(jax.random.key(0))
    action = jnp.array([0.7, -0.2])
    manual, total = state, 0.0
    for _ in range(3):
        manual = inner.step(manual, action)
        total += manual.reward
    repeated = env.step(state, action)
    np.testing.assert_allclose(repeated.obs, manual.obs, rtol=1e-6)
    np.testing.assert_allclose(repeated.reward, total, rtol=1e-6)


def test_rescale_actions_maps_unit_box_to_bounds():
    env = envs.RescaleActions(Recorder(), low=-3.0, high=5.0)
    out = run(env, [[-1.0], [1.0], [0.0], [2.0]])
    assert [float(s.obs[0]) for s in out] == [-3.0, 5.0, 1.0, 5.0]
    with pytest.raises(ValueError, match="low < high"):
        envs.RescaleActions(Recorder(), low=1.0, high=-1.0)


def test_weak_types_are_caught_and_canonical_removes_the_retrace():
    raw = Recorder(weak_reward=True)
    with pytest.raises(ValueError, match=r"reward.*after reset but.*\(weak\) after step"):
        envs.check_env(raw, "weak")
    env = envs.Canonical(raw)
    envs.check_env(env, "weak")
    step = jax.jit(env.step)
    state = env.reset(jax.random.key(0))
    for _ in range(3):
        state = step(state, jnp.ones(1))
    assert step._cache_size() == 1


def test_jitted_step_never_retraces(native_name):
    env = envs.make(native_name, episode_length=3)
    traces = []

    @jax.jit
    def step(state, action):
        traces.append(1)
        return env.step(state, action)

    state = jax.jit(env.reset)(jax.random.key(0))
    for _ in range(7):  # crosses two auto-resets
        state = step(state, jnp.zeros(env.action_size))
    assert len(traces) == 1


def test_spec_check_names_wrong_obs_shape():
    with pytest.raises(ValueError, match=r"obs has shape \[3\], expected \[1\]"):
        envs.check_env(Recorder(obs_shape=(3,)), "bad")
    env = envs.SpecCheck(Recorder(obs_shape=(3,)), "bad", check_finite=False)
    with pytest.raises(ValueError, match=r"env 'bad': obs has shape \[3\], expected \[1\]"):
        env.reset(jax.random.key(0))


def test_spec_check_names_wrong_action_shape():
    env = envs.make("two_rooms")
    state = env.reset(jax.random.key(0))
    with pytest.raises(ValueError, match=r"action has shape \[3\], expected \[2\]"):
        env.step(state, jnp.zeros(3))


def test_spec_check_adds_no_run_time_work_to_step_or_reset():
    env = envs.SpecCheck(Recorder(nan_at=2), "nanny", check_finite=True)
    state = env.reset(jax.random.key(0))
    step_jaxpr = str(jax.make_jaxpr(env.step)(state, jnp.ones(1)))
    reset_jaxpr = str(jax.make_jaxpr(env.reset)(jax.random.key(0)))
    assert "callback" not in step_jaxpr and "callback" not in reset_jaxpr
    assert step_jaxpr == str(jax.make_jaxpr(Recorder(nan_at=2).step)(state, jnp.ones(1)))
    nxt = jax.jit(env.step)(jax.jit(env.step)(state, jnp.ones(1)), jnp.ones(1))
    assert bool(jnp.isnan(nxt.obs).all()), "a step never raises; the NaN reaches the boundary check"
    with pytest.raises(FloatingPointError, match=r"env 'nanny' produced non-finite values in obs \("):
        envs.check_finite(nxt, env.name)
