"""The agent (`ami.agent`): `act` as receding-horizon MPC under jit (one trace, re-planning on
schedule, executing the stored plan in between), determinism, `update`, the configurator's
rule (`ami.configurator.resolve`) and the energy of `ami.cost` against a hand computation."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from ami import agent as agent_module
from ami import cost, nn, policy, run, world_model
from ami.actor import planner_defaults
from ami.agent import Params, TimeStep, UpdateBatch
from ami.config import PLANNER_COMMON, ExperimentConfig, load_experiment
from ami.configurator import Task, resolve

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
SMALL_HIDDEN = (32, 32)
SMALL = (
    "perception.hidden=[32,32]",
    "world_model.hidden=[32,32]",
    "critic.hidden=[32,32]",
    "train.batch_size=16",
    "critic.batch_size=16",
    "planner.iterations=3",
    "planner.restarts=2",
    "planner.horizon=4",
    "planner.replan_every=3",
)
N = 4  # environments acting in parallel


def step_of(obs, goal, first=False):
    """The `TimeStep` of a goal task at `obs`, `goal [N, ...]` (no episode boundary unless `first`)."""
    n = obs.shape[0]
    flags = jnp.full((n,), first, jnp.bool_)
    return TimeStep(obs, jnp.zeros((n,), jnp.float32), flags, jnp.zeros((n,), jnp.bool_), goal)


def build(*overrides: str):
    return run.build(load_experiment(QUICKSTART, [*SMALL, *overrides]))


@pytest.fixture(scope="module")
def small():
    """`(cfg, env, agent)` for Two-Rooms with tiny networks and a tiny planner."""
    return build()


@pytest.fixture(scope="module")
def fresh(small):
    """`agent.init(key(0), N)`: a fresh agent state (`act` and `update` never change their inputs)."""
    _, _, agent = small
    return jax.jit(agent.init, static_argnums=1)(jax.random.key(0), N)


@pytest.fixture(scope="module")
def counted_act(small):
    """`(jitted act, traces)`: `traces` gains an entry each time `act` is traced."""
    _, _, agent = small
    traces = []

    def act(state, obs, goal, key):
        traces.append(None)  # runs only while tracing
        return agent.act(state, step_of(obs, goal), key)

    return jax.jit(act), traces


@pytest.fixture(scope="module")
def update_fn(small):
    _, _, agent = small
    return jax.jit(agent.update)


def first_observations(env, n: int = N, seed: int = 0):
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(seed), n))
    return states, states.obs, states.info[envs.GOAL_OBS]


# ----- act -----


def test_act_traces_once_replans_on_schedule_and_executes_the_stored_plan(small, fresh, counted_act):
    cfg, env, _ = small
    act, traces = counted_act
    state = fresh
    states, obs, goal = first_observations(env)
    step = jax.jit(jax.vmap(env.step))
    replanned, plan = [], None
    for i in range(8):
        state, action, info = act(state, obs, goal, jax.random.fold_in(jax.random.key(1), i))
        assert action.shape == (N, env.action_size) and action.dtype == jnp.float32
        assert bool(jnp.all(jnp.abs(action) <= 1.0))
        replanned.append(bool(info["replanned"]))
        if replanned[-1]:
            plan, since = np.asarray(state.memory.plan), 0
            assert bool(jnp.all(jnp.isfinite(info["plan_energy"])))
        else:
            since += 1
            assert bool(jnp.all(jnp.isnan(info["plan_energy"])))
        # between re-plans the agent executes the stored plan step by step
        np.testing.assert_array_equal(np.asarray(action), plan[:, since])
        states = step(states, action)
        obs = states.obs
    assert len(traces) == 1
    assert replanned == [i % cfg.planner.replan_every == 0 for i in range(8)]
    assert int(state.clock) == 8


def test_act_is_deterministic_and_jit_matches_no_jit(small, fresh, counted_act):
    _, env, agent = small
    state = fresh
    _, obs, goal = first_observations(env)
    key = jax.random.key(5)
    act, _ = counted_act
    _, a1, info1 = act(state, obs, goal, key)
    _, a2, info2 = act(state, obs, goal, key)
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(a2))
    np.testing.assert_array_equal(np.asarray(info1["plan_energy"]), np.asarray(info2["plan_energy"]))
    _, eager, eager_info = agent.act(state, step_of(obs, goal), key)
    np.testing.assert_allclose(np.asarray(eager), np.asarray(a1), atol=1e-4)
    np.testing.assert_allclose(np.asarray(eager_info["plan_energy"]), np.asarray(info1["plan_energy"]), rtol=1e-4)
    _, other, _ = act(state, obs, goal, jax.random.key(6))
    assert not np.array_equal(np.asarray(other), np.asarray(a1))  # the key matters


def test_plan_energy_is_the_energy_of_the_stored_plan(small, fresh, counted_act):
    _, env, agent = small
    state = fresh
    _, obs, goal = first_observations(env)
    new_state, _, info = counted_act[0](state, obs, goal, jax.random.key(2))
    params, encode = state.learner.params, agent.modules.perception.encode
    z, g = encode(params.encoder, obs), encode(params.encoder, goal)
    energy = jax.vmap(agent.modules.energy, in_axes=(None, 0, 0, 0))(params, z, g, new_state.memory.plan)
    np.testing.assert_allclose(np.asarray(energy), np.asarray(info["plan_energy"]), rtol=1e-4, atol=1e-5)


# ----- update -----


@pytest.fixture(scope="module")
def batch(small):
    """A made-up `UpdateBatch` in Two-Rooms' shapes: JEPA windows of L steps and critic pairs."""
    cfg, _, _ = small
    b, length, bc = cfg.train.batch_size, cfg.world_model.prediction_horizon, cfg.critic.batch_size
    k_obs, k_act, k_pair, k_goal = jax.random.split(jax.random.key(1), 4)
    action = jax.random.uniform(k_act, (b, length, 2), minval=-1.0, maxval=1.0)
    start = jax.random.uniform(k_obs, (b, 1, 2), minval=-1.0, maxval=1.0)
    pair = jax.random.uniform(k_pair, (bc, 2), minval=-1.0, maxval=1.0)
    at_goal = jnp.arange(bc) < 4  # the first 4 pairs have the observation itself as goal
    return UpdateBatch(
        obs=jnp.concatenate([start, start + jnp.cumsum(0.05 * action, axis=1)], axis=1),
        action=action,
        reward=jnp.zeros((b, length)),
        terminal=jnp.zeros((b, length)),
        mask=jnp.ones((b,)).at[0].set(0.0),
        pair_obs=pair,
        pair_next_obs=pair + 0.01,
        pair_goal=jnp.where(at_goal[:, None], pair, jax.random.uniform(k_goal, (bc, 2), minval=-1.0, maxval=1.0)),
        pair_at_goal=at_goal.astype(jnp.float32),
        pair_mask=jnp.ones((bc,)),
    )


