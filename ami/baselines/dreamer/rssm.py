"""The recurrent state-space model of the Dreamer-style baseline (DreamerV3's RSSM, vector inputs).

A model state is a deterministic GRU state `h [Dh]` and `S` categorical latents of `C` classes,
kept as one-hot samples `z [S, C]`; its features are `[h, flatten(z)]`. One step from
`(h, z)` under action `a`:

    h' = GRU(h, MLP([z, a]))                                   (deterministic path)
    prior     p(z' | h')      = Cat(unimix(MLP(h')))           (what imagination samples)
    posterior q(z' | h', e')  = Cat(unimix(MLP([h', e'])))     (e' = encoder(symlog(o')))

`unimix` mixes each categorical with a `u` share of the uniform distribution (no class ever
has probability 0, so the KL stays finite); samples are straight-through one-hots
(`onehot + p - sg(p)`: the forward pass is the sample, the gradient that of `p`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ami import nn

Params = Any


class RState(NamedTuple):
    """Model state, batched over leading axes: `deter [..., Dh]`, `stoch [..., S, C]` (one-hot)."""

    deter: jax.Array
    stoch: jax.Array


class RSSM(NamedTuple):
    """The model's functions over its parameter dict (keys: `img_in`, `gru`, `prior`, `post`)."""

    init: Callable[[jax.Array], Params]
    initial: Callable[[tuple[int, ...]], RState]
    img_step: Callable[[Params, RState, jax.Array, jax.Array], tuple[RState, jax.Array]]
    obs_step: Callable[..., tuple[RState, jax.Array, jax.Array]]
    features: Callable[[RState], jax.Array]
    feature_size: int
    stoch: int
    classes: int


def unimix_logits(logits: jax.Array, mix: float) -> jax.Array:
    """`[..., C]` logits of `(1 - mix) softmax(logits) + mix / C` (log-probabilities)."""
    if mix == 0.0:
        return jax.nn.log_softmax(logits, axis=-1)
    probs = (1.0 - mix) * jax.nn.softmax(logits, axis=-1) + mix / logits.shape[-1]
    return jnp.log(probs)


def sample_onehot(key: jax.Array, logits: jax.Array) -> jax.Array:
    """A straight-through one-hot sample `[..., C]` of the categorical with log-probabilities `logits`."""
    probs = jnp.exp(logits)
    onehot = jax.nn.one_hot(jax.random.categorical(key, logits), logits.shape[-1], dtype=probs.dtype)
    return onehot + probs - jax.lax.stop_gradient(probs)


def categorical_kl(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
    """`KL(p || q)` of `S` independent categoricals `[..., S, C]` (log-probabilities), summed over `S`: `[...]`."""
    return jnp.sum(jnp.exp(p_logits) * (p_logits - q_logits), axis=(-2, -1))


def make_rssm(
    embed_size: int, action_size: int, deter: int, stoch: int, classes: int, hidden: int, activation: str, mix: float
) -> RSSM:
    """The RSSM for encoder embeddings `[embed_size]` and actions `[action_size]` (module docstring)."""
    img_in = nn.mlp((hidden,), hidden, activation)
    cell = nn.gru(deter)
    prior_net = nn.mlp((hidden,), stoch * classes, activation)
    post_net = nn.mlp((hidden,), stoch * classes, activation)

    def init(key: jax.Array) -> Params:
        k = jax.random.split(key, 4)
        z, h = jnp.zeros(stoch * classes + action_size), jnp.zeros(deter)
        return {
            "img_in": img_in.init(k[0], z),
            "gru": cell.init(k[1], h, jnp.zeros(hidden)),
            "prior": prior_net.init(k[2], h),
            "post": post_net.init(k[3], jnp.zeros(deter + embed_size)),
        }

    def initial(lead: tuple[int, ...]) -> RState:
        return RState(jnp.zeros((*lead, deter)), jnp.zeros((*lead, stoch, classes)))

    def logits_of(net, params, x):
        out = net.apply(params, x)
        return unimix_logits(out.reshape(*out.shape[:-1], stoch, classes), mix)

    def deterministic(params: Params, state: RState, action: jax.Array) -> jax.Array:
        flat = state.stoch.reshape(*state.stoch.shape[:-2], stoch * classes)
        x = img_in.apply(params["img_in"], jnp.concatenate([flat, action], -1))
        return cell.apply(params["gru"], state.deter, x)

    def img_step(params: Params, state: RState, action: jax.Array, key: jax.Array) -> tuple[RState, jax.Array]:
        """One imagined step: `(state', prior logits [..., S, C])`, `z'` sampled from the prior."""
        h = deterministic(params, state, action)
        prior = logits_of(prior_net, params["prior"], h)
        return RState(h, sample_onehot(key, prior)), prior

    def obs_step(params: Params, state: RState, action: jax.Array, embed: jax.Array, key: jax.Array):
        """One observed step: `(state', posterior logits, prior logits)`, `z'` sampled from the posterior."""
        h = deterministic(params, state, action)
        prior = logits_of(prior_net, params["prior"], h)
        post = logits_of(post_net, params["post"], jnp.concatenate([h, embed], -1))
        return RState(h, sample_onehot(key, post)), post, prior

    def features(state: RState) -> jax.Array:
        return jnp.concatenate([state.deter, state.stoch.reshape(*state.stoch.shape[:-2], stoch * classes)], -1)

    return RSSM(init, initial, img_step, obs_step, features, deter + stoch * classes, stoch, classes)


def observe(
    rssm: RSSM, params: Params, embed: jax.Array, prev_action: jax.Array, first: jax.Array, key: jax.Array
) -> tuple[RState, jax.Array, jax.Array]:
    """Filters a sequence: `embed [T, B, E]`, `prev_action [T, B, A]` (the action that led to each
    observation), `first [T, B]` (an episode starts: the state and action before it are zeroed)
    -> posterior states `RState [T, B]`, posterior and prior logits `[T, B, S, C]`."""

    def step(state: RState, xs):
        e, a, f, k = xs
        keep = (1.0 - f.astype(jnp.float32))[:, None]
        state = RState(state.deter * keep, state.stoch * keep[..., None])
        state, post, prior = rssm.obs_step(params, state, a * keep, e, k)
        return state, (state, post, prior)

    start = rssm.initial((embed.shape[1],))
    keys = jax.random.split(key, embed.shape[0])
    _, (states, post, prior) = jax.lax.scan(step, start, (embed, prev_action, first, keys))
    return states, post, prior
