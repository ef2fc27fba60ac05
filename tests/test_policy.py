"""The amortised policy: rollouts through a model, proposals, and learning a known optimum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ami import policy


def _shift(z, a):
    """A known linear model: `z' = z + 0.5 a` (D = A = 2)."""
    return z + 0.5 * a


def test_rollout_runs_the_policy_through_the_model_step_by_step():
    pi = policy.make_policy(2, 2, hidden=(16,))
    params = pi.init(jax.random.key(0))
    z0, goal = jnp.array([0.2, -0.1]), jnp.array([0.5, 0.5])
    actions = policy.rollout(pi, params, _shift, z0, goal, horizon=4)
    assert actions.shape == (4, 2) and bool(jnp.all(jnp.abs(actions) <= 1.0))
    z = z0
    for t in range(4):  # the same loop by hand
        a = pi.apply(params, z, goal)
        np.testing.assert_allclose(actions[t], a, rtol=1e-6, atol=1e-6)
        z = _shift(z, a)


def test_propose_puts_the_noiseless_rollout_first_and_clips_noisy_ones():
    pi = policy.make_policy(2, 2, hidden=(16,))
    params = pi.init(jax.random.key(1))
    z0, goal = jnp.zeros(2), jnp.ones(2)
    out = policy.propose(pi, params, _shift, z0, goal, horizon=3, num=5, noise=2.0, key=jax.random.key(2))
    assert out.shape == (5, 3, 2)
    np.testing.assert_allclose(out[0], policy.rollout(pi, params, _shift, z0, goal, 3), rtol=1e-6, atol=1e-6)
    assert bool(jnp.all(jnp.abs(out) <= 1.0)) and not bool(jnp.allclose(out[1], out[2]))
    same = policy.propose(pi, params, _shift, z0, goal, horizon=3, num=3, noise=0.0, key=jax.random.key(2))
    np.testing.assert_array_equal(same[0], same[2])


def test_the_policy_learns_the_one_step_optimum_of_a_known_energy():
    """Energy ||z_1 - g||^2 under z_1 = z + 0.5 a: the optimum is a = 2 (g - z) (inside [-1, 1] here)."""
    pi = policy.make_policy(2, 2, hidden=(64, 64))
    params = pi.init(jax.random.key(3))

    def energy(z0, goal, actions):
        return jnp.sum((_shift(z0, actions[0]) - goal) ** 2)

    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, key):
        z0 = jax.random.uniform(key, (128, 2), minval=-0.5, maxval=0.5)
        goal = z0 + jax.random.uniform(jax.random.fold_in(key, 1), (128, 2), minval=-0.4, maxval=0.4)
        (loss, _), grads = jax.value_and_grad(policy.policy_loss, has_aux=True)(params, pi, _shift, energy, z0, goal, 1)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    losses = []
    for i in range(1500):
        params, opt, loss = step(params, opt, jax.random.key(100 + i))
        losses.append(float(loss))
    assert np.mean(losses[:20]) > 0.02 and np.mean(losses[-50:]) < 1e-3
    z, g = jnp.array([0.1, -0.2]), jnp.array([0.3, 0.0])
    np.testing.assert_allclose(pi.apply(params, z, g), 2.0 * (g - z), atol=0.05)