def _numpy(x) -> np.ndarray:
    return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


def _leaves_changed(before, after) -> list[bool]:
    return [
        not np.array_equal(_numpy(a), _numpy(b))
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    ]


def test_update_changes_parameters_and_counts_steps(small, batch, update_fn):
    _, _, agent = small
    state = agent.init(jax.random.key(0), 1)
    new, metrics = update_fn(state, batch)
    assert int(state.learner.step) == 0 and int(new.learner.step) == 1
    for name in ("encoder", "predictor"):
        assert all(_leaves_changed(getattr(state.learner.params, name), getattr(new.learner.params, name))), name
    # the metric critic ||psi(z) - psi(g)|| does not see psi's output bias: it alone keeps its zeros
    critic_before, critic_after = state.learner.params.critic, new.learner.params.critic
    changed = jax.tree.map(lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b)), critic_before, critic_after)
    out = f"Dense_{len(SMALL_HIDDEN)}"
    assert changed.pop(out) == {"bias": False, "kernel": True}
    assert all(jax.tree.leaves(changed))
    # EMA targets move a little towards the new parameters
    assert any(_leaves_changed(state.learner.target_encoder, new.learner.target_encoder))
    assert any(_leaves_changed(state.learner.target_critic, new.learner.target_critic))
    assert not np.array_equal(jax.random.key_data(state.learner.key), jax.random.key_data(new.learner.key))
    expected = {"loss", "pred_loss", "z_std", "z_rank", "vicreg_variance", "vicreg_covariance", "model_grad_norm"}
    assert expected | {"critic_loss", "critic_mean", "critic_max"} <= set(metrics)
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert float(metrics["model_grad_norm"]) > 0.0
    again, _ = update_fn(new, batch)
    assert int(again.learner.step) == 2


