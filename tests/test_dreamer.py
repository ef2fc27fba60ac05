"""The Dreamer-style baseline: its pieces against hand computations (symlog / two-hot round trip,
lambda-returns in imagination, KL balancing with free nats, percentile return normalisation,
unimix, straight-through samples, the actor's distribution), its `act` on the family contract
(memory reset at episode starts, one trace, jit == no-jit), and a tiny online run that trains
through `ami train` and resumes bit for bit after a kill."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ami import run, scalars
from ami.agent import TimeStep
from ami.baselines.dreamer import objectives as obj
from ami.baselines.dreamer import rssm
from ami.config import load_experiment

TINY = (
    "agent.name=dreamer",
    "dreamer.deter=32",
    "dreamer.hidden=32",
    "dreamer.stoch=4",
    "dreamer.classes=4",
    "dreamer.horizon=5",
    "dreamer.batch_size=4",
    "dreamer.length=8",
    "online.action_noise=0",
)


def pendulum(*overrides: str):
    return load_experiment({"env": {"name": "pendulum"}}, [*TINY, *overrides])


# ----- pieces: exact values -----


def test_symlog_two_hot_round_trip():
    x = jnp.array([-300.0, -2.5, -0.01, 0.0, 0.3, 7.0, 950.0])
    np.testing.assert_allclose(scalars.symexp(scalars.symlog(x)), x, rtol=1e-5)
    head = scalars.make_head("twohot", bins=255, limit=20.0)
    bins = jnp.linspace(-20.0, 20.0, 255)
    weights = scalars.twohot(scalars.symlog(x), bins)  # [7, 255]: two neighbours, mean = symlog(x)
    assert jnp.all(jnp.sum(weights > 0, axis=-1) <= 2)
    np.testing.assert_allclose(jnp.sum(weights, -1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(jnp.sum(weights * bins, -1), scalars.symlog(x), atol=1e-5)
    np.testing.assert_allclose(head.value(jnp.log(weights)), x, rtol=1e-4, atol=1e-5)  # logits -> value


def test_imagined_lambda_returns_against_a_hand_computation():
    """H = 2: R_1 = r_2 + g c_2 v_2 = 2 + .9 * .5 * 30 = 15.5;
    R_0 = r_1 + g c_1 ((1 - l) v_1 + l R_1) = 1 + .9 * (.5 * 20 + .5 * 15.5) = 16.975."""
    r, c, v = jnp.array([1.0, 2.0]), jnp.array([1.0, 0.5]), jnp.array([10.0, 20.0, 30.0])
    np.testing.assert_allclose(obj.imagined_returns(r, v, c, 0.9, 0.5), [16.975, 15.5], rtol=1e-6)
    # lam = 1: discounted rewards then the last value; lam = 0: one-step targets
    np.testing.assert_allclose(obj.imagined_returns(r, v, c, 0.9, 1.0), [1 + 0.9 * 15.5, 15.5], rtol=1e-6)
    np.testing.assert_allclose(obj.imagined_returns(r, v, c, 0.9, 0.0), [1 + 0.9 * 20, 15.5], rtol=1e-6)


def test_kl_balancing_with_free_nats():
    """KL([.9, .1] || [.5, .5]) = .9 ln 1.8 + .1 ln .2 = 0.368064; the two terms weigh .5 and .1;
    below the free nats the loss is the constant and no gradient flows; the dynamics term trains
    only the prior, the representation term only the posterior."""
    post, prior = jnp.log(jnp.array([[0.9, 0.1]])), jnp.log(jnp.array([[0.5, 0.5]]))
    kl = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    loss, metrics = obj.kl_balance(post, prior, 0.1, 0.5, 0.1)
    np.testing.assert_allclose(loss, 0.6 * kl, rtol=1e-6)
    np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-6)
    free, _ = obj.kl_balance(post, prior, 1.0, 0.5, 0.1)
    np.testing.assert_allclose(free, 0.6, rtol=1e-6)
    grads = jax.grad(lambda q, p: obj.kl_balance(q, p, 1.0, 0.5, 0.1)[0], argnums=(0, 1))(post, prior)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in grads)
    dyn_q, dyn_p = jax.grad(lambda q, p: obj.kl_balance(q, p, 0.0, 1.0, 0.0)[0], argnums=(0, 1))(post, prior)
    rep_q, rep_p = jax.grad(lambda q, p: obj.kl_balance(q, p, 0.0, 0.0, 1.0)[0], argnums=(0, 1))(post, prior)
    assert float(jnp.max(jnp.abs(dyn_q))) == 0.0 and float(jnp.max(jnp.abs(dyn_p))) > 0.1
    assert float(jnp.max(jnp.abs(rep_p))) == 0.0 and float(jnp.max(jnp.abs(rep_q))) > 0.1


def test_percentile_return_normalisation():
    """Returns 0..100: percentiles 5 and 95; with no memory (decay 0) the scale is 90; from zeros
    with decay .99 the EMA is (.05, .95) and the scale is clipped up to 1."""
    returns = jnp.arange(101.0)
    state, scale = obj.update_return_scale(obj.init_return_scale(), returns, 0.0)
    np.testing.assert_allclose([state.low, state.high, scale], [5.0, 95.0, 90.0], rtol=1e-6)
    state, scale = obj.update_return_scale(obj.init_return_scale(), returns, 0.99)
    np.testing.assert_allclose([state.low, state.high, scale], [0.05, 0.95, 1.0], rtol=1e-5)
    _, scale = obj.update_return_scale(state, returns * 1000.0, 0.99)
    np.testing.assert_allclose(scale, 0.99 * 0.9 + 0.01 * 90_000.0, rtol=1e-5)


def test_unimix_and_straight_through_samples():
    logits = jnp.array([[10.0, -10.0, 0.0, 0.0]])
    probs = jnp.exp(rssm.unimix_logits(logits, 0.01))
    np.testing.assert_allclose(jnp.sum(probs), 1.0, rtol=1e-6)
    assert float(jnp.min(probs)) >= 0.01 / 4
    sample = rssm.sample_onehot(jax.random.key(0), jnp.log(probs))
    assert set(np.asarray(sample).ravel().tolist()) <= {0.0, 1.0} and float(jnp.sum(sample)) == 1.0
    # the gradient of a straight-through sample is that of the probabilities
    w = jnp.array([1.0, 2.0, 3.0, 4.0])
    soft = jnp.array([[1.0, -1.0, 0.0, 0.5]])
    got = jax.grad(lambda lg: jnp.sum(rssm.sample_onehot(jax.random.key(0), jax.nn.log_softmax(lg)) * w))(soft)
    want = jax.grad(lambda lg: jnp.sum(jax.nn.softmax(lg) * w))(soft)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_actors_bounded_normal():
    out = jnp.array([0.5, -2.0])  # one action: mean tanh(.5), std .9 sigmoid(0) + .1 = .55
    dist = obj.bounded_normal(out, 0.1, 1.0)
    np.testing.assert_allclose([dist.mean[0], dist.std[0]], [math.tanh(0.5), 0.55], rtol=1e-6)
    x = jnp.array([0.2])
    want = -0.5 * ((0.2 - math.tanh(0.5)) / 0.55) ** 2 - math.log(0.55) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(obj.log_prob(dist, x), want, rtol=1e-6)
    np.testing.assert_allclose(obj.entropy(dist), 0.5 * math.log(2 * math.pi * math.e * 0.55**2), rtol=1e-6)
    raw, action = obj.sample_normal(obj.Normal(jnp.array([0.9]), jnp.array([5.0])), jax.random.key(3))
    assert float(jnp.abs(action[0])) <= 1.0 and float(jnp.clip(raw, -1, 1)[0]) == float(action[0])


# ----- the agent on the family contract -----


def _step(obs, first):
    n = obs.shape[0]
    return TimeStep(obs, jnp.zeros(n), jnp.asarray(first), jnp.zeros(n, bool))


def test_act_resets_memory_at_episode_starts_traces_once_and_jit_equals_no_jit():
    _cfg, _env, agent = run.build(pendulum("data.num_envs=3"))
    state = agent.init(jax.random.key(0), 3)
    obs = jax.random.normal(jax.random.key(1), (3, 3))
    key = jax.random.key(2)
    state, _, _ = agent.act(state, _step(obs, [True, True, True]), key)  # memories now hold a state
    traces = []

    def act(s, step, k):
        traces.append(1)
        return agent.act(s, step, k)

    jitted = jax.jit(act)
    mixed = _step(obs * 0.5, [True, False, True])
    a_jit = jitted(state, mixed, key)[1]
    jitted(state, _step(obs, [False, True, False]), key)
    assert len(traces) == 1
    np.testing.assert_allclose(a_jit, agent.act(state, mixed, key)[1], rtol=1e-5, atol=1e-6)
    # env 0 and 2 start an episode: they act as from a fresh memory, env 1 does not
    fresh = agent.act(agent.reset(state, 3), _step(obs * 0.5, [True, True, True]), key)[1]
    np.testing.assert_allclose(a_jit[jnp.array([0, 2])], fresh[jnp.array([0, 2])], rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(a_jit[1] - fresh[1]))) > 1e-4


def test_the_dreamer_agent_refuses_the_true_dynamics_controller_and_goal_envs():
    _cfg, _env, agent = run.build(pendulum("data.num_envs=2"))
    state = agent.init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="no planner"):
        agent.act(state, _step(jnp.zeros((2, 3)), [True, True]), jax.random.key(0), plan_fn=lambda *a: None)
    with pytest.raises(ValueError, match="reward tasks from vector observations"):
        run.build(load_experiment({"env": {"name": "two_rooms"}}, list(TINY)))


def test_a_tiny_dreamer_run_trains_and_a_killed_run_resumes_bit_for_bit(tmp_path):
    cfg = pendulum(
        "env.episode_length=50",
        "data.num_envs=2",
        "online.seed_steps=100",
        "online.chunk=50",
        "online.env_steps=300",
        "online.updates_per_step=0.5",
        "online.checkpoint_every=100",
        "eval.episodes=2",
    )
    whole = run.train(cfg, tmp_path / "whole", quiet=True)
    # 2 envs x 0.5: one update per decision from the one that completes the seed steps
    assert whole["env_steps"] == 300 and whole["updates"] == (300 - 100) // 2 + 1
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    learned = [r for r in rows if r["phase"] == "online" and r["updates"] > 0]
    for key in ("model_loss", "kl", "actor_loss", "critic_loss", "imagined_return"):
        assert all(np.isfinite(r[key]) for r in learned), key
    sliced_dir = tmp_path / "sliced"
    assert run.train(cfg, sliced_dir, quiet=True, max_chunks=1) == {"status": "unfinished", "env_steps": 100}
    sliced = run.train(cfg, sliced_dir, quiet=True)
    assert sliced["controllers"] == whole["controllers"] and sliced["updates"] == whole["updates"]
    from ami import checkpoint

    a = checkpoint.restore(tmp_path / "whole" / "checkpoints", 300)[0]
    b = checkpoint.restore(sliced_dir / "checkpoints", 300)[0]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = (jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v for v in (x, y))
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
