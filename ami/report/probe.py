"""Latents back to positions on planar tasks, without a decoder: a nearest-neighbour probe.

The AMI agent has no decoder, so an imagined latent has no position of its own. The probe
encodes the observation of the agent at rest at every point of a `G x G` grid over the arena
and maps a latent to the grid point whose latent is nearest (Euclidean). It only shows where
the imagined latents lie among the encodings of real positions; its error on the episode's
own latents (`probe_error`) says how far to trust it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ami.report.scenes import Planar

GRID = 64
ARENA = (-1.0, 1.0)


class Probe(NamedTuple):
    """Grid positions `[G*G, 2]` and their latents `[G*G, D]`."""

    positions: jax.Array
    latents: jax.Array


def grid(size: int = GRID) -> np.ndarray:
    """Cell centres `[size * size, 2]` of a `size x size` grid over `[-1, 1]^2` (x fastest)."""
    lo, hi = ARENA
    c = lo + (np.arange(size) + 0.5) * (hi - lo) / size
    xx, yy = np.meshgrid(c, c)
    return np.stack([xx.ravel(), yy.ravel()], axis=-1).astype(np.float32)


def make_probe(encode, encoder_params, planar: Planar, size: int = GRID) -> Probe:
    """The probe of an encoder (`encode(params, obs [B, ...]) -> [B, D]`) on a planar task."""
    positions = jnp.asarray(grid(size))

    @jax.jit
    def build(params):
        return encode(params, jax.vmap(planar.observe)(positions))

    return Probe(positions, build(encoder_params))


@jax.jit
def decode(probe: Probe, z: jax.Array) -> jax.Array:
    """Positions `[..., 2]` of latents `z [..., D]`: the grid point with the nearest latent."""
    flat = z.reshape(-1, z.shape[-1])

    def nearest(zi):
        return probe.positions[jnp.argmin(jnp.sum((probe.latents - zi) ** 2, axis=-1))]

    return jax.lax.map(nearest, flat, batch_size=256).reshape(*z.shape[:-1], 2)


def probe_error(probe: Probe, latents: jax.Array, positions: jax.Array) -> float:
    """Mean distance between the probe's positions of `latents [..., D]` and the true `positions [..., 2]`."""
    return float(jnp.mean(jnp.linalg.norm(decode(probe, latents) - positions, axis=-1)))