def test_update_is_deterministic_across_independent_inits(small, batch, update_fn):
    _, _, agent = small
    _, _, other_agent = build()  # a second agent built from the same config, initialised on its own
    run_a = update_fn(agent.init(jax.random.key(3), 1), batch)
    run_b = update_fn(other_agent.init(jax.random.key(3), 1), batch)
    for k in run_a[1]:
        assert float(run_a[1][k]) == float(run_b[1][k]), k
    assert not any(_leaves_changed(run_a[0].learner, run_b[0].learner))
    _, different = update_fn(agent.init(jax.random.key(4), 1), batch)
    assert float(different["loss"]) != float(run_a[1]["loss"])


# ----- configurator -----


def _cfg(*overrides: str) -> ExperimentConfig:
    return load_experiment({}, overrides)


TASK = Task(goal_conditioned=True, action_size=2, episode_length=100)


def test_resolve_with_critic_fills_every_none_by_the_rule():
    cfg = _cfg("eval.budget=medium")
    out = resolve(cfg, TASK)
    # H = clip(100 // 6, 8, 32) = 16, re-plan every 16 // 4 = 4; medium: 8 restarts, 30 iterations
    assert (out.planner.horizon, out.planner.replan_every) == (16, 4)
    assert (out.planner.restarts, out.planner.iterations, out.planner.learning_rate) == (8, 30, 0.3)
    assert (out.cost.goal_weight, out.cost.critic_weight, out.cost.terminal) == (0.1, 1.0, False)
    assert out.env.episode_length == 100
    assert cfg.planner.horizon is None and cfg.cost.goal_weight is None  # the input is unchanged
    assert not _nones(out)


def test_resolve_leaves_no_none_at_all():
    assert _nones(resolve(_cfg(), TASK)) == []


def test_resolve_without_critic():
    out = resolve(_cfg("critic.enabled=false", "eval.budget=small"), TASK)
    # H = clip(100 // 2, 16, 64) = 50, re-plan every 12; small: 4 restarts, 16 iterations
    assert (out.planner.horizon, out.planner.replan_every) == (50, 12)
    assert (out.planner.restarts, out.planner.iterations) == (4, 16)
    assert (out.cost.goal_weight, out.cost.critic_weight, out.cost.terminal) == (1.0, 0.0, True)
    assert not _nones(out)


@pytest.mark.parametrize(
    ("episode_length", "critic", "horizon", "replan_every"),
    [(30, True, 8, 2), (1000, True, 32, 8), (20, False, 16, 4), (1000, False, 64, 16), (60, True, 10, 2)],
)
def test_resolve_horizon_is_clipped(episode_length, critic, horizon, replan_every):
    out = resolve(_cfg(f"critic.enabled={str(critic).lower()}"), TASK._replace(episode_length=episode_length))
    assert (out.planner.horizon, out.planner.replan_every) == (horizon, replan_every)


@pytest.mark.parametrize(("budget", "restarts", "iterations"), [("small", 4, 16), ("medium", 8, 30), ("large", 16, 50)])
def test_resolve_budgets(budget, restarts, iterations):
    out = resolve(_cfg(f"eval.budget={budget}"), TASK)
    assert (out.planner.restarts, out.planner.iterations) == (restarts, iterations)


def test_resolve_keeps_explicit_values():
    cfg = _cfg(
        "planner.horizon=10",
        "planner.restarts=3",
        "planner.learning_rate=0.05",
        "cost.goal_weight=0.5",
        "cost.terminal=true",
        "env.episode_length=40",
        "eval.budget=large",
    )
    out = resolve(cfg, TASK)
    assert (out.planner.horizon, out.planner.restarts, out.planner.learning_rate) == (10, 3, 0.05)
    assert out.planner.replan_every == 2  # derived from the given horizon: 10 // 4
    assert out.planner.iterations == 50  # still from the budget
    assert (out.cost.goal_weight, out.cost.critic_weight, out.cost.terminal) == (0.5, 1.0, True)
    assert out.env.episode_length == 40
    explicit = _cfg("planner.replan_every=7", "cost.critic_weight=0.0", "planner.iterations=2")
    out = resolve(explicit, TASK)
    assert (out.planner.replan_every, out.cost.critic_weight, out.planner.iterations) == (7, 0.0, 2)


