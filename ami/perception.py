"""Perception: the encoder `obs -> z` and its EMA target copy.

State observations `[..., O]` go through an MLP; image observations `[..., H, W, C]`
through a small CNN. The encoder's output is the latent state `z [..., D]` that the world
model predicts and the cost compares with the encoded goal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ami import nn

Params = nn.Params


class Perception(NamedTuple):
    """`init(key) -> params`; `encode(params, obs [..., *obs_shape]) -> z [..., latent_size]`."""

    init: Callable[[jax.Array], Params]
    encode: Callable[[Params, jax.Array], jax.Array]
    obs_shape: tuple[int, ...]
    latent_size: int


def make_perception(
    obs_shape: Sequence[int],
    latent_size: int,
    hidden: Sequence[int] = (256, 256),
    activation: str = "mish",
    channels: Sequence[int] = (32, 64, 64),
    fourier: int = 0,
    fourier_scale: float = 1.0,
) -> Perception:
    """An MLP encoder for vector observations, a CNN encoder for `[H, W, C]` images.

    `fourier > 0` feeds vector observations through `nn.fourier_features` first, so the
    encoder can separate nearby observations whose futures differ (two sides of a wall).
    """
    obs_shape = tuple(int(s) for s in obs_shape)
    features = lambda x: x  # noqa: E731
    if len(obs_shape) == 1:
        net = nn.mlp(hidden, latent_size, activation=activation, layer_norm=True)
        features = nn.fourier_features(obs_shape[0], fourier, fourier_scale)
    elif len(obs_shape) == 3:
        net = nn.cnn(channels, latent_size)
    else:
        raise ValueError(f"perception: observations must be [O] or [H, W, C], got shape {list(obs_shape)}")

    def init(key: jax.Array) -> Params:
        return net.init(key, features(jnp.zeros(obs_shape, jnp.float32)))

    def encode(params: Params, obs: jax.Array) -> jax.Array:
        return net.apply(params, features(obs))

    return Perception(init=init, encode=encode, obs_shape=obs_shape, latent_size=int(latent_size))


def ema_update(target: Params, online: Params, tau: float) -> Params:
    """`target <- tau * target + (1 - tau) * online`, leaf by leaf (tau = 0 copies online)."""
    return jax.tree.map(lambda t, o: tau * t + (1.0 - tau) * o, target, online)
