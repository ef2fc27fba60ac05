"""The Dreamer-style baseline's objectives, each a pure function with its equation.

KL balancing with free nats (DreamerV3): the posterior q and the prior p are pulled together
by two terms with stop-gradients on opposite sides, each clipped from below at `free` nats
(below it, the term and its gradient vanish: the latent may keep that much information):

    L_dyn = max(free, KL(sg(q) || p))      trains the prior (dynamics) towards the posterior
    L_rep = max(free, KL(q || sg(p)))      trains the posterior (representation) towards the prior
    L_kl  = dyn_weight L_dyn + rep_weight L_rep

Return normalisation: imagined lambda-returns R are divided by `max(1, S)`, S the running
(EMA, `decay`) range between their 5th and 95th percentiles, so large returns are scaled down
and small ones are not blown up (the actor's advantage is `(R - v) / max(1, S)`).

The actor's distribution for actions in [-1, 1]: a Normal of mean `tanh(m)` and standard
deviation `(max_std - min_std) sigmoid(s + 2) + min_std` per action dimension; a sample is
clipped into [-1, 1] before the model or the env sees it, its log-probability is the Normal's.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ami.baselines.dreamer.rssm import categorical_kl
from ami.value import lambda_returns

LOG_2PI_E = float(jnp.log(2.0 * jnp.pi * jnp.e))


def kl_balance(
    post: jax.Array, prior: jax.Array, free: float, dyn_weight: float, rep_weight: float
) -> tuple[jax.Array, dict]:
    """`(L_kl [...], metrics)` from posterior and prior log-probabilities `[..., S, C]` (module docstring)."""
    sg = jax.lax.stop_gradient
    dyn = jnp.maximum(free, categorical_kl(sg(post), prior))
    rep = jnp.maximum(free, categorical_kl(post, sg(prior)))
    kl = categorical_kl(sg(post), sg(prior))
    return dyn_weight * dyn + rep_weight * rep, {
        "kl": jnp.mean(kl),
        "dyn_loss": jnp.mean(dyn),
        "rep_loss": jnp.mean(rep),
    }


class ReturnScale(NamedTuple):
    """The EMA of the 5th (`low`) and 95th (`high`) percentiles of imagined returns (scalars)."""

    low: jax.Array
    high: jax.Array


def init_return_scale() -> ReturnScale:
    return ReturnScale(jnp.zeros(()), jnp.zeros(()))


def update_return_scale(scale: ReturnScale, returns: jax.Array, decay: float) -> tuple[ReturnScale, jax.Array]:
    """`(new EMA, max(1, high - low))`: percentiles of `returns` (any shape) folded into the EMA."""
    returns = jax.lax.stop_gradient(returns)
    low, high = jnp.percentile(returns, 5.0), jnp.percentile(returns, 95.0)
    new = ReturnScale(decay * scale.low + (1.0 - decay) * low, decay * scale.high + (1.0 - decay) * high)
    return new, jnp.maximum(1.0, new.high - new.low)


class Normal(NamedTuple):
    """A diagonal Normal: `mean [..., A]`, `std [..., A]`."""

    mean: jax.Array
    std: jax.Array


def bounded_normal(out: jax.Array, min_std: float, max_std: float) -> Normal:
    """The actor's distribution from its network output `out [..., 2A]` (module docstring)."""
    m, s = jnp.split(out, 2, axis=-1)
    return Normal(jnp.tanh(m), (max_std - min_std) * jax.nn.sigmoid(s + 2.0) + min_std)


def sample_normal(dist: Normal, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(raw sample [..., A], clipped action [..., A])`; the raw sample is differentiable in the parameters."""
    raw = dist.mean + dist.std * jax.random.normal(key, dist.mean.shape)
    return raw, jnp.clip(raw, -1.0, 1.0)


def log_prob(dist: Normal, x: jax.Array) -> jax.Array:
    """`log N(x; mean, std)` summed over the action dimension: `[...]`."""
    z = (x - dist.mean) / dist.std
    return jnp.sum(-0.5 * z**2 - jnp.log(dist.std) - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)


def entropy(dist: Normal) -> jax.Array:
    """Differential entropy `sum_a 0.5 log(2 pi e std_a^2)`: `[...]`."""
    return jnp.sum(0.5 * LOG_2PI_E + jnp.log(dist.std), axis=-1)


def imagined_returns(rewards: jax.Array, values: jax.Array, conts: jax.Array, gamma: float, lam: float) -> jax.Array:
    """Lambda-returns `R [..., H]` of an imagined trajectory of `H + 1` states s_0..s_H from
    `rewards [..., H]` and continuation probabilities `conts [..., H]` at s_1..s_H and
    `values [..., H + 1]` at s_0..s_H:

        R_{H-1} = r_H + gamma c_H v_H
        R_t     = r_{t+1} + gamma c_{t+1} ((1 - lam) v_{t+1} + lam R_{t+1})
    """
    return lambda_returns(rewards, values[..., 1:], gamma * conts, lam)