def test_resolve_is_idempotent():
    once = resolve(_cfg(), TASK)
    assert resolve(once, TASK) == once


@pytest.mark.parametrize(("episode_length", "horizon", "gamma"), [(500, 5, 0.99), (200, 3, 0.975), (5000, 8, 0.995)])
def test_resolve_a_reward_task_by_the_rule(episode_length, horizon, gamma):
    """Reward tasks: online, H = clip(L // 100, 3, 8), re-plan every step, gamma = clip(1 - 5 / L, .95, .995),
    reward and value terms only, a value-trained policy proposing half the restarts."""
    task = Task(goal_conditioned=False, action_size=1, episode_length=episode_length, action_repeat=2)
    out = resolve(_cfg("env.name=pendulum", "data.num_envs=4", "online.env_steps=8000"), task)
    assert (out.planner.horizon, out.planner.replan_every, out.value.gamma) == (horizon, 1, gamma)
    c = out.cost
    assert (c.goal_weight, c.critic_weight, c.reward_weight, c.value_weight) == (0.0, 0.0, 1.0, 1.0)
    assert out.online.enabled and out.policy.enabled and out.policy.objective == "value"
    assert out.policy.candidates == out.planner.restarts // 2 == 4
    assert out.data.steps_per_env == 8000 // (2 * 4) and out.eval.controllers == ("learned", "random")
    assert not _nones(out)
    goal = resolve(_cfg(), TASK)
    assert not goal.online.enabled and not goal.policy.enabled and goal.data.steps_per_env == 400


def _nones(cfg, path: str = "") -> list[str]:
    """Dotted names of the fields still None (a resolved config has none but the common planner
    settings its planner kind lacks, and `distributed.*`, where None means: the machine's devices
    and the cluster's environment, read when the run starts)."""
    out = []
    for name, value in vars(cfg).items():
        key = f"{path}.{name}" if path else name
        lacks = key.startswith("planner.") and name in PLANNER_COMMON and name not in planner_defaults(cfg.name)
        if value is None and not lacks and not key.startswith("distributed."):
            out.append(key)
        elif hasattr(value, "__dataclass_fields__"):
            out.extend(_nones(value, key))
    return out


# ----- energy -----


@pytest.fixture(scope="module")
def energy_problem():
    """A random predictor and critic over D=5 latents, A=2 actions, H=6 steps."""
    model = world_model.make_world_model(5, 2, (16,))
    critic = cost.make_critic(5, (16,))
    k_pred, k_critic, k_z, k_g, k_a = jax.random.split(jax.random.key(0), 5)
    params = Params(encoder=None, predictor=model.init(k_pred), critic=critic.init(k_critic))
    z0, goal = jax.random.normal(k_z, (5,)), jax.random.normal(k_g, (5,))
    actions = jax.random.uniform(k_a, (6, 2), minval=-1.0, maxval=1.0)
    return model, critic, params, z0, goal, actions


def test_energy_with_goal_weight_only_is_the_terminal_squared_distance(energy_problem):
    model, critic, params, z0, goal, actions = energy_problem
    energy = cost.make_energy(
        model, cost.Heads(critic=critic), cost.EnergyWeights(goal=1.0, critic=0.0, action=0.0, terminal=True), True
    )
    z = np.asarray(model.rollout(params.predictor, z0, actions), np.float64)
    expected = np.sum((z[-1] - np.asarray(goal)) ** 2) / 5
    np.testing.assert_allclose(float(energy(params, z0, goal, actions)), expected, rtol=1e-6)
    # with critic weight 0 the critic is never read: a params dict without it works
    no_critic = Params(encoder=None, predictor=params.predictor)
    np.testing.assert_allclose(float(energy(no_critic, z0, goal, actions)), expected, rtol=1e-6)
    np.testing.assert_allclose(float(jax.jit(energy)(params, z0, goal, actions)), expected, rtol=1e-5)


