"""Two-Rooms with pixel observations: the rendered image, its goal image, jit/vmap, option
checks, the CNN encoder's convolution, and a tiny training run."""

from __future__ import annotations

import json
from pathlib import Path

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from ami import nn, run
from ami.config import load_experiment
from envs.native import TwoRooms
from envs.native.two_rooms import BLOB_SIGMA_PX, GOAL_POS, WALL_LEVEL

S = 32
EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "two_rooms_pixels.yaml"


def pixel_coords(pos: np.ndarray, size: int) -> np.ndarray:
    """Positions `[..., 2]` in [-1, 1]^2 as (column, row) pixel coordinates, row 0 at y = +1."""
    pos = np.asarray(pos)
    return np.stack([(pos[..., 0] + 1.0) * size / 2 - 0.5, (1.0 - pos[..., 1]) * size / 2 - 0.5], axis=-1)


def blob_centre(image: np.ndarray, env: TwoRooms) -> np.ndarray:
    """Centre of mass (column, row) `[..., 2]` of the agent's blob in images `[..., S, S, 1]`."""
    blob = np.asarray(image)[..., 0] - WALL_LEVEL * env.walls
    rows, cols = np.meshgrid(np.arange(env.image_size), np.arange(env.image_size), indexing="ij")
    mass = blob.sum(axis=(-2, -1))
    return np.stack([(blob * cols).sum(axis=(-2, -1)) / mass, (blob * rows).sum(axis=(-2, -1)) / mass], axis=-1)


def uniform_positions(key: jax.Array, n: int, lim: float) -> jax.Array:
    return jax.random.uniform(key, (n, 2), minval=-lim, maxval=lim)


def test_image_shape_dtype_and_range():
    env = TwoRooms(obs="pixels")
    assert env.observation_size == (S, S, 1)
    state = env.reset(jax.random.key(0))
    for image in (state.obs, state.info[envs.GOAL_OBS]):
        assert image.shape == (S, S, 1)
        assert image.dtype == jnp.float32
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert state.pipeline_state.shape == (2,)


def test_wrapped_env_reports_the_image_shape():
    env = envs.make("two_rooms", obs="pixels", image_size=16)
    assert env.observation_size == (16, 16, 1)
    envs.check_env(env, "two_rooms")
    state = jax.jit(env.reset)(jax.random.key(0))
    assert state.obs.shape == state.info[envs.FINAL_OBS].shape == (16, 16, 1)


def test_blob_centre_of_mass_recovers_the_position():
    env = TwoRooms(obs="pixels")
    inner = uniform_positions(jax.random.key(1), 256, 1.0 - 4 * BLOB_SIGMA_PX * 2 / S)
    images = jax.vmap(env.observe)(inner)
    np.testing.assert_allclose(blob_centre(images, env), pixel_coords(inner, S), atol=0.01)
    # at the arena's edge the blob is cut off: its centre of mass is still within a pixel
    edge = jnp.array([[1.0, 1.0], [-1.0, 0.3], [0.95, -0.95], [-0.5, -1.0]])
    centre = blob_centre(jax.vmap(env.observe)(edge), env)
    assert np.max(np.abs(centre - pixel_coords(edge, S))) < 1.0


def test_sub_pixel_moves_change_the_image_smoothly():
    env = TwoRooms(obs="pixels")
    pos = jnp.array([-0.4, 0.3])
    a, b = env.observe(pos), env.observe(pos + jnp.array([0.2 * 2 / S, 0.0]))  # a fifth of a pixel
    assert float(jnp.max(jnp.abs(a - b))) > 1e-2
    jac = jax.jacfwd(env.observe)(pos)  # [S, S, 1, 2]
    assert bool(jnp.all(jnp.isfinite(jac))) and float(jnp.max(jnp.abs(jac))) > 0.0


