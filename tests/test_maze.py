"""The maze env: the snake of rooms, walls that block and doors that pass, far goals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.native.maze import Maze, door_tables, snake_order


def test_snake_order_and_doors_of_a_2x2_and_a_3x3_maze():
    assert snake_order(2, 2) == [(0, 0), (0, 1), (1, 1), (1, 0)]
    vertical, horizontal = door_tables(2, 2)
    np.testing.assert_array_equal(vertical, [[True], [True]])
    np.testing.assert_array_equal(horizontal, [[False, True]])
    vertical, horizontal = door_tables(3, 3)
    np.testing.assert_array_equal(vertical, np.ones((3, 2), bool))
    np.testing.assert_array_equal(horizontal, [[False, False, True], [True, False, False]])


@pytest.mark.parametrize(
    ("pos", "action", "expected"),
    [
        ((-0.7, 0.34), (0.0, -1.0), (-0.7, 0.34)),  # room (0, 0) down into (1, 0): closed wall at y = 1/3
        ((-0.7, 0.5), (0.0, -1.0), (-0.7, 0.484)),  # inside a room: free
        ((-0.34, 0.66), (1.0, 0.0), (-0.324, 0.66)),  # the door of (0, 0) | (0, 1) at y = 2/3
        ((-0.34, 0.9), (1.0, 0.0), (-0.34, 0.9)),  # the same wall outside the door
        ((-0.34, 0.9), (1.0, 1.0), (-0.34, 0.916)),  # slides along the wall: keeps the y part
        ((0.66, 0.34), (0.0, -1.0), (0.66, 0.324)),  # the door of (0, 2) | (1, 2) at x = 2/3
        ((0.0, 0.34), (0.0, -1.0), (0.0, 0.34)),  # the same wall outside the door
    ],
)
def test_walls_block_and_doors_pass(pos, action, expected):
    np.testing.assert_allclose(Maze().move(jnp.array(pos), jnp.array(action)), expected, atol=1e-6)


def test_ends_task_starts_in_one_end_room_and_puts_the_goal_in_the_other():
    env = Maze()
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 256))
    start, goal = np.asarray(states.obs), np.asarray(states.info[envs.GOAL_OBS])
    top_left = (start[:, 0] < -1 / 3 + 1e-6) & (start[:, 1] > 1 / 3)
    bottom_right = (start[:, 0] > 1 / 3) & (start[:, 1] < -1 / 3)
    assert np.all(top_left ^ bottom_right) and 0.3 < top_left.mean() < 0.7
    goal_bottom_right = (goal[:, 0] > 1 / 3) & (goal[:, 1] < -1 / 3)
    np.testing.assert_array_equal(goal_bottom_right, top_left)
    assert np.all(states.metrics[envs.SUCCESS] == 0.0)


def test_any_task_covers_every_room():
    env = Maze(task="any")
    start = np.asarray(jax.vmap(env.reset)(jax.random.split(jax.random.key(1), 512)).obs)
    rooms = np.floor((start + 1.0) * 1.5).astype(int)
    assert len({tuple(r) for r in rooms}) == 9


def test_far_ends_are_more_than_200_steps_apart_along_the_shortest_path():
    env = Maze()
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(2), 4))
    goals = np.asarray(states.info[envs.GOAL_OBS])
    steps = [env.shortest_steps(np.asarray(states.obs[i]), goals[i], cells=90) for i in range(4)]
    assert min(steps) > 200 and max(steps) < 400
    # a free straight line: the path is its length (to the grid's resolution)
    assert abs(env.shortest_steps(np.array([-0.9, 0.9]), np.array([-0.5, 0.9]), cells=90) - 0.4 / env.max_step) < 2.0


def test_step_is_jit_and_vmap_consistent_and_registered():
    env = envs.make("maze", auto_reset=False)
    state = env.reset(jax.random.key(3))
    actions = jax.random.uniform(jax.random.key(4), (8, 2), minval=-1, maxval=1)
    looped = [env.step(state, a).obs for a in actions]
    batched = jax.jit(jax.vmap(env.step, in_axes=(None, 0)))(state, actions).obs
    np.testing.assert_allclose(batched, np.stack(looped), atol=1e-6)
    assert env.episode_length == 600 and envs.is_goal_conditioned(env)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"rows": 1, "cols": 1}, "two rooms"), ({"task": "far"}, "task"), ({"door_width": 0.9}, "door_width")],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Maze(**kwargs)
