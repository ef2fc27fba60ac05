"""reacher_goal: the goal-conditioned MJX reacher (two compiles: one step, and its gradient)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import envs
from envs.reacher_goal import EPISODE_LENGTH, OBS_SIZE, TARGET_RADIUS, ReacherGoal, joint_angles, safe_norm

pytestmark = pytest.mark.physics

ZERO_ACTION = jnp.zeros(2, jnp.float32)


@pytest.fixture(scope="module")
def env() -> ReacherGoal:
    return ReacherGoal()


@pytest.fixture(scope="module")
def step(env):
    return jax.jit(env.step)


@pytest.fixture(scope="module")
def reset(env):
    return jax.jit(env.reset)


def _wrapped(env: envs.Env, kind: type) -> envs.Env:
    while not isinstance(env, kind):
        env = env.env
    return env


def test_registered_wrapped_and_conforms():
    env = envs.make("reacher_goal")
    envs.check_env(env, "reacher_goal")
    assert "reacher_goal" in envs.registered() and envs.describe("reacher_goal")
    assert envs.is_goal_conditioned(env)
    assert (env.observation_size, env.action_size) == (OBS_SIZE, 2)
    assert envs.action_repeat(env) == 1
    assert _wrapped(env, envs.TimeLimit).episode_length == EPISODE_LENGTH


def test_bad_arguments_raise_at_construction():
    with pytest.raises(ValueError, match="multiple of sim_dt"):
        ReacherGoal(ctrl_dt=0.03, sim_dt=0.02)
    with pytest.raises(ValueError, match="success_radius"):
        ReacherGoal(success_radius=0.0)


def test_goal_obs_is_an_observation_of_the_goal_pose_at_rest(env, reset):
    state = reset(jax.random.key(0))
    goal = state.info[envs.GOAL_OBS]
    assert goal.shape == state.obs.shape == (OBS_SIZE,) and goal.dtype == state.obs.dtype
    np.testing.assert_allclose(goal[6:], 0.0)
    np.testing.assert_allclose(goal[4:6], env.target(state.pipeline_state), atol=1e-6)
    np.testing.assert_allclose(env.observe(joint_angles(goal), jnp.zeros(2)), goal, atol=1e-5)
    assert env.success_radius == TARGET_RADIUS == env.mj_model.geom("target").size[0]


def test_fingertip_matches_mujoco_kinematics(env):
    model, data = env.mj_model, mujoco.MjData(env.mj_model)
    finger = model.geom("finger").id
    poses = np.random.default_rng(0).uniform([-np.pi, -2.7], [np.pi, 2.7], size=(20, 2))
    tips = jax.jit(jax.vmap(env.fingertip))(jnp.asarray(poses, jnp.float32))
    for qpos, tip in zip(poses, np.asarray(tips), strict=True):
        data.qpos[:] = qpos
        mujoco.mj_kinematics(model, data)
        np.testing.assert_allclose(tip, data.geom_xpos[finger, :2], atol=1e-5)


def test_target_is_reachable(env, reset, step):
    finger = env.mj_model.geom("finger").id
    for seed in range(4):
        state = reset(jax.random.key(seed))
        goal = state.info[envs.GOAL_OBS]
        at_goal = step(env.set_pose(state, joint_angles(goal)), ZERO_ACTION)
        assert float(at_goal.metrics[envs.SUCCESS]) == 1.0
        assert float(at_goal.metrics["distance"]) < 1e-3
        # MuJoCo's own kinematics during the step put the fingertip on the target
        physics_tip = at_goal.pipeline_state.geom_xpos[finger, :2]
        np.testing.assert_allclose(physics_tip, env.target(at_goal.pipeline_state), atol=1e-4)
        np.testing.assert_allclose(at_goal.obs, goal, atol=1e-3)


def test_obs_excludes_the_target(env, step):
    start = jnp.array([0.3, -1.0])
    a, b = env.reset_to(start, jnp.array([2.0, 1.5])), env.reset_to(start, jnp.array([-1.0, 0.2]))
    assert not np.allclose(env.target(a.pipeline_state), env.target(b.pipeline_state), atol=0.05)
    assert not np.allclose(a.info[envs.GOAL_OBS], b.info[envs.GOAL_OBS])
    np.testing.assert_array_equal(a.obs, b.obs)
    action = jnp.array([0.7, -0.4])
    np.testing.assert_array_equal(step(a, action).obs, step(b, action).obs)


def test_no_success_at_a_far_start(env, step):
    goal = env.sample_pose(jax.random.key(3))
    state = env.reset_to(goal + jnp.array([jnp.pi, 0.0]), goal)  # the fingertip mirrored through the base
    for s in (state, step(state, ZERO_ACTION)):
        assert float(s.metrics[envs.SUCCESS]) == 0.0
        assert float(s.metrics["distance"]) > 2 * TARGET_RADIUS
        assert float(s.done) == 0.0


def test_terminate_on_success_ends_at_the_goal():
    env = ReacherGoal(terminate_on_success=True)
    pose = jnp.array([0.5, 1.0])
    assert float(env.reset_to(pose, pose).done) == 1.0
    assert float(env.reset_to(-pose, pose).done) == 0.0


def test_distance_gradients_through_steps_are_finite(env):
    state = env.reset_to(jnp.array([0.0, 0.5]), jnp.array([2.0, -0.5]))

    def final_distance(actions):
        last, _ = jax.lax.scan(lambda s, a: (env.step(s, a), None), state, actions)
        return last.metrics["distance"]

    actions = jnp.full((5, 2), 0.3)
    value, grad = jax.jit(jax.value_and_grad(final_distance))(actions)
    assert grad.shape == actions.shape
    assert bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.abs(grad).sum()) > 0.0


def test_distance_has_a_finite_gradient_at_the_target():
    np.testing.assert_array_equal(jax.grad(safe_norm)(jnp.zeros(2)), 0.0)
    np.testing.assert_allclose(jax.grad(safe_norm)(jnp.array([3.0, 4.0])), [0.6, 0.8], rtol=1e-6)