@pytest.mark.parametrize("door_y", [0.0, 0.5])
def test_wall_pixels_present_except_at_the_door(door_y):
    env = TwoRooms(obs="pixels", door_y=door_y)
    image = np.asarray(env.observe(jnp.array([-0.9, -0.9 if door_y > 0 else 0.9])))[..., 0]
    row_y = 1.0 - (np.arange(S) + 0.5) * 2 / S
    pixel = 2 / S
    wall_rows = np.abs(row_y - door_y) > 0.5 * env.door_width + 0.5 * pixel
    door_rows = np.abs(row_y - door_y) < 0.5 * env.door_width - 0.5 * pixel
    wall_cols = image[:, S // 2 - 1 : S // 2 + 1]  # the two columns either side of x = 0
    np.testing.assert_allclose(wall_cols[wall_rows], WALL_LEVEL, atol=1e-6)
    np.testing.assert_allclose(wall_cols[door_rows], 0.0, atol=1e-6)
    assert door_rows.sum() == 4  # the 0.3-wide door spans 4.8 pixels: 4 open, partial ones at both ends
    others = np.delete(image, [S // 2 - 1, S // 2], axis=1)
    assert np.max(others[:, S // 2 - 1 :]) < 1e-6  # the right room is empty (the agent is in the left one)


def test_goal_observation_is_the_image_of_the_goal_position():
    env = TwoRooms(obs="pixels")
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(2), 64))
    goal = states.info[GOAL_POS]
    np.testing.assert_array_equal(states.info[envs.GOAL_OBS], jax.vmap(env.observe)(goal))
    np.testing.assert_allclose(blob_centre(states.info[envs.GOAL_OBS], env), pixel_coords(goal, S), atol=0.5)
    assert bool(jnp.all(jnp.sign(states.pipeline_state[:, 0]) != jnp.sign(goal[:, 0])))  # other room
    at_goal = env.step(jax.tree.map(lambda x: x[0], states).replace(pipeline_state=goal[0]), jnp.zeros(2))
    assert float(at_goal.metrics[envs.SUCCESS]) == 1.0
    np.testing.assert_array_equal(at_goal.obs, states.info[envs.GOAL_OBS][0])


def test_positions_drive_move_and_geodesic_distance():
    env = TwoRooms(obs="pixels", max_step=0.1)
    state = env.reset(jax.random.key(3))
    nxt = env.step(state, jnp.array([0.5, -1.0]))
    np.testing.assert_array_equal(nxt.pipeline_state, env.move(state.pipeline_state, jnp.array([0.5, -1.0])))
    np.testing.assert_array_equal(nxt.obs, env.observe(nxt.pipeline_state))
    dist = env.geodesic_distance(nxt.pipeline_state, env.goal_position(nxt))
    assert float(dist) >= float(jnp.linalg.norm(nxt.pipeline_state - env.goal_position(nxt)))


def run_steps(env: TwoRooms, key: jax.Array, actions: jax.Array):
    """Reset from `key` and step through `actions [T, 2]`: the states' observations `[T + 1, ...]`."""
    state = env.reset(key)
    obs = [state.obs]
    for a in actions:
        state = env.step(state, a)
        obs.append(state.obs)
    return jnp.stack(obs), state.info[envs.GOAL_OBS]


def test_jit_matches_eager():
    env = TwoRooms(obs="pixels")
    actions = jax.random.uniform(jax.random.key(4), (5, 2), minval=-1.0, maxval=1.0)
    eager = run_steps(env, jax.random.key(5), actions)
    jitted = jax.jit(run_steps, static_argnums=0)(env, jax.random.key(5), actions)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), eager, jitted)


def test_vmap_matches_loop():
    env = TwoRooms(obs="pixels")
    keys = jax.random.split(jax.random.key(6), 4)
    actions = jax.random.uniform(jax.random.key(7), (4, 3, 2), minval=-1.0, maxval=1.0)
    batched = jax.vmap(lambda k, a: run_steps(env, k, a))(keys, actions)
    for i in range(4):
        one = run_steps(env, keys[i], actions[i])
        jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, atol=1e-6), batched, one)


