"""The value critic of reward tasks: an ensemble of Q heads with a slowly updated target.

Part of the cost module (LeCun's trainable critic): `Q_i(z, a)`, i < K, predicts the
discounted return of taking `a` in latent state `z` and following the policy after. Each
head is an MLP on `[z, a]` with a scalar head (`ami.scalars`: two-hot, symlog or mse).
Targets are TD(lambda) returns along replayed windows, bootstrapped from the target heads
at the policy's action (TD-MPC2's clipped double-Q: the minimum over two random heads):

    v_t = min_{i in pair} Qbar_i(z'_t, pi(z'_t))                     (z'_t: latent of obs_{t+1})
    y_{L-1} = r_{L-1} + g_{L-1} v_{L-1}
    y_t     = r_t + g_t ((1 - lambda) v_t + lambda y_{t+1}),   g_t = gamma (1 - terminal_t)

`lambda = 0` is the one-step target. Episode ends by the time limit are not terminal: they
bootstrap. The value of a latent state, as the energy uses it, is `V(z) = mean_i Q_i(z, pi(z))`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ami import nn, scalars

Params = nn.Params


class Value(NamedTuple):
    """`init(key) -> params` (stacked over heads); `apply(params, z [..., D], a [..., A]) -> Q [K, ...]`."""

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array, jax.Array], jax.Array]
    outputs: Callable[[Params, jax.Array, jax.Array], jax.Array]
    head: scalars.ScalarHead
    num_heads: int


def make_value(
    latent_size: int,
    action_size: int,
    hidden: Sequence[int] = (256, 256),
    num_heads: int = 2,
    activation: str = "mish",
    head: scalars.ScalarHead | None = None,
    dtype=None,
) -> Value:
    """`num_heads` Q heads `MLP([z, a]) -> head.size`, initialised independently."""
    if num_heads < 1:
        raise ValueError(f"value: num_heads must be >= 1, got {num_heads}")
    head = head or scalars.make_head("twohot")
    net = nn.mlp(hidden, head.size, activation=activation, layer_norm=True, dtype=dtype)

    def init(key: jax.Array) -> Params:
        x = jnp.zeros(latent_size + action_size, jnp.float32)
        return jax.vmap(lambda k: net.init(k, x))(jax.random.split(key, num_heads))

    def outputs(params: Params, z: jax.Array, a: jax.Array) -> jax.Array:
        za = jnp.concatenate(_broadcast(z, a), axis=-1)
        return jax.vmap(net.apply, in_axes=(0, None))(params, za)

    def apply(params: Params, z: jax.Array, a: jax.Array) -> jax.Array:
        return head.value(outputs(params, z, a))

    return Value(init, apply, outputs, head, int(num_heads))


def _broadcast(z: jax.Array, a: jax.Array) -> tuple[jax.Array, jax.Array]:
    lead = jnp.broadcast_shapes(z.shape[:-1], a.shape[:-1])
    return jnp.broadcast_to(z, (*lead, z.shape[-1])), jnp.broadcast_to(a, (*lead, a.shape[-1]))


def lambda_returns(rewards: jax.Array, bootstrap: jax.Array, discounts: jax.Array, lam: float) -> jax.Array:
    """TD(lambda) targets `[..., T]` from `rewards`, `bootstrap` values `v_t` of the next states and
    `discounts` `g_t` (all `[..., T]`), by the recursion in the module docstring."""

    def back(nxt, xs):
        r, v, g = xs
        y = r + g * ((1.0 - lam) * v + lam * nxt)
        return y, y

    moved = [jnp.moveaxis(x, -1, 0) for x in (rewards, bootstrap, discounts)]
    last = moved[0][-1] + moved[2][-1] * moved[1][-1]
    _, ys = jax.lax.scan(back, last, [x[:-1] for x in moved], reverse=True)
    return jnp.moveaxis(jnp.concatenate([ys, last[None]], axis=0), 0, -1)


def pessimistic(q: jax.Array, key: jax.Array) -> jax.Array:
    """`[K, ...] -> [...]`: the minimum over two heads drawn at random (all heads when K <= 2)."""
    if q.shape[0] <= 2:
        return jnp.min(q, axis=0)
    pair = jax.random.choice(key, q.shape[0], (2,), replace=False)
    return jnp.min(q[pair], axis=0)


def value_loss(
    value: Value,
    params: Params,
    z: jax.Array,
    actions: jax.Array,
    targets: jax.Array,
    mask: jax.Array,
) -> tuple[jax.Array, dict]:
    """Head loss of every Q head at `z [B, T, D]`, `actions [B, T, A]` against `targets [B, T]`,
    averaged over heads, steps and the windows where `mask [B]` is 1."""
    out = value.outputs(params, z, actions)  # [K, B, T, size]
    per = jnp.mean(value.head.loss(out, jax.lax.stop_gradient(targets)[None]), axis=(0, 2))  # [B]
    loss = jnp.sum(per * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    q = jax.lax.stop_gradient(value.head.value(out))
    return loss, {"value_loss": loss, "q_mean": jnp.mean(q), "q_target_mean": jnp.mean(targets)}