@pytest.mark.parametrize("terminal", [True, False])
def test_energy_matches_the_documented_formula(energy_problem, terminal):
    """E = sum_t c_t (w_goal ||z_t - g||^2 / D + w_critic C(z_t, g)) + w_action mean_t ||a_t||^2."""
    model, critic, params, z0, goal, actions = energy_problem
    w = cost.EnergyWeights(goal=0.7, critic=0.3, action=0.2, terminal=terminal)
    value = float(cost.make_energy(model, cost.Heads(critic=critic), w, True)(params, z0, goal, actions))
    z = model.rollout(params.predictor, z0, actions)
    c = np.array([float(critic.apply(params.critic, z[t], goal)) for t in range(6)])
    z, g, a = (np.asarray(x, np.float64) for x in (z, goal, actions))
    per_step = 0.7 * np.sum((z - g) ** 2, axis=-1) / 5 + 0.3 * c
    weights = np.eye(6)[-1] if terminal else np.full(6, 1 / 6)
    expected = np.sum(weights * per_step) + 0.2 * np.mean(np.sum(a**2, axis=-1))
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_agent_energy_uses_the_resolved_weights(small):
    cfg, _, agent = small
    w = agent.modules.weights
    assert (w.goal, w.critic, w.action, w.terminal) == (
        cfg.cost.goal_weight,
        cfg.cost.critic_weight,
        cfg.cost.action_weight,
        cfg.cost.terminal,
    )
    _, _, no_critic = build("critic.enabled=false")
    assert no_critic.modules.weights.critic == 0.0 and no_critic.modules.critic is None


def test_fourier_features_shape_identity_and_metric_critic_symmetry():
    from ami import cost

    z = jax.random.normal(jax.random.key(0), (5, 4))
    np.testing.assert_array_equal(nn.fourier_features(4, 0, 1.0)(z), z)
    out = nn.fourier_features(4, 3, 2.0)(z)
    assert out.shape == (5, 4 + 6)
    np.testing.assert_allclose(out[:, 4:7] ** 2 + out[:, 7:] ** 2, 1.0, rtol=1e-5)
    critic = cost.make_critic(4, (8,), fourier=3, fourier_scale=2.0)
    params = critic.init(jax.random.key(1))
    np.testing.assert_allclose(critic.apply(params, z, z[::-1]), critic.apply(params, z[::-1], z), rtol=1e-6)
    np.testing.assert_allclose(critic.apply(params, z, z), 1e-3, rtol=1e-3)


def test_inverse_dynamics_head_is_trained_when_weighted():
    from ami import run
    from ami.agent import UpdateBatch

    _, _, agent = run.build(
        _cfg(
            "world_model.inverse_weight=1.0",
            "perception.hidden=[16]",
            "world_model.hidden=[16]",
            "critic.enabled=false",
        )
    )
    state = agent.init(jax.random.key(0), 1)
    assert state.learner.params.inverse is not None
    obs = jax.random.uniform(jax.random.key(1), (4, 3, 2), minval=-1.0, maxval=1.0)
    action = jax.random.uniform(jax.random.key(2), (4, 2, 2), minval=-1.0, maxval=1.0)
    pair = jnp.zeros((4, 2))
    zeros = jnp.zeros((4, 2))
    batch = UpdateBatch(obs, action, zeros, zeros, jnp.ones(4), pair, pair, pair, jnp.zeros(4), jnp.ones(4))
    new, metrics = agent.update(state, batch)
    assert np.isfinite(float(metrics["inverse_loss"]))
    before, after = jax.tree.leaves(state.learner.params.inverse), jax.tree.leaves(new.learner.params.inverse)
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    agent_without_inverse = run.build(_cfg("critic.enabled=false"))[2]
    assert agent_without_inverse.init(jax.random.key(0), 1).learner.params.inverse is None


