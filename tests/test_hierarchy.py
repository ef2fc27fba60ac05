"""The high level of two-level planning (`ami.hierarchy`): its targets on a known subsampling,
its losses, its training on a maze, and the two-level act."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ami import configlib, cost, hierarchy
from ami.agent import subgoal_step
from ami.config import ExperimentConfig
from ami.evaluate import observe
from ami.learner import finite_step
from ami.run import _collect, build

K, M, D, A = 4, 3, 5, 2


@pytest.fixture(scope="module")
def high():
    return hierarchy.make_high_level(D, A, K, A, hidden=(16,))


def test_subsample_takes_every_kth_latent_and_the_action_blocks_between():
    z = jnp.arange((M * K + 1) * D, dtype=jnp.float32).reshape(M * K + 1, D)
    actions = jnp.arange(M * K * A, dtype=jnp.float32).reshape(M * K, A)
    zk, blocks = hierarchy.subsample(z, actions, K)
    np.testing.assert_array_equal(zk, z[jnp.array([0, 4, 8, 12])])
    for i in range(M):
        np.testing.assert_array_equal(blocks[i], actions[i * K : (i + 1) * K])
    with pytest.raises(ValueError, match="subsample"):
        hierarchy.subsample(z[:-1], actions, K)


def test_prediction_loss_targets_the_latent_k_steps_ahead_and_skips_masked_windows(high):
    params = hierarchy.init_high(high, jax.random.key(0), optax.sgd(0.1)).params
    z = jax.random.normal(jax.random.key(1), (2, M + 1, D))
    blocks = jax.random.uniform(jax.random.key(2), (2, M, K, A), minval=-1, maxval=1)
    loss, (u, per_step) = hierarchy.prediction_loss(high, params, z, blocks, jnp.array([1.0, 0.0]))
    expected, zi = [], z[0, 0]
    for i in range(M):  # roll the predictor by hand from z_0 of the first (unmasked) window
        zi = high.model.predict(params.predictor, zi, high.encode_macro(params.macro, blocks[0, i]))
        expected.append(jnp.mean((zi - z[0, i + 1]) ** 2))
    np.testing.assert_allclose(per_step, expected, rtol=1e-5)
    np.testing.assert_allclose(loss, np.mean(expected), rtol=1e-5)
    assert u.shape == (2, M, A) and bool(jnp.all(jnp.abs(u) < 1.0))


def test_spread_loss_is_the_hinge_on_each_coordinate_s_std():
    u = jnp.stack([jnp.array([[-0.2, 0.6]]), jnp.array([[0.2, -0.6]])])  # [B=2, M=1, m=2]: stds 0.2 and 0.6
    np.testing.assert_allclose(hierarchy.spread_loss(u, jnp.ones(2), 0.5), 0.5 * (0.5 - 0.2), atol=1e-5)
    np.testing.assert_allclose(hierarchy.spread_loss(u, jnp.ones(2), 0.1), 0.0, atol=1e-6)


def test_critic_targets_are_hindsight_goals_ahead_or_goals_of_other_windows():
    z = jnp.arange(6 * (M + 1), dtype=jnp.float32).reshape(6, M + 1, 1)
    z_i, z_next, goal, at_goal = hierarchy.critic_targets(z, jax.random.key(3), random_fraction=0.0)
    np.testing.assert_array_equal(z_i, z[:, :-1])
    np.testing.assert_array_equal(z_next, z[:, 1:])
    offset = goal[..., 0] - z_i[..., 0]  # own window: the goal is j - i steps ahead, j in [i, M]
    assert bool(jnp.all(offset >= 0)) and bool(jnp.all(offset <= M - jnp.arange(M)))
    np.testing.assert_array_equal(at_goal, (offset == 0).astype(jnp.float32))
    _, _, goal, at_goal = hierarchy.critic_targets(z, jax.random.key(3), random_fraction=1.0)
    assert float(jnp.sum(at_goal)) == 0.0
    window = (goal[..., 0] // (M + 1)).astype(int)  # which window each goal came from
    assert bool(jnp.any(window != jnp.arange(6)[:, None]))


@pytest.fixture(scope="module")
def maze():
    overrides = [
        "hierarchy.enabled=true",
        "hierarchy.stride=8",
        "hierarchy.steps=4",
        "hierarchy.horizon=4",
        "hierarchy.options={population: 32, iterations: 2}",
        "data.num_envs=32",
        "data.steps_per_env=200",
        "train.batch_size=32",
        "critic.batch_size=32",
        "planner.restarts=2",
        "planner.iterations=3",
    ]
    cfg = configlib.load(ExperimentConfig, "experiments/maze.yaml", overrides)
    cfg, env, agent = build(cfg)
    return cfg, env, agent, _collect(cfg, env, jax.random.key(0))


def test_the_high_level_learns_to_predict_its_subsampled_future_on_the_maze(maze):
    """Raw positions as the (fixed) latent: the predictor's error 8 steps ahead falls 8x."""
    cfg, _, agent, buffer = maze
    h = cfg.hierarchy
    s = hierarchy.settings(h)
    tx = optax.adam(3e-3)
    high = hierarchy.make_high_level(2, 2, 8, 2, hidden=(64, 64))
    learner = hierarchy.init_high(high, jax.random.key(1), tx)

    @jax.jit
    def step(learner, key):
        k_batch, k_update = jax.random.split(key)
        batch = agent.sample(buffer, k_batch)
        obs, blocks = jax.vmap(partial(hierarchy.subsample, stride=8))(batch.high_obs, batch.high_action)
        z = obs * 10.0  # positions in units of a tenth of the arena
        return hierarchy.high_update(high, s, tx, learner, z, blocks, batch.high_mask, k_update, finite_step)

    first = None
    for i in range(400):
        learner, metrics, finite = step(learner, jax.random.key(10 + i))
        first = float(metrics["high_pred"]) if first is None else first
        assert bool(finite)
    assert float(metrics["high_pred"]) < first / 8.0
    assert float(metrics["high_spread"]) < 0.05


