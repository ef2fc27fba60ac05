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
    normalize: bool = False,
    dtype=None,
) -> Perception:
    """An MLP encoder for vector observations, a CNN encoder for `[H, W, C]` images.

    `fourier > 0` feeds vector observations through `nn.fourier_features` first, so the
    encoder can separate nearby observations whose futures differ (two sides of a wall).
    `normalize` standardises vector observations with fixed statistics held in the params
    (`"obs_mean"`, `"obs_std"` `[O]`, set from data by `with_obs_stats`, never trained), so
    that components on small scales (a fingertip in metres next to velocities in rad/s)
    weigh as much as the others.
    """
    obs_shape = tuple(int(s) for s in obs_shape)
    features = lambda x: x  # noqa: E731
    if len(obs_shape) == 1:
        net = nn.mlp(hidden, latent_size, activation=activation, layer_norm=True, dtype=dtype)
        features = nn.fourier_features(obs_shape[0], fourier, fourier_scale)
    elif len(obs_shape) == 3:
        net = nn.cnn(channels, latent_size)
    else:
        raise ValueError(f"perception: observations must be [O] or [H, W, C], got shape {list(obs_shape)}")

    if normalize and len(obs_shape) != 1:
        raise ValueError(f"perception: normalize needs vector observations, got shape {list(obs_shape)}")

    def init(key: jax.Array) -> Params:
        params = net.init(key, features(jnp.zeros(obs_shape, jnp.float32)))
        if normalize:
            ones = jnp.ones(obs_shape, jnp.float32)
            return {"net": params, OBS_MEAN: jnp.zeros_like(ones), OBS_STD: ones}
        return params

    def encode(params: Params, obs: jax.Array) -> jax.Array:
        if normalize:
            mean, std = jax.lax.stop_gradient((params[OBS_MEAN], params[OBS_STD]))
            return net.apply(params["net"], features((obs - mean) / std))
        return net.apply(params, features(obs))

    return Perception(init=init, encode=encode, obs_shape=obs_shape, latent_size=int(latent_size))


OBS_MEAN, OBS_STD = "obs_mean", "obs_std"


def with_obs_stats(params: Params, obs: jax.Array, min_std: float = 1e-3) -> Params:
    """Encoder `params` (made with `normalize=True`) standardising like `obs [..., O]`."""
    flat = obs.reshape(-1, obs.shape[-1])
    std = jnp.maximum(jnp.std(flat, axis=0), min_std)
    return {**params, OBS_MEAN: jnp.mean(flat, axis=0), OBS_STD: std}


def ema_update(target: Params, online: Params, tau: float) -> Params:
    """`target <- tau * target + (1 - tau) * online`, leaf by leaf (tau = 0 copies online)."""
    return jax.tree.map(lambda t, o: tau * t + (1.0 - tau) * o, target, online)