def test_model_critic_backup_takes_the_best_imagined_or_observed_successor():
    """target = 1 + gamma * min(C(z_next, g), min_k C(predict(z, a_k), g)); 0 at the goal; least squares."""
    critic = cost.Critic(init=None, apply=lambda p, z, g: jnp.sum(jnp.abs(z - g), -1))
    predict = lambda z, a: z + a  # noqa: E731
    z = jnp.array([[3.0], [3.0], [1.0]])
    z_next = jnp.array([[2.5], [1.5], [1.0]])
    goal = jnp.zeros((3, 1))
    at_goal = jnp.array([0.0, 0.0, 1.0])
    actions = jnp.array([[-1.0], [0.0], [1.0]])
    loss, metrics = cost.model_critic_loss(None, None, critic, predict, z, z_next, goal, at_goal, actions, 0.9)
    targets = np.array([1 + 0.9 * 2.0, 1 + 0.9 * 1.5, 0.0])  # imagined 2 beats observed 2.5; observed 1.5 wins
    preds = np.array([3.0, 3.0, 1.0])
    np.testing.assert_allclose(loss, np.mean((targets - preds) ** 2), rtol=1e-6)
    np.testing.assert_allclose(metrics["critic_mean"], preds.mean(), rtol=1e-6)


def test_normalized_encoder_standardises_with_fixed_statistics_that_updates_never_change(batch):
    """`perception.normalize`: encode(obs) == net(standardised obs); the statistics survive updates exactly."""
    from ami import agent as agent_lib
    from ami import perception

    cfg, _, agent = build("perception.normalize=true")
    state = agent.init(jax.random.key(0), N)
    obs = jnp.array([[0.5, -1.0], [1.5, 3.0], [2.5, 5.0]])
    state = agent_lib.with_obs_stats(state, obs)
    enc = state.learner.params.encoder
    np.testing.assert_allclose(enc[perception.OBS_MEAN], [1.5, 7.0 / 3.0], rtol=1e-6)
    np.testing.assert_allclose(enc[perception.OBS_STD], np.std(np.asarray(obs), axis=0), rtol=1e-6)
    plain = perception.make_perception((2,), cfg.perception.latent_size, cfg.perception.hidden)
    standardised = (obs - enc[perception.OBS_MEAN]) / enc[perception.OBS_STD]
    encode = agent.modules.perception.encode
    np.testing.assert_allclose(encode(enc, obs), plain.encode(enc["net"], standardised), rtol=1e-6)
    after, _ = jax.jit(agent.update)(state, batch)
    for name in (perception.OBS_MEAN, perception.OBS_STD):
        np.testing.assert_array_equal(after.learner.params.encoder[name], enc[name])
        np.testing.assert_array_equal(after.learner.target_encoder[name], enc[name])
    assert any(_leaves_changed(enc["net"], after.learner.params.encoder["net"]))


# ----- amortised policy -----


def test_policy_is_trained_by_update_and_its_proposals_reach_the_planner(batch):
    """`policy.enabled`: `update` trains pi (model fixed in its loss) and `act` plans with its prior."""
    cfg, env, agent = build(
        "policy.enabled=true",
        "policy.hidden=[16]",
        "policy.candidates=2",
        "planner.name=cem",
        "planner.restarts=null",
        "planner.population=8",
        "planner.iterations=2",
    )
    state = agent.init(jax.random.key(0), N)
    assert state.learner.params.policy is not None and state.learner.policy_opt is not None
    new, metrics = jax.jit(agent.update)(state, batch)
    assert all(_leaves_changed(state.learner.params.policy, new.learner.params.policy))
    assert {"policy_loss", "policy_action_abs"} <= set(metrics) and np.isfinite(float(metrics["policy_loss"]))
    # the prior is exactly the policy's noiseless rollout at member P-th from the end: with a
    # population of the prior's size only, the planner can return nothing but a proposal
    params = new.learner.params
    modules = agent.modules
    _, obs, goal = first_observations(env)
    z = modules.perception.encode(params.encoder, obs[0])
    g = modules.perception.encode(params.encoder, goal[0])
    prior = agent_module.policy_prior(modules, params, z, g, jax.random.key(5))
    assert prior.shape == (2, cfg.planner.horizon, 2)
    predict = partial(modules.world_model.predict, params.predictor)
    expected = policy.rollout(modules.policy, params.policy, predict, z, g, cfg.planner.horizon)
    np.testing.assert_allclose(prior[0], expected, rtol=1e-5, atol=1e-6)
    _, action, _ = jax.jit(agent.act)(new, step_of(obs, goal), jax.random.key(6))
    assert action.shape == (N, 2) and bool(jnp.all(jnp.isfinite(action)))