def test_two_level_act_replans_subgoals_on_schedule_traces_once_and_is_deterministic(maze):
    _, env, agent, buffer = maze
    state = agent.init(jax.random.key(2), 3)
    state, _ = jax.jit(agent.update)(state, agent.sample(buffer, jax.random.key(3)))
    reset = jax.vmap(env.reset)(jax.random.split(jax.random.key(4), 3))
    act = jax.jit(agent.act)
    s, replans = state, []
    for t in range(10):
        step = observe(reset, jnp.full((3,), t == 0), True)
        s, action, info = act(s, step, jax.random.key(5 + t))
        replans.append(bool(info["high_replanned"]))
        assert action.shape == (3, 2) and bool(jnp.all(jnp.abs(action) <= 1.0))
    assert replans == [t % 8 == 0 for t in range(10)]
    assert bool(jnp.all(s.high.plan_valid)) and int(s.high.since[0]) == 2
    assert act._cache_size() == 1  # one trace for every step, re-planning or not
    step = observe(reset, jnp.ones((3,), bool), True)  # the same decision twice: the same actions
    np.testing.assert_array_equal(act(state, step, jax.random.key(9))[1], act(state, step, jax.random.key(9))[1])


def test_the_low_level_plans_to_the_subgoal_or_within_handover_to_the_goal_itself(maze):
    agent = maze[2]
    m = agent.modules
    state = agent.init(jax.random.key(6), 2)
    z = jax.random.normal(jax.random.key(7), (2, 16))
    g = jax.random.normal(jax.random.key(8), (2, 16))
    first, started = jnp.ones(2, bool), jnp.zeros((), bool)
    far = m._replace(high_planning=m.high_planning._replace(handover=0.0))
    high, low_goal, now, info = subgoal_step(far, state, z, g, first, started, jax.random.key(9))
    assert bool(now) and not bool(jnp.any(info["handed_over"]))
    np.testing.assert_array_equal(low_goal, high.subgoal)
    expected = m.high.model.predict(state.learner.high.params.predictor, z, high.plan[:, 0])
    np.testing.assert_allclose(high.subgoal, expected, rtol=1e-5, atol=1e-6)
    near = m._replace(high_planning=m.high_planning._replace(handover=1e9))
    _, low_goal, _, info = subgoal_step(near, state, z, g, first, started, jax.random.key(9))
    assert bool(jnp.all(info["handed_over"]))
    np.testing.assert_array_equal(low_goal, g)


def test_the_distance_objective_constrains_every_macro_step_and_pushes_other_windows_apart(high):
    params = hierarchy.init_high(high, jax.random.key(0), optax.sgd(0.1)).params
    z = jax.random.normal(jax.random.key(1), (3, M + 1, D))
    s = hierarchy.HighSettings(M, 0.95, 0.1, 0.3, 0.5, 0.995, "distance", 10.0, 100.0)
    key = jax.random.key(2)
    loss = hierarchy.critic_loss(high, s, params, params.critic, z, key, jnp.array([1.0, 1.0, 0.0]))
    z_i, z_next = z[:, :-1].reshape(-1, D), z[:, 1:].reshape(-1, D)
    other = jax.random.permutation(key, z_next, axis=0)
    mask = jnp.repeat(jnp.array([1.0, 1.0, 0.0]), M)
    expected, _ = cost.distance_loss(params.critic, high.critic, z_i, z_next, other, 10.0, 100.0, mask)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_two_level_planning_is_refused_on_a_reward_task_and_windows_must_fit_the_streams():
    from ami.configurator import Task, resolve

    cfg = configlib.load(ExperimentConfig, {"hierarchy": {"enabled": True}, "env": {"name": "pendulum"}})
    with pytest.raises(configlib.ConfigError, match=r"hierarchy\.enabled: two-level planning plans towards a goal"):
        resolve(cfg, Task(goal_conditioned=False, action_size=1, episode_length=200))
    with pytest.raises(configlib.ConfigError, match=r"hierarchy\.steps: windows of steps x stride = 128 must fit"):
        configlib.load(ExperimentConfig, {"hierarchy": {"enabled": True}, "data": {"steps_per_env": 100}})
