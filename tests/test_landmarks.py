"""The landmark graph (`ami.landmarks`): farthest-point choice, short edges, shortest routes and
waypoints against hand-solved corridors, and the agent's waypoint planning on the maze."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ami import configlib, landmarks
from ami.config import ExperimentConfig
from ami.evaluate import observe
from ami.run import _collect, build

# A U-shaped corridor of unit steps; the wall between its arms is where the straight line goes.
U = jnp.array([[0, 0], [1, 0], [2, 0], [2, 1], [2, 2], [1, 2], [0, 2]], jnp.float32)


def euclid(a, b):
    return jnp.linalg.norm(a - b, axis=-1)


def test_choose_is_farthest_point_sampling_from_the_first_observation():
    obs = jnp.arange(11, dtype=jnp.float32)[:, None]  # 0, 1, ..., 10
    np.testing.assert_array_equal(landmarks.choose(obs, 3)[:, 0], [0.0, 10.0, 5.0])
    streams = jnp.arange(24, dtype=jnp.float32).reshape(2, 12, 1)  # a replay's [N, C, ...]
    np.testing.assert_array_equal(landmarks.from_replay(streams, 2)[:, 0], [0.0, 23.0])
    with pytest.raises(ValueError, match="1 <= landmarks <= 11 observations, got 12"):
        landmarks.choose(obs, 12)


def test_edges_keep_only_short_hops_and_routes_follow_the_corridor_not_the_line():
    w = landmarks.edges(euclid, U, cutoff=1.2)
    assert float(w[0, 1]) == 1.0 and float(w[2, 4]) == np.inf and float(w[0, 6]) == np.inf  # through the wall: cut
    np.testing.assert_array_equal(jnp.diag(w), jnp.zeros(7))
    last = jnp.where(euclid(U, U[6]) <= 1.2, euclid(U, U[6]), jnp.inf)
    t = landmarks.to_goal(w, last, max_hops=8)
    np.testing.assert_allclose(t, [6, 5, 4, 3, 2, 1, 0])  # hops along the U; the line from U[0] is 2
    short = landmarks.to_goal(w, last, max_hops=2)  # at most two edges and the last hop
    np.testing.assert_allclose(short, [np.inf, np.inf, np.inf, 3, 2, 1, 0])


def test_waypoint_is_the_farthest_first_hop_of_a_shortest_route_or_the_goal_in_reach():
    lp = landmarks.LandmarkPlanning(num=7, cutoff=1.2, max_hops=8, replan_every=4)
    w = landmarks.edges(euclid, U, lp.cutoff)
    goal, route, direct = landmarks.waypoint(euclid, lp, U, w, jnp.array([0.0, 0.0]), U[6])
    np.testing.assert_array_equal(goal, U[1])  # not U[0], where the agent already is
    assert float(route) == 6.0 and not bool(direct)
    goal, route, direct = landmarks.waypoint(euclid, lp, U, w, jnp.array([2.0, 0.4]), U[6])
    np.testing.assert_array_equal(goal, U[3])  # 0.6 to U[3], then 3 (by U[2]: 0.4 + 4)
    assert float(route) == pytest.approx(3.6) and not bool(direct)
    goal, _, direct = landmarks.waypoint(euclid, lp, U, w, jnp.array([0.5, 2.0]), U[6])
    np.testing.assert_array_equal(goal, U[6])
    assert bool(direct)
    far = jnp.array([9.0, 9.0])  # nothing within the cutoff: the goal itself
    goal, route, direct = landmarks.waypoint(euclid, lp, U, w, far, U[6])
    np.testing.assert_array_equal(goal, U[6])
    assert bool(direct) and float(route) == np.inf


def test_plan_waypoints_batched_equals_one_at_a_time():
    lp = landmarks.LandmarkPlanning(num=7, cutoff=1.2, max_hops=8, replan_every=4)
    z = jnp.array([[0.0, 0.0], [2.0, 0.4], [0.5, 2.0]])
    g = jnp.broadcast_to(U[6], (3, 2))
    mem = landmarks.empty_memory(2, 3)
    mem, route, direct = jax.jit(lambda m, z, g: landmarks.plan_waypoints(euclid, lp, U, m, z, g))(mem, z, g)
    w = landmarks.edges(euclid, U, lp.cutoff)
    for i in range(3):
        goal, r, d = landmarks.waypoint(euclid, lp, U, w, z[i], g[i])
        np.testing.assert_array_equal(mem.subgoal[i], goal)
        assert float(route[i]) == pytest.approx(float(r)) and bool(direct[i]) == bool(d)
    assert bool(jnp.all(mem.plan_valid)) and mem.since.tolist() == [0, 0, 0]


@pytest.fixture(scope="module")
def maze():
    overrides = [
        "hierarchy.enabled=true",
        "hierarchy.subgoals=landmarks",
        "hierarchy.landmarks=64",
        "hierarchy.replan_every=4",
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


def test_prepare_keeps_landmarks_of_the_replay_and_no_high_networks_are_built(maze):
    cfg, _, agent, buffer = maze
    assert agent.modules.high is None and agent.modules.landmarks is not None
    assert cfg.hierarchy.edge_cutoff == pytest.approx((1 - 0.98**16) / 0.02, rel=1e-4)  # H = 32: 16-step hops
    fresh = agent.init(jax.random.key(1), 2)
    assert fresh.learner.landmarks.shape == (64, 2) and fresh.learner.high is None
    state = agent.prepare(fresh, buffer)
    np.testing.assert_array_equal(state.learner.landmarks, landmarks.from_replay(buffer.data.obs, 64))
    updated, _ = jax.jit(agent.update)(state, agent.sample(buffer, jax.random.key(2)))
    np.testing.assert_array_equal(updated.learner.landmarks, state.learner.landmarks)  # kept by updates


def test_waypoint_act_renews_on_schedule_traces_once_and_plans_to_the_waypoint(maze):
    _, env, agent, buffer = maze
    state = agent.prepare(agent.init(jax.random.key(2), 3), buffer)
    state, _ = jax.jit(agent.update)(state, agent.sample(buffer, jax.random.key(3)))
    reset = jax.vmap(env.reset)(jax.random.split(jax.random.key(4), 3))
    act = jax.jit(agent.act)
    s, renewed = state, []
    for t in range(6):
        step = observe(reset, jnp.full((3,), t == 0), True)
        s, action, info = act(s, step, jax.random.key(5 + t))
        renewed.append(bool(info["high_replanned"]))
        assert action.shape == (3, 2) and bool(jnp.all(jnp.abs(action) <= 1.0))
    assert renewed == [t % 4 == 0 for t in range(6)]
    assert act._cache_size() == 1
    m, params = agent.modules, state.learner.params
    z, g = (m.perception.encode(params.encoder, x) for x in (step.obs, step.goal))
    l = m.perception.encode(params.encoder, state.learner.landmarks)
    critic = lambda a, b: m.critic.apply(params.critic, a, b)  # noqa: E731
    expected, _, _ = landmarks.plan_waypoints(critic, m.landmarks, l, landmarks.empty_memory(16, 3), z, g)
    np.testing.assert_allclose(s.high.subgoal, expected.subgoal, rtol=1e-5, atol=1e-6)


def test_landmark_subgoals_need_the_low_critic_and_valid_settings():
    with pytest.raises(configlib.ConfigError, match="subgoals"):
        configlib.load(ExperimentConfig, "experiments/maze.yaml", ["hierarchy.subgoals=graph"])
    with pytest.raises(configlib.ConfigError, match="max_hops"):
        configlib.load(ExperimentConfig, "experiments/maze.yaml", ["hierarchy.max_hops=0"])
    overrides = ["hierarchy.subgoals=landmarks", "critic.enabled=false"]
    cfg = configlib.load(ExperimentConfig, "experiments/maze.yaml", overrides)
    with pytest.raises(configlib.ConfigError, match="low critic"):
        build(cfg)
