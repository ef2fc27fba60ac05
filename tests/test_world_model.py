"""World model (`ami.world_model`): the JEPA loss learns Two-Rooms dynamics, anti-collapse keeps
the embedding spread (and its absence lets it collapse), exact values of the regularisers and
monitors, and the predictor's rollout against a Python loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from ami import run, train, world_model
from ami.agent import Params
from ami.config import load_experiment
from ami.perception import make_perception

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
SMALL = (
    "perception.hidden=[32,32]",
    "world_model.hidden=[32,32]",
    "critic.hidden=[32,32]",
    "critic.enabled=false",
    "world_model.contrastive_weight=0.0",  # the anti-collapse terms alone (InfoNCE also prevents collapse)
    "train.batch_size=32",
    "critic.batch_size=32",
    "data.num_envs=32",
    "data.steps_per_env=100",
    "train.chunk=50",
)
NUM_CHUNKS = 40  # 2000 updates: compiling the chunk costs far more than running it


# ----- learning on Two-Rooms -----


@pytest.fixture(scope="module")
def two_rooms_replay():
    """32 envs x 100 steps of smooth random exploration in Two-Rooms, as a replay buffer."""
    data = jax.jit(train.collect, static_argnums=(0, 2, 3, 4))(envs.make("two_rooms"), jax.random.key(0), 32, 100, 0.8)
    return train.to_replay(data)


def _train(anti_collapse: str, replay):
    """Trains a small world model for `NUM_CHUNKS` chunks; returns `(cfg, agent, state, history)`."""
    cfg, _, agent = run.build(load_experiment(QUICKSTART, [*SMALL, f"world_model.anti_collapse={anti_collapse}"]))
    state = agent.init(jax.random.key(1), 1)
    chunk = train.make_train_chunk(agent, cfg.train.chunk)
    history = []
    for i in range(NUM_CHUNKS):
        state, metrics = chunk(state, replay, jax.random.fold_in(jax.random.key(2), i))
        history.append({k: float(v) for k, v in metrics.items()})
    return cfg, agent, state, history


@pytest.fixture(scope="module")
def trained(two_rooms_replay):
    """`trained(anti_collapse)`: each variant trained once per module, on the same data."""
    runs = {}

    def get(anti_collapse: str):
        if anti_collapse not in runs:
            runs[anti_collapse] = _train(anti_collapse, two_rooms_replay)
        return runs[anti_collapse]

    return get


def held_out_errors(cfg, agent, state, replay) -> tuple[float, float]:
    """Mean squared error `sum_d` of the predictor's rollout and of predicting "no motion"
    (`zhat_{t+k} = z_t`) on a fresh batch of windows, both against the online encoder."""
    batch = agent.sample(replay, jax.random.key(999))
    params = state.learner.params
    z = agent.modules.perception.encode(params.encoder, batch.obs)  # [B, L+1, D]
    rollout = jax.vmap(agent.modules.world_model.rollout, in_axes=(None, 0, 0))
    pred = rollout(params.predictor, z[:, 0], batch.action)
    model = float(jnp.mean(jnp.sum((pred - z[:, 1:]) ** 2, -1)))
    copy = float(jnp.mean(jnp.sum((z[:, :1] - z[:, 1:]) ** 2, -1)))
    return model, copy


def test_jepa_loss_falls_and_vicreg_keeps_the_embedding_spread(trained, two_rooms_replay):
    cfg, agent, state, history = trained("vicreg")
    first, last = history[0], history[-1]
    assert all(np.isfinite(v) for m in history for v in m.values())
    assert int(state.learner.step) == NUM_CHUNKS * cfg.train.chunk
    # measured (seeds 0-4): first ~50-90, last ~0.05-0.11
    assert last["pred_loss"] < 0.01 * first["pred_loss"], (first["pred_loss"], last["pred_loss"])
    # measured 0.73-0.85 (the variance hinge pulls each dimension's std towards 1)
    assert last["z_std"] > 0.5, last["z_std"]
    assert last["z_rank"] > 2.0, last["z_rank"]
    # the model predicts motion: far better than "the latent stays put" (measured ratio 0.2-0.4)
    model, copy = held_out_errors(cfg, agent, state, two_rooms_replay)
    assert model < 0.6 * copy, (model, copy)


def test_without_anti_collapse_the_embedding_collapses(trained):
    _, _, _, none = trained("none")
    _, _, _, vicreg = trained("vicreg")
    # same data, init and batches: the two runs start from the same embedding
    assert none[0]["z_std"] == pytest.approx(vicreg[0]["z_std"], rel=0.05)
    # measured: none 0.40 -> 0.007, vicreg -> 0.85; the loss of a collapsing model goes to 0
    assert none[-1]["z_std"] < 0.1 * none[0]["z_std"], (none[0]["z_std"], none[-1]["z_std"])
    assert none[-1]["z_std"] < 0.1 * vicreg[-1]["z_std"]
    assert none[-1]["pred_loss"] < 0.1 * vicreg[-1]["pred_loss"]
    assert none[-1]["vicreg_variance"] > 0.9  # the hinge would see it: almost every std is ~0


# ----- the JEPA loss on a hand-checked batch -----


def _loss_setup(anti_collapse: str):
    cfg = load_experiment(QUICKSTART, [*SMALL, f"world_model.anti_collapse={anti_collapse}"]).world_model
    perception = make_perception((2,), 4, (8,))
    model = world_model.make_world_model(4, 2, (8,))
    k_enc, k_target, k_pred, k_obs, k_act = jax.random.split(jax.random.key(3), 5)
    params = Params(encoder=perception.init(k_enc), predictor=model.init(k_pred))
    target = perception.init(k_target)
    obs = jax.random.normal(k_obs, (5, 4, 2))  # B=5 windows of L=3 steps
    actions = jax.random.uniform(k_act, (5, 3, 2), minval=-1.0, maxval=1.0)
    mask = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0])
    return cfg, perception, model, params, target, obs, actions, mask


@pytest.mark.parametrize("anti_collapse", ["vicreg", "none", "ema"])
def test_jepa_loss_matches_a_hand_computation(anti_collapse):
    cfg, perception, model, params, target_params, obs, actions, mask = _loss_setup(anti_collapse)
    loss_fn = jax.jit(lambda *args: world_model.jepa_loss(*args, perception, model, cfg))
    loss, metrics = loss_fn(params, target_params, obs, actions, mask, jax.random.key(0))
    z = np.asarray(perception.encode(params.encoder, obs), np.float64)
    target_encoder = target_params if anti_collapse == "ema" else params.encoder
    target = np.asarray(perception.encode(target_encoder, obs[:, 1:]), np.float64)
    predict, per_window = jax.jit(model.predict), []
    for b in range(5):  # the predictor stepped by hand, one window at a time
        zhat, errors = z[b, 0], []
        for k in range(3):
            zhat = np.asarray(predict(params.predictor, jnp.asarray(zhat, jnp.float32), actions[b, k]))
            errors.append(np.sum((zhat - target[b, k]) ** 2))
        per_window.append(np.mean(errors))
    m = np.asarray(mask)
    expected_pred = np.sum(np.array(per_window) * m) / np.sum(m)
    np.testing.assert_allclose(float(metrics["pred_loss"]), expected_pred, rtol=1e-5)
    flat = z.reshape(-1, 4)
    np.testing.assert_allclose(float(metrics["z_std"]), np.mean(np.std(flat, axis=0)), rtol=1e-5)
    expected = expected_pred
    if anti_collapse == "vicreg":
        expected += cfg.variance_weight * float(metrics["vicreg_variance"])
        expected += cfg.covariance_weight * float(metrics["vicreg_covariance"])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(metrics["loss"]) == float(loss)


def test_jepa_loss_ignores_masked_windows():
    cfg, perception, model, params, target, obs, actions, mask = _loss_setup("vicreg")
    args = (jax.random.key(0), perception, model, cfg)
    garbage = obs.at[1].set(100.0).at[4].set(-50.0)  # windows 1 and 4 are masked out
    _, clean = world_model.jepa_loss(params, target, obs, actions, mask, *args)
    _, dirty = world_model.jepa_loss(params, target, garbage, actions.at[1].set(1.0), mask, *args)
    assert float(dirty["pred_loss"]) == pytest.approx(float(clean["pred_loss"]), rel=1e-6)


# ----- regularisers and monitors: exact values -----


def test_vicreg_terms_exact_values():
    z = np.array([[0.0, 0.0, 1.0], [2.0, 0.5, -1.0], [4.0, 1.0, 0.0], [-2.0, 0.5, 3.0], [1.0, -1.0, 2.0]])
    variance, covariance = world_model.vicreg_terms(jnp.asarray(z, jnp.float32))
    centred = z - z.mean(axis=0)
    std = np.sqrt(np.mean(centred**2, axis=0) + 1e-4)  # std of column 0 is > 1: its hinge is 0
    assert std[0] > 1.0 > std[1]
    expected_variance = np.mean(np.maximum(1.0 - std, 0.0))
    cov = centred.T @ centred / (len(z) - 1)
    expected_covariance = (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / z.shape[1]
    np.testing.assert_allclose(float(variance), expected_variance, rtol=1e-5)
    np.testing.assert_allclose(float(covariance), expected_covariance, rtol=1e-5)


def test_vicreg_terms_vanish_for_decorrelated_unit_variance_embeddings():
    z = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * 2.0  # std 2 per column, C_01 = 0
    variance, covariance = world_model.vicreg_terms(z)
    assert float(variance) == 0.0
    assert float(covariance) == 0.0


def _gaussian(key_seed: int = 0, n: int = 4096, d: int = 8) -> jax.Array:
    return jax.random.normal(jax.random.key(key_seed), (n, d))


def test_sigreg_is_small_for_a_standard_gaussian_and_large_otherwise():
    x, key = _gaussian(), jax.random.key(7)
    gaussian = float(world_model.sigreg(x, key))
    assert 0.0 <= gaussian < 1.5, gaussian  # measured 0.38-0.54 over seeds
    for name, bad in [
        ("scaled x3", 3.0 * x),
        ("scaled x0.5", 0.5 * x),
        ("shifted", x + 1.0),
        ("all equal", jnp.ones_like(x)),
    ]:
        value = float(world_model.sigreg(bad, key))
        assert value > 100.0 * max(gaussian, 0.01), (name, value)


def test_sigreg_of_a_collapsed_batch_is_the_closed_form_value():
    """x = 0 on every slice: phi_x(t) = 1, so EP = N * int (1 - exp(-t^2/2))^2 exp(-t^2/2) dt (trapezoid)."""
    n = 4096
    value = float(world_model.sigreg(jnp.zeros((n, 8)), jax.random.key(0)))
    t = np.linspace(0.0, 3.0, 17)
    gauss = np.exp(-0.5 * t**2)
    integrand = (1.0 - gauss) ** 2 * gauss
    expected = n * np.sum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(t))
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_effective_rank_of_isotropic_and_rank_one_data():
    x = _gaussian()
    assert float(world_model.effective_rank(x)) == pytest.approx(8.0, rel=0.1)
    rank_one = x[:, :1] * jnp.arange(1.0, 9.0)  # every row a multiple of one direction
    assert float(world_model.effective_rank(rank_one)) == pytest.approx(1.0, abs=0.02)


def test_effective_rank_exact_value():
    """Centred singular values sqrt(2) * (1, 3): p = (1/4, 3/4), rank = exp(H(p))."""
    z = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0]]) + 5.0  # the offset is centred away
    p = np.array([0.25, 0.75])
    expected = np.exp(-np.sum(p * np.log(p)))
    np.testing.assert_allclose(float(world_model.effective_rank(z)), expected, rtol=1e-5)


# ----- temporal contrastive term -----


def _numpy_infonce(z: np.ndarray, offsets: np.ndarray, mask: np.ndarray, temperature: float) -> float:
    """The InfoNCE of `temporal_contrastive`, written out row by row in float64."""
    rows = [b for b in range(len(z)) if mask[b] > 0]
    total = 0.0
    for b in rows:
        logits = np.array([-np.sum((z[b, 0] - z[j, offsets[j]]) ** 2) / temperature for j in rows])
        own = rows.index(b)
        total += np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[own]
    return total / len(rows)


def test_temporal_contrastive_exact_value_and_masking():
    z = np.asarray(jax.random.normal(jax.random.key(5), (6, 4, 3)), np.float64)  # B=6 windows of L=3
    offsets = np.array([1, 3, 2, 1, 2, 3])
    mask = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    value = world_model.temporal_contrastive(jnp.asarray(z, jnp.float32), jnp.asarray(offsets), jnp.asarray(mask), 0.7)
    np.testing.assert_allclose(float(value), _numpy_infonce(z, offsets, mask, 0.7), rtol=1e-5)
    garbage = jnp.asarray(z, jnp.float32).at[2].set(1e3).at[5].set(-1e3)  # masked windows change nothing
    again = world_model.temporal_contrastive(garbage, jnp.asarray(offsets), jnp.asarray(mask), 0.7)
    assert float(again) == pytest.approx(float(value), rel=1e-6)


def test_temporal_contrastive_prefers_embeddings_that_keep_windows_apart():
    near = np.zeros((4, 3, 2))
    near[:, :, 0] = np.arange(4)[:, None] * 3.0  # window b sits at x = 3b; its own latents coincide
    blurred = near * 0.1  # the same arrangement squeezed: other windows are no longer told apart
    offsets, mask = jnp.array([1, 2, 1, 2]), jnp.ones(4)
    sharp = float(world_model.temporal_contrastive(jnp.asarray(near, jnp.float32), offsets, mask, 1.0))
    blur = float(world_model.temporal_contrastive(jnp.asarray(blurred, jnp.float32), offsets, mask, 1.0))
    assert sharp < 0.01 < np.log(4) - 0.5 < blur < np.log(4)  # log B: every candidate alike


def test_jepa_loss_adds_the_weighted_contrastive_term():
    cfg, perception, model, params, target, obs, actions, mask = _loss_setup("vicreg")
    with_term = dataclasses.replace(cfg, contrastive_weight=0.5, contrastive_temperature=2.0)
    key = jax.random.key(4)
    base, _ = world_model.jepa_loss(params, target, obs, actions, mask, key, perception, model, cfg)
    loss, metrics = world_model.jepa_loss(params, target, obs, actions, mask, key, perception, model, with_term)
    offsets = jax.random.randint(jax.random.fold_in(key, 1), (obs.shape[0],), 1, obs.shape[1])
    z = perception.encode(params.encoder, obs)
    expected = float(world_model.temporal_contrastive(z, offsets, mask, 2.0))
    np.testing.assert_allclose(float(metrics["contrastive"]), expected, rtol=1e-6)
    np.testing.assert_allclose(float(loss), float(base) + 0.5 * expected, rtol=1e-5)


# ----- the predictor -----


@pytest.fixture(scope="module")
def predictor():
    model = world_model.make_world_model(6, 2, (16, 16))
    params = model.init(jax.random.key(0))
    z0 = jax.random.normal(jax.random.key(1), (6,))
    actions = jax.random.uniform(jax.random.key(2), (7, 2), minval=-1.0, maxval=1.0)
    return model, params, z0, actions


def test_rollout_equals_a_python_loop_of_predict(predictor):
    model, params, z0, actions = predictor
    out = model.rollout(params, z0, actions)
    assert out.shape == (7, 6)
    z, expected = z0, []
    for a in actions:
        z = model.predict(params, z, a)
        expected.append(z)
    np.testing.assert_allclose(np.asarray(out), np.stack(expected), rtol=1e-5, atol=1e-6)


def test_rollout_jit_equals_no_jit_and_vmap_equals_loop(predictor):
    model, params, z0, actions = predictor
    eager = model.rollout(params, z0, actions)
    jitted = jax.jit(model.rollout)(params, z0, actions)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6)
    z0s = jnp.stack([z0, -z0, 2 * z0])
    batched = jax.vmap(model.rollout, in_axes=(None, 0, None))(params, z0s, actions)
    for i in range(3):
        np.testing.assert_allclose(
            np.asarray(batched[i]), np.asarray(model.rollout(params, z0s[i], actions)), rtol=1e-5, atol=1e-6
        )
