"""Compounding prediction error: learned latent rollouts against the encoded true future.

For one true trajectory of observations `o_0 .. o_T` and the actions `a_0 .. a_{T-1}` that
produced it, the world model is unrolled from the embedding of the first observation only,

    zhat_0 = z_0 = f(o_0),   zhat_{t+1} = g(zhat_t, a_t),   z_t = f(o_t),

and its error `h` steps ahead is compared with the embedding of what really happened:

    e_h = 1/D || zhat_h - z_h ||^2                         (the model, open loop)
    c_h = 1/D || z_0 - z_h ||^2                            (the constant predictor zhat_h = z_0)

`c_h` is the reference the ground truth gives for free: how far the true latent moves in `h`
steps, i.e. the error of a model that predicts nothing. Both are divided by the latent
scale `s = 1/D sum_d Var(z_d)` (the mean per-dimension variance of the embeddings of the true
states), so that a normalised error of 1 is the error of predicting the mean latent, and
errors of tasks with different latents are comparable. Dividing by the mean variance rather
than by each dimension's keeps a dimension of tiny variance from dominating, and makes the
number invariant to rotations and a common scaling of the latent.

The functions take one unbatched trajectory (rlax's habit); `vmap` them over trajectories.
`encode` and `rollout` are plain functions with the parameters bound, so the same code
measures any encoder and any model (a learned one, or a known linear system in the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

Encode = Callable[[jax.Array], jax.Array]  # obs [T+1, *obs_shape] -> z [T+1, D]
Rollout = Callable[[jax.Array, jax.Array], jax.Array]  # z0 [D], actions [T, A] -> z [T, D]


class StepErrors(NamedTuple):
    """Per-step squared latent errors of one trajectory, mean over the `D` dimensions.

    `model [T]`: `e_h` for h = 1..T (index h-1); `constant [T]`: `c_h`, the same for `zhat_h = z_0`.
    """

    model: jax.Array
    constant: jax.Array


def latent_step_errors(rollout: Rollout, z_t: jax.Array, actions_t: jax.Array) -> StepErrors:
    """`e_h` and `c_h` (module docstring) for h = 1..T from the encoded true states `z_t [T+1, D]`
    and the actions `actions_t [T, A]` taken between them."""
    if actions_t.ndim != 2 or z_t.ndim != 2:
        raise ValueError(f"step_errors: need z [T+1, D] and actions [T, A], got {z_t.shape} and {actions_t.shape}")
    if z_t.shape[0] != actions_t.shape[0] + 1:
        raise ValueError(
            f"step_errors: need T+1 = {actions_t.shape[0] + 1} observations for T actions, got {z_t.shape[0]}"
        )
    pred = rollout(z_t[0], actions_t)  # [T, D]: pred[h-1] is h steps ahead of z_t[0]
    if pred.shape != z_t[1:].shape:
        raise ValueError(f"step_errors: rollout gave {pred.shape}, the encoded future is {z_t[1:].shape}")
    model = jnp.mean((pred - z_t[1:]) ** 2, axis=-1)
    constant = jnp.mean((z_t[:1] - z_t[1:]) ** 2, axis=-1)
    return StepErrors(model, constant)


def step_errors(encode: Encode, rollout: Rollout, obs_t: jax.Array, actions_t: jax.Array) -> StepErrors:
    """`e_h` and `c_h` (module docstring) for h = 1..T of one trajectory: `obs_t [T+1, ...]`, `actions_t [T, A]`."""
    return latent_step_errors(rollout, encode(obs_t), actions_t)


def at_horizons(errors_t: jax.Array, horizons: Sequence[int]) -> jax.Array:
    """`errors_t [..., T]` (index h-1 holds horizon h) at `horizons` (each in 1..T): `[..., K]`."""
    length = errors_t.shape[-1]
    bad = [h for h in horizons if not 1 <= int(h) <= length]
    if bad:
        raise ValueError(f"at_horizons: horizons must lie in 1..{length} (the trajectory's length), got {bad}")
    return errors_t[..., jnp.asarray([int(h) - 1 for h in horizons])]


def prediction_errors(
    encode: Encode, rollout: Rollout, obs_t: jax.Array, actions_t: jax.Array, horizons: Sequence[int]
) -> StepErrors:
    """`StepErrors` of one trajectory (`obs_t [T+1, ...]`, `actions_t [T, A]`) at `horizons`: fields `[K]`."""
    errors = step_errors(encode, rollout, obs_t, actions_t)
    return StepErrors(*(at_horizons(e, horizons) for e in errors))


def latent_scale(z: jax.Array) -> jax.Array:
    """`s = 1/D sum_d Var(z_d)` of embeddings `z [..., D]` pooled over every leading axis: `[]`."""
    flat = z.reshape(-1, z.shape[-1])
    return jnp.mean(jnp.var(flat, axis=0))


def normalised_errors(
    encode: Encode, rollout: Rollout, obs: jax.Array, actions: jax.Array, horizons: Sequence[int]
) -> tuple[StepErrors, jax.Array]:
    """For a batch of trajectories `obs [N, T+1, ...]`, `actions [N, T, A]`: the errors at `horizons`
    divided by the latent scale of all the encoded true states, fields `[N, K]`, and that scale `[]`."""
    z = jax.vmap(encode)(obs)  # [N, T+1, D]
    errors = jax.vmap(partial(latent_step_errors, rollout))(z, actions)
    scale = latent_scale(z)
    return StepErrors(*(at_horizons(e, horizons) / scale for e in errors)), scale