# ----- the visit term (short-term memory) -----


def test_visit_cost_exact_value_and_masking():
    z = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])  # H = 3
    visited = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])  # K = 3, the last row not recorded yet
    valid = np.array([True, True, False])
    value = float(cost.visit_cost(jnp.asarray(z), jnp.asarray(visited), jnp.asarray(valid), 0.5))
    d2 = np.sum((z[:, None] - visited[None, :2]) ** 2, axis=-1)
    expected = np.mean(np.sum(np.exp(-0.5 * d2 / 0.25), axis=-1))
    np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_energy_adds_the_weighted_visit_term_only_when_given(energy_problem):
    model, critic, params, z0, goal, actions = energy_problem
    w = cost.EnergyWeights(goal=0.7, critic=0.3, terminal=False)
    base = cost.make_energy(model, cost.Heads(critic=critic), w, True)
    visiting = cost.make_energy(model, cost.Heads(critic=critic), w._replace(visit=2.5, visit_scale=0.8), True)
    z = model.rollout(params.predictor, z0, actions)
    visited = jnp.concatenate([z[:3] + 0.1, jnp.zeros((2, z.shape[-1]))])  # K = 5, 3 recorded
    valid = jnp.array([True, True, True, False, False])
    expected = float(base(params, z0, goal, actions)) + 2.5 * float(cost.visit_cost(z, visited, valid, 0.8))
    got = float(visiting(params, z0, goal, actions, visited, valid))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got > float(base(params, z0, goal, actions)) + 0.1  # the recorded latents lie near the rollout
    # no memory given, or weight 0: the energy is unchanged
    assert float(visiting(params, z0, goal, actions)) == float(base(params, z0, goal, actions))
    assert float(base(params, z0, goal, actions, visited, valid)) == float(base(params, z0, goal, actions))


