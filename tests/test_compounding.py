"""Compounding prediction error (`ami.diagnostics.compounding`) on linear systems with exact answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ami.diagnostics import compounding as cp


def linear_rollout(a_mat, b_mat):
    """`rollout(z0 [D], actions [T, A]) -> [T, D]` of `z' = A z + B a`."""

    def rollout(z0, actions):
        def step(z, a):
            nxt = a_mat @ z + b_mat @ a
            return nxt, nxt

        return jax.lax.scan(step, z0, actions)[1]

    return rollout


def identity(obs):
    return obs


def integrator_trajectory(z0, actions):
    """The true states `[T+1, D]` of `z' = z + a`."""
    return jnp.concatenate([z0[None], z0 + jnp.cumsum(actions, axis=0)], axis=0)


D = 3
EYE = jnp.eye(D)


def test_exact_model_has_zero_error_and_constant_predictor_the_distance_moved():
    z0 = jnp.array([1.0, -2.0, 0.5])
    actions = jnp.tile(jnp.array([0.1, 0.2, -0.3]), (8, 1))
    obs = integrator_trajectory(z0, actions)
    errors = cp.step_errors(identity, linear_rollout(EYE, EYE), obs, actions)
    np.testing.assert_allclose(errors.model, np.zeros(8), atol=1e-12)
    h = np.arange(1, 9)
    # z_h - z_0 = h a, so c_h = h^2 ||a||^2 / D
    np.testing.assert_allclose(errors.constant, h**2 * 0.14 / D, rtol=1e-5)


def test_model_off_by_a_factor_in_the_action_gain():
    """True `z' = z + a`, model `z' = z + k a`, constant `a`: `e_h = (1 - k)^2 h^2 ||a||^2 / D`."""
    k = 0.7
    a = jnp.array([0.3, -0.1, 0.2])
    actions = jnp.tile(a, (16, 1))
    obs = integrator_trajectory(jnp.zeros(D), actions)
    errors = cp.step_errors(identity, linear_rollout(EYE, k * EYE), obs, actions)
    h = np.arange(1, 17)
    np.testing.assert_allclose(errors.model, (1 - k) ** 2 * h**2 * float(a @ a) / D, rtol=1e-5)


def test_model_off_by_a_factor_in_the_dynamics_compounds_geometrically():
    """True `z' = z`, model `z' = lam z`: `e_h = (lam^h - 1)^2 ||z0||^2 / D`, the constant predictor exact."""
    lam = 1.1
    z0 = jnp.array([1.0, 2.0, -1.0])
    actions = jnp.zeros((32, 2))
    obs = jnp.tile(z0, (33, 1))
    errors = cp.step_errors(identity, linear_rollout(lam * EYE, jnp.zeros((D, 2))), obs, actions)
    h = np.arange(1, 33)
    np.testing.assert_allclose(errors.model, (lam**h - 1) ** 2 * 6.0 / D, rtol=1e-4)
    np.testing.assert_allclose(errors.constant, np.zeros(32), atol=1e-12)


def test_the_error_at_h_compares_z_h_with_the_prediction_h_steps_ahead():
    """One impulse at step 2 (0-based): a model that ignores actions is wrong from horizon 3 on, by the impulse."""
    actions = jnp.zeros((6, D)).at[2].set(jnp.array([3.0, 0.0, 0.0]))
    obs = integrator_trajectory(jnp.zeros(D), actions)
    errors = cp.step_errors(identity, linear_rollout(EYE, jnp.zeros((D, D))), obs, actions)
    np.testing.assert_allclose(errors.model, [0, 0, 3, 3, 3, 3], atol=1e-12)
    picked = cp.prediction_errors(identity, linear_rollout(EYE, jnp.zeros((D, D))), obs, actions, (1, 2, 3, 6))
    np.testing.assert_allclose(picked.model, [0, 0, 3, 3], atol=1e-12)
    np.testing.assert_allclose(picked.constant, [0, 0, 3, 3], atol=1e-12)


def test_encoder_is_applied_to_the_observations():
    """Observations are twice the latent; the encoder halves them: the exact model has no error."""
    actions = jnp.ones((4, D))
    obs = 2.0 * integrator_trajectory(jnp.zeros(D), actions)
    errors = cp.step_errors(lambda o: 0.5 * o, linear_rollout(EYE, EYE), obs, actions)
    np.testing.assert_allclose(errors.model, np.zeros(4), atol=1e-12)


def test_latent_scale_is_the_mean_per_dimension_variance():
    z = jnp.array([[[0.0, 0.0], [2.0, 4.0]], [[0.0, 0.0], [2.0, 4.0]]])  # [N=2, T+1=2, D=2]
    # dim 0: values 0,2,0,2 -> var 1; dim 1: 0,4,0,4 -> var 4
    assert float(cp.latent_scale(z)) == pytest.approx(2.5)


def test_normalised_errors_divide_by_the_latent_scale_and_vmap_equals_a_loop():
    key = jax.random.key(0)
    k_a, k_z = jax.random.split(key)
    actions = jax.random.normal(k_a, (5, 8, D))
    z0 = jax.random.normal(k_z, (5, D))
    obs = jax.vmap(integrator_trajectory)(z0, actions)
    rollout = linear_rollout(EYE, 0.5 * EYE)
    horizons = (1, 2, 4, 8)
    errors, scale = cp.normalised_errors(identity, rollout, obs, actions, horizons)
    assert errors.model.shape == errors.constant.shape == (5, 4)
    assert float(scale) == pytest.approx(float(cp.latent_scale(obs)), rel=1e-6)
    for i in range(5):
        one = cp.prediction_errors(identity, rollout, obs[i], actions[i], horizons)
        np.testing.assert_allclose(errors.model[i] * scale, one.model, rtol=1e-5)
        np.testing.assert_allclose(errors.constant[i] * scale, one.constant, rtol=1e-5)


def test_jit_equals_no_jit():
    actions = jax.random.normal(jax.random.key(1), (3, 16, D))
    obs = jax.vmap(integrator_trajectory)(jnp.ones((3, D)), actions)
    rollout = linear_rollout(0.9 * EYE, EYE)
    horizons = (1, 4, 16)
    eager, s_eager = cp.normalised_errors(identity, rollout, obs, actions, horizons)
    jitted, s_jit = jax.jit(lambda o, a: cp.normalised_errors(identity, rollout, o, a, horizons))(obs, actions)
    np.testing.assert_allclose(jitted.model, eager.model, rtol=1e-5)
    np.testing.assert_allclose(jitted.constant, eager.constant, rtol=1e-5)
    assert float(s_jit) == pytest.approx(float(s_eager), rel=1e-6)


def test_bad_shapes_and_horizons_are_refused():
    actions = jnp.zeros((4, D))
    with pytest.raises(ValueError, match=r"T\+1"):
        cp.step_errors(identity, linear_rollout(EYE, EYE), jnp.zeros((4, D)), actions)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        cp.at_horizons(jnp.zeros(4), (1, 8))
    with pytest.raises(ValueError, match=r"1\.\.4"):
        cp.at_horizons(jnp.zeros(4), (0,))
