"""Scale-free regression of scalars (rewards, values): symlog and two-hot heads.

Rewards and returns of different tasks differ by orders of magnitude (a DMC return is in
[0, 1000], a pendulum's step reward in [-16, 0]); a squared-error head then trains at a
different speed on each. DreamerV3 and TD-MPC2 regress such targets in the symlog space:

    symlog(x) = sign(x) log(1 + |x|),   symexp(y) = sign(y) (exp(|y|) - 1)

A `ScalarHead` turns a network's `size` outputs into a value and a loss:

* `mse`: one output, the value itself, squared error;
* `symlog`: one output `y`, value `symexp(y)`, squared error in symlog space;
* `twohot`: `bins` logits over `B` points evenly spaced in symlog space on
  `[-limit, limit]`; value `symexp(sum_i softmax(l)_i b_i)`, loss the cross-entropy against
  the two-hot encoding of `symlog(target)` (the two neighbouring bins share the mass so that
  their mean is exactly the target).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

KINDS = ("mse", "symlog", "twohot")


def symlog(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(y: jax.Array) -> jax.Array:
    return jnp.sign(y) * jnp.expm1(jnp.abs(y))


def twohot(y: jax.Array, bins: jax.Array) -> jax.Array:
    """`[...]` -> `[..., B]`: weights on the two bins around `y` (clipped into the range) whose mean is `y`."""
    y = jnp.clip(y, bins[0], bins[-1])
    upper = jnp.clip(jnp.searchsorted(bins, y, side="right"), 1, bins.shape[0] - 1)
    lower = upper - 1
    frac = (y - bins[lower]) / (bins[upper] - bins[lower])
    return (
        jax.nn.one_hot(lower, bins.shape[0]) * (1.0 - frac)[..., None]
        + jax.nn.one_hot(upper, bins.shape[0]) * frac[..., None]
    )


class ScalarHead(NamedTuple):
    """`size` network outputs; `value(out [..., size]) -> [...]`; `loss(out [..., size], target [...]) -> [...]`."""

    size: int
    value: Callable[[jax.Array], jax.Array]
    loss: Callable[[jax.Array, jax.Array], jax.Array]


def make_head(kind: str = "twohot", bins: int = 101, limit: float = 10.0) -> ScalarHead:
    """The scalar head `kind` (see the module docstring)."""
    if kind == "mse":
        return ScalarHead(1, lambda out: out[..., 0], lambda out, t: (out[..., 0] - t) ** 2)
    if kind == "symlog":
        return ScalarHead(1, lambda out: symexp(out[..., 0]), lambda out, t: (out[..., 0] - symlog(t)) ** 2)
    if kind != "twohot":
        raise ValueError(f"scalar head kind must be one of {KINDS}, got {kind!r}")
    if bins < 2 or limit <= 0:
        raise ValueError(f"twohot head: need bins >= 2 and limit > 0, got {bins} and {limit}")
    points = jnp.linspace(-limit, limit, bins)

    def value(out: jax.Array) -> jax.Array:
        return symexp(jnp.sum(jax.nn.softmax(out, axis=-1) * points, axis=-1))

    def loss(out: jax.Array, target: jax.Array) -> jax.Array:
        target = jax.lax.stop_gradient(twohot(symlog(target), points))
        return -jnp.sum(target * jax.nn.log_softmax(out, axis=-1), axis=-1)

    return ScalarHead(bins, value, loss)
