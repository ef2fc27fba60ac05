"""The native tasks: contract, exact dynamics, differentiability."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.native import Pendulum, PointMass, TwoRooms


def test_native_conform_to_contract(native_name):
    env = envs.make(native_name)
    envs.check_env(env, native_name)
    state = jax.jit(env.reset)(jax.random.key(0))
    assert state.obs.shape == (env.observation_size,)
    assert state.obs.dtype == jnp.float32
    assert env.backend == "jax"


def test_two_rooms_wall_blocks_outside_door_and_passes_through_it():
    env = TwoRooms(door_width=0.3, max_step=0.1)
    # from the left room towards the wall, crossing at y = 0.5 (outside the door): x is kept, y moves
    np.testing.assert_allclose(env.move(jnp.array([-0.05, 0.5]), jnp.array([1.0, 1.0])), [-0.05, 0.6], atol=1e-7)
    # crossing at y = 0.05 (inside the door |y| < 0.15): the move happens
    np.testing.assert_allclose(env.move(jnp.array([-0.05, 0.0]), jnp.array([1.0, 1.0])), [0.05, 0.1], atol=1e-7)
    # from the right room leftwards outside the door
    np.testing.assert_allclose(env.move(jnp.array([0.02, -0.9]), jnp.array([-1.0, 0.0])), [0.02, -0.9], atol=1e-7)
    # arena walls clip, actions are clipped to [-1, 1]
    np.testing.assert_allclose(env.move(jnp.array([0.95, 0.95]), jnp.array([5.0, 1.0])), [1.0, 1.0], atol=1e-7)


def test_two_rooms_start_and_goal_in_different_rooms():
    env = TwoRooms()
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 512))
    start_x, goal_x = states.obs[:, 0], states.info[envs.GOAL_OBS][:, 0]
    assert bool(jnp.all(jnp.sign(start_x) != jnp.sign(goal_x)))
    assert bool(jnp.all(jnp.abs(states.obs) <= 1.0 - env.margin + 1e-6))
    assert 0.4 < float(jnp.mean(start_x > 0)) < 0.6


def test_two_rooms_success_and_reward():
    env = TwoRooms(success_radius=0.1)
    state = env.reset(jax.random.key(3))
    goal = state.info[envs.GOAL_OBS]
    near = state.replace(pipeline_state=goal + jnp.array([0.0, 0.04]))
    nxt = env.step(near, jnp.zeros(2))
    assert float(nxt.metrics[envs.SUCCESS]) == 1.0
    np.testing.assert_allclose(nxt.reward, -0.04, atol=1e-6)


def test_two_rooms_dynamics_are_differentiable():
    env = TwoRooms()

    def final_x(actions):
        pos = jnp.array([-0.5, 0.0])
        for a in actions:
            pos = env.move(pos, a)
        return pos[0]

    grad = jax.grad(final_x)(jnp.full((5, 2), 0.3))
    np.testing.assert_allclose(grad[:, 0], env.max_step, rtol=1e-6)
    np.testing.assert_allclose(grad[:, 1], 0.0, atol=1e-7)


def test_point_mass_exact_step():
    env = PointMass(dt=0.1, accel=2.0, damping=1.0)
    phys = env.dynamics(jnp.array([0.0, 0.5, 1.0, 0.0]), jnp.array([1.0, -1.0]))
    v = np.array([0.9 * 1.0 + 0.2, 0.9 * 0.0 - 0.2])
    np.testing.assert_allclose(phys, [0.1 * v[0], 0.5 + 0.1 * v[1], v[0], v[1]], rtol=1e-6)
    stopped = env.dynamics(jnp.array([0.99, 0.0, 1.0, 0.0]), jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(stopped, [1.0, 0.0, 0.0, 0.0], atol=1e-7)


def test_pendulum_exact_step_and_reward():
    env = Pendulum(init_noise=0.0)
    state = env.reset(jax.random.key(0))
    np.testing.assert_allclose(state.obs, [-1.0, 0.0, 0.0], atol=1e-6)
    state = state.replace(pipeline_state=jnp.array([0.5, 1.0]))
    nxt = env.step(state, jnp.array([0.5]))
    w = 1.0 + (15.0 * np.sin(0.5) + 3.0 * 1.0) * 0.05
    np.testing.assert_allclose(nxt.pipeline_state, [0.5 + 0.05 * w, w], rtol=1e-6)
    np.testing.assert_allclose(nxt.reward, -(0.25 + 0.1 + 0.001), rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{"goal_mode": "nowhere"}, {"door_width": 0.0}, {"max_step": -1.0}])
def test_two_rooms_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError, match="two_rooms"):
        TwoRooms(**kwargs)


def test_two_rooms_geodesic_distance_exact_values():
    env = TwoRooms(door_width=0.3)
    # same room: straight line
    np.testing.assert_allclose(env.geodesic_distance(jnp.array([-0.5, 0.5]), jnp.array([-0.2, 0.1])), 0.5, rtol=1e-6)
    # through the door: straight line
    np.testing.assert_allclose(
        env.geodesic_distance(jnp.array([-0.5, 0.0]), jnp.array([0.5, 0.1])), np.hypot(1.0, 0.1), rtol=1e-6
    )
    # around the upper door post at (0, 0.15)
    expected = np.hypot(0.5, 0.85 - 0.15) + np.hypot(0.5, 0.85 - 0.15)
    np.testing.assert_allclose(
        env.geodesic_distance(jnp.array([-0.5, 0.85]), jnp.array([0.5, 0.85])), expected, rtol=1e-6
    )