def test_visit_fade_scales_each_step_by_the_critics_steps_to_go(energy_problem):
    model, critic, params, z0, goal, actions = energy_problem
    w = cost.EnergyWeights(goal=0.0, critic=0.0, visit=1.0, visit_scale=0.8)
    z = model.rollout(params.predictor, z0, actions)
    visited, valid = z[:4] + 0.05, jnp.ones((4,), bool)
    x = cost.Imagined(z0, z, actions, goal, visited, valid)
    steps_to_go = np.asarray(critic.apply(params.critic, z, goal), np.float64)  # [H]
    fade = float(np.median(steps_to_go))  # some steps below it (faded), some above (whole)
    d2 = np.sum((np.asarray(z, np.float64)[:, None] - np.asarray(visited, np.float64)[None]) ** 2, axis=-1)
    per_step = np.sum(np.exp(-0.5 * d2 / 0.64), axis=-1)
    expected = np.mean(np.minimum(1.0, steps_to_go / fade) * per_step)
    got = float(cost.visit_term(params, cost.Heads(critic=critic), x, w._replace(visit_fade=fade)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got < float(cost.visit_term(params, cost.Heads(critic=critic), x, w)) - 1e-3  # it faded
    squared = np.mean(np.minimum(1.0, steps_to_go / fade) ** 2 * per_step)  # visit_fade_power 2: sharper
    w2 = w._replace(visit_fade=fade, visit_fade_power=2.0)
    np.testing.assert_allclose(float(cost.visit_term(params, cost.Heads(critic=critic), x, w2)), squared, rtol=1e-5)
    # no critic (or fade 0): the plain visit cost
    unfaded = float(cost.visit_cost(z, visited, valid, 0.8))
    no_critic = float(cost.visit_term(params, cost.Heads(), x, w._replace(visit_fade=fade)))
    assert no_critic == pytest.approx(unfaded, rel=1e-6)


def test_act_with_a_visit_term_keeps_the_history_and_plans_away_from_it():
    cfg, _, agent = build("cost.visit_weight=50.0", "cost.visit_scale=0.5", "cost.visit_history=7")
    state = agent.init(jax.random.key(0), 2)
    assert state.memory.latents.shape[:2] == (2, 7) and not bool(jnp.any(state.memory.latents_valid))
    obs = jnp.array([[-0.5, 0.2], [0.4, -0.3]])
    goal = jnp.array([[0.5, 0.2], [-0.4, -0.3]])
    act = jax.jit(agent.act)
    state, _, _ = act(state, step_of(obs, goal), jax.random.key(1))
    assert state.memory.latents_valid.tolist() == [[False] * 6 + [True]] * 2
    # the same decision with the history full of the current latent: the energy of the plan
    # includes the visit term, so the planned energy is higher than without a history
    z = agent.modules.perception.encode(state.learner.params.encoder, obs)
    full = state.memory._replace(
        latents=jnp.broadcast_to(z[:, None], (2, 7, z.shape[-1])), latents_valid=jnp.ones((2, 7), bool)
    )
    params = state.learner.params
    init = jnp.zeros((2, cfg.planner.horizon, 2))
    plan = jax.jit(agent.plan)  # eager planning is slow on CPU
    with_history = plan(params, z, z, init, jax.random.key(2), full)
    without = plan(params, z, z, init, jax.random.key(2))
    assert bool(jnp.all(with_history.energy > without.energy))


# ----- defects fixed: pairs across episode ends, the twin's prior -----


def test_critic_loss_leaves_out_pairs_outside_one_episode():
    critic = cost.Critic(init=None, apply=lambda p, z, g: jnp.sum(jnp.abs(z - g), -1))
    z, z_next, goal = jnp.array([[3.0], [1.0], [9.0]]), jnp.array([[2.0], [0.5], [0.0]]), jnp.zeros((3, 1))
    at_goal = jnp.zeros(3)
    loss, _ = cost.critic_loss(None, None, critic, z, z_next, goal, at_goal, 0.9, 0.5, jnp.array([1.0, 1.0, 0.0]))
    kept, _ = cost.critic_loss(None, None, critic, z[:2], z_next[:2], goal[:2], at_goal[:2], 0.9, 0.5)
    np.testing.assert_allclose(loss, kept, rtol=1e-6)
    # the batch carries the pairs' validity to the critic's loss
    from ami import train

    data = train.collect(envs.make("two_rooms", episode_length=5), jax.random.key(0), 2, 20, 0.5)
    critic_cfg = load_experiment(QUICKSTART, ["critic.batch_size=64", "critic.max_goal_offset=12"]).critic
    b = agent_module.sample_batch(
        agent_module.SampleSettings(8, 2, critic_cfg), True, train.to_replay(data), jax.random.key(1)
    )
    assert b.pair_mask.shape == (64,) and 0.0 < float(jnp.mean(b.pair_mask)) < 1.0  # offsets up to 12 > episodes of 5


def test_the_twin_plans_with_the_policy_prior():
    """With as many restarts as proposals and a negligible step, the twin's plan is one of the
    policy's proposals (made through the learned model), as the learned planner's is."""
    from ami.evaluate import twin_plan_fn

    _, env, agent = build(
        "policy.enabled=true",
        "policy.hidden=[16]",
        "policy.candidates=2",
        "policy.noise=0.5",
        "planner.restarts=2",
        "planner.iterations=1",
        "planner.learning_rate=1e-9",
        "planner.options={optimizer: adam}",  # a step of the given size (L-BFGS takes its own)
    )
    state = agent.init(jax.random.key(0), 2)
    states, obs, goal = first_observations(env, 2)
    params, m = state.learner.params, agent.modules
    z, g = m.perception.encode(params.encoder, obs), m.perception.encode(params.encoder, goal)
    init = jnp.zeros((2, m.planner.horizon, 2))
    result = jax.jit(twin_plan_fn(agent, env))(params, z, g, init, jax.random.key(3), states)
    for i in range(2):
        k_prior = jax.random.split(jax.random.split(jax.random.key(3), 2)[i])[1]
        prior = agent_module.policy_prior(m, params, z[i], g[i], k_prior)
        gaps = [float(jnp.max(jnp.abs(result.actions[i] - p))) for p in prior]
        assert min(gaps) < 1e-4, gaps