def test_state_observations_unchanged():
    default, state_mode = TwoRooms(), TwoRooms(obs="state")
    assert default.observation_size == state_mode.observation_size == 2
    assert envs.make("two_rooms").observation_size == 2
    key, action = jax.random.key(8), jnp.array([0.3, -0.7])
    for env in (default, state_mode):
        s0 = env.reset(key)
        s1 = env.step(s0, action)
        assert set(s0.info) == set(s1.info) == {envs.GOAL_OBS}
        np.testing.assert_array_equal(s1.obs, s1.pipeline_state)
        np.testing.assert_array_equal(s1.pipeline_state, env.move(s0.pipeline_state, action))
        np.testing.assert_array_equal(s1.info[envs.GOAL_OBS], env.goal_position(s1))
    jax.tree.map(np.testing.assert_array_equal, default.reset(key), state_mode.reset(key))
    pixels = TwoRooms(obs="pixels").reset(key)  # same draws of start and goal in both modes
    np.testing.assert_array_equal(pixels.pipeline_state, default.reset(key).pipeline_state)
    np.testing.assert_array_equal(pixels.info[GOAL_POS], default.reset(key).info[envs.GOAL_OBS])


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"obs": "rgb"}, "obs"),
        ({"obs": "pixels", "image_size": 8}, "image_size"),
        ({"obs": "pixels", "image_size": 1024}, "image_size"),
        ({"obs": "pixels", "image_size": 32.0}, "image_size"),
        ({"obs": "pixels", "image_size": True}, "image_size"),
        ({"obs": "state", "image_size": 32}, "image_size"),
    ],
)
def test_bad_options_raise_naming_the_option(kwargs, option):
    with pytest.raises(ValueError, match=option):
        TwoRooms(**kwargs)
    with pytest.raises(ValueError, match=option):
        envs.make("two_rooms", **kwargs)


class FlaxConvCNN(fnn.Module):
    """The reference: `nn.cnn` written with `flax.linen.Conv`."""

    @fnn.compact
    def __call__(self, x):
        for c in (8, 16):
            x = fnn.relu(fnn.Conv(c, (3, 3), strides=(2, 2))(x))
        return fnn.Dense(4)(x.reshape((x.shape[0], -1)))


@pytest.mark.parametrize("shape", [(3, 16, 16, 1), (2, 15, 17, 2)])
def test_cnn_matches_flax_convolution(shape):
    x = jax.random.uniform(jax.random.key(9), shape)
    net = nn.cnn((8, 16), 4)
    params = net.init(jax.random.key(10), x)
    reference = FlaxConvCNN().init(jax.random.key(10), x)["params"]
    jax.tree.map(np.testing.assert_array_equal, params, reference)
    np.testing.assert_allclose(net.apply(params, x), FlaxConvCNN().apply({"params": params}, x), atol=1e-5)


def test_tiny_training_run(tmp_path):
    cfg = load_experiment(
        EXPERIMENT,
        [
            "env.kwargs={obs: pixels, image_size: 16}",
            "env.episode_length=20",
            "data.num_envs=4",
            "data.steps_per_env=40",
            "critic.max_goal_offset=20",
            "world_model.hidden=[16]",
            "critic.hidden=[16]",
            "train.batch_size=8",
            "critic.batch_size=8",
            "train.updates=4",
            "train.chunk=2",
            "train.checkpoint_every=4",
            "eval.episodes=2",
            "planner.iterations=2",
            "planner.restarts=1",
        ],
    )
    summary = run.train(cfg, tmp_path, quiet=True)
    assert summary["updates"] == 4 and summary["env_steps"] == 160
    assert set(summary["controllers"]) == {"learned", "random"}
    assert json.loads((tmp_path / "summary.json").read_text())["success_rate"] == summary["success_rate"]
