"""Names to environments: registry, unknown names, user envs given as `package.module:factory`."""

from __future__ import annotations

import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from tests.conftest import uniform_policy

USER_ENV = textwrap.dedent(
    '''
    """A user's own goal-conditioned env: a 1-D point that walks to a goal."""
    import jax, jax.numpy as jnp
    from brax.envs.base import Env, State

    class Walker1D(Env):
        goal_conditioned = True

        def __init__(self, speed=0.1):
            self.speed = speed

        def reset(self, rng):
            pos, goal = jax.random.uniform(rng, (2, 1), minval=-1.0, maxval=1.0)
            return self._state(pos, goal)

        def step(self, state, action):
            return self._state(state.pipeline_state + self.speed * jnp.clip(action, -1, 1), state.info["goal_obs"])

        def _state(self, pos, goal):
            dist = jnp.abs(pos - goal)[0]
            return State(pipeline_state=pos, obs=pos, reward=-dist, done=jnp.zeros(()),
                         metrics={"success": (dist < 0.05).astype(jnp.float32)}, info={"goal_obs": goal})

        observation_size = 1
        action_size = 1
        backend = "jax"

    def make_env(**kwargs):
        return Walker1D(**kwargs)

    def not_an_env():
        return object()
    '''
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_user_envs.py").write_text(USER_ENV)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_user_envs"
    sys.modules.pop("my_user_envs", None)


def test_registered_lists_native_brax_and_dmc():
    names = envs.registered()
    assert {"two_rooms", "point_mass", "pendulum"} <= set(names)
    assert "brax/reacher" in names and "brax/ant" in names
    assert "dmc/CartpoleSwingup" in names and "dmc/ReacherEasy" in names


def test_unknown_name_lists_what_exists():
    with pytest.raises(ValueError, match=r"unknown env 'two_room'.*Did you mean 'two_rooms'.*Known: .*point_mass"):
        envs.make("two_room")
    with pytest.raises(ValueError, match=r"unknown Brax env 'antt'.*'ant'"):
        envs.make("brax/antt")
    with pytest.raises(ValueError, match=r"unknown DMC env 'CartpoleSwingUp'.*'CartpoleSwingup'"):
        envs.make("dmc/CartpoleSwingUp")


def test_user_env_from_module_factory_works_with_make_and_rollout(user_module):
    env = envs.make(f"{user_module}:make_env", speed=0.2, episode_length=10)
    assert envs.is_goal_conditioned(env)
    traj = envs.rollout(env, uniform_policy(1), jax.random.key(0), 8, 25)
    assert traj.obs.shape == (25, 8, 1) and traj.goal.shape == (25, 8, 1)
    assert float(jnp.sum(traj.done)) == 8 * 2
    step = np.abs(np.asarray(traj.next_obs - traj.obs))
    assert float(step.max()) <= 0.2 + 1e-6


def test_user_env_errors_name_the_problem(user_module):
    with pytest.raises(TypeError, match="lacks the Brax Env API"):
        envs.make(f"{user_module}:not_an_env")
    with pytest.raises(ValueError, match="has no callable 'nope'"):
        envs.make(f"{user_module}:nope")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        envs.make("no_such_module_xyz:make")


def test_register_rejects_duplicates_and_bad_names():
    with pytest.raises(ValueError, match="already registered"):
        envs.register("two_rooms", lambda: None)
    with pytest.raises(ValueError, match="not a plain name"):
        envs.register("a/b", lambda: None)


def test_register_a_new_name():
    envs.register("two_rooms_wide_door", lambda: envs.native.TwoRooms(door_width=1.0), episode_length=7, overwrite=True)
    env = envs.make("two_rooms_wide_door")
    assert env.episode_length == 7
    assert "two_rooms_wide_door" in envs.registered()


def test_user_env_step_has_no_host_callback(user_module):
    env = envs.make(f"{user_module}:make_env")
    assert env.check_finite
    state = env.reset(jax.random.key(0))
    jaxpr = str(jax.make_jaxpr(env.step)(state, jnp.zeros(1)))
    assert "callback" not in jaxpr
    assert "callback" not in str(jax.make_jaxpr(jax.vmap(env.reset))(jax.random.split(jax.random.key(0), 4)))


def test_check_finite_is_recorded_and_read_through_wrappers(user_module):
    user = envs.make(f"{user_module}:make_env")
    assert isinstance(user, envs.SpecCheck) and user.check_finite is True
    assert envs.make(f"{user_module}:make_env", check_finite=False).check_finite is False
    assert envs.make("pendulum").check_finite is False
    assert envs.make("pendulum", check_finite=True).check_finite is True
    outer = envs.Wrapper(envs.Wrapper(user))
    assert outer.check_finite is True
    assert getattr(envs.Wrapper(envs.native.Pendulum()), "check_finite", False) is False
