"""World model: the JEPA predictor and its training loss with anti-collapse terms.

The predictor maps `(z_t, a_t) -> z_{t+1}` as a residual MLP; `rollout` unrolls it with
`lax.scan`. Training (`jepa_loss`) predicts, from the embedding of the first observation
of a window and the actions taken, the embeddings of the next `L` observations, and
compares them with the target encoder's embeddings of the real observations:

    L_pred = 1/L sum_k || zhat_{t+k} - sg?(f_target(o_{t+k})) ||^2,   zhat_{t+k} = g(zhat_{t+k-1}, a_{t+k-1})

Anti-collapse (`anti_collapse`):
* `vicreg`: variance hinge `mean_d relu(1 - std_d(z))` + covariance `sum_{i!=j} C_ij^2 / D`
  on the online embeddings; the target is the online encoder (no stop-gradient), as in PLDM.
* `sigreg`: sliced Epps-Pulley statistic of random 1-D projections of z against N(0, 1)
  (LeJEPA's isotropic-Gaussian regulariser); target as for vicreg.
* `ema`: target = EMA copy of the encoder with stop-gradient (BYOL / I-JEPA style), no term.
* `none`: nothing; with the online encoder as target this collapses (the monitors show it).

Optional temporal contrastive term (`contrastive_weight`, `temporal_contrastive`): InfoNCE
between each window's first latent and a later one of the same window, the other windows'
as negatives. The prediction loss alone rewards an encoder that blurs what the predictor
finds hard: on Two-Rooms it squeezes the two sides of the wall together (across the wall
latents lie 0.5x as far apart as in the open) and the predictor then lets the agent pass;
the contrastive term keeps them apart (1.7x) and the predictor learns the wall.

Optional inverse dynamics: a head predicts `a_t` from `(z_t, z_{t+1})`.
Collapse monitors: mean per-dimension std of z and the effective rank of z.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ami import nn, scalars

Params = nn.Params
ANTI_COLLAPSE = ("vicreg", "sigreg", "ema", "none")


class WorldModel(NamedTuple):
    """`predict(params, z [D], a [A]) -> z' [D]`; `rollout(params, z0 [D], actions [H, A]) -> z [H, D]`."""

    init: Callable[[jax.Array], Params]
    predict: Callable[[Params, jax.Array, jax.Array], jax.Array]
    rollout: Callable[[Params, jax.Array, jax.Array], jax.Array]
    latent_size: int
    action_size: int


def make_world_model(
    latent_size: int, action_size: int, hidden: Sequence[int] = (256, 256), activation: str = "mish", dtype=None
) -> WorldModel:
    """A residual MLP predictor `z' = z + g([z, a])` with a `lax.scan` rollout."""
    net = nn.mlp(hidden, latent_size, activation=activation, layer_norm=True, dtype=dtype)

    def init(key: jax.Array) -> Params:
        return net.init(key, jnp.zeros(latent_size + action_size, jnp.float32))

    def predict(params: Params, z: jax.Array, a: jax.Array) -> jax.Array:
        return z + net.apply(params, jnp.concatenate([z, a], axis=-1))

    def rollout(params: Params, z0: jax.Array, actions: jax.Array) -> jax.Array:
        def step(z, a):
            z_next = predict(params, z, a)
            return z_next, z_next

        return jax.lax.scan(step, z0, actions)[1]

    return WorldModel(init, predict, rollout, int(latent_size), int(action_size))


def vicreg_terms(z: jax.Array, eps: float = 1e-4) -> tuple[jax.Array, jax.Array]:
    """Variance hinge and covariance penalty of embeddings `z [N, D]` (VICReg)."""
    z = z - jnp.mean(z, axis=0)
    std = jnp.sqrt(jnp.var(z, axis=0) + eps)
    variance = jnp.mean(jax.nn.relu(1.0 - std))
    cov = z.T @ z / (z.shape[0] - 1)
    off_diag = cov - jnp.diag(jnp.diag(cov))
    return variance, jnp.sum(off_diag**2) / z.shape[1]


def sigreg(z: jax.Array, key: jax.Array, num_slices: int = 64, num_points: int = 17, t_max: float = 3.0) -> jax.Array:
    """Sliced Epps-Pulley statistic of `z [N, D]` against an isotropic standard Gaussian.

    For random unit directions u, x = z u; `EP = N * int_0^tmax w(t) |phi_x(t) - exp(-t^2/2)|^2 dt`
    with the empirical characteristic function phi_x and weight `w(t) = exp(-t^2/2)`,
    averaged over directions. Zero exactly when every projection is N(0, 1)-distributed.
    """
    u = jax.random.normal(key, (z.shape[1], num_slices))
    u = u / jnp.linalg.norm(u, axis=0, keepdims=True)
    x = z @ u
    t = jnp.linspace(0.0, t_max, num_points)
    tx = x[:, :, None] * t
    gauss = jnp.exp(-0.5 * t**2)
    err = (jnp.mean(jnp.cos(tx), axis=0) - gauss) ** 2 + jnp.mean(jnp.sin(tx), axis=0) ** 2
    integral = jnp.trapezoid(err * gauss, t, axis=-1)
    return z.shape[0] * jnp.mean(integral)


def effective_rank(z: jax.Array) -> jax.Array:
    """`exp(H(p))`, p the normalised singular values of centred `z [N, D]`: 1 (collapsed) .. D."""
    z = z - jnp.mean(z, axis=0)
    eig = jnp.linalg.eigvalsh(z.T @ z)  # [D]: squared singular values (much cheaper than an SVD of z)
    s = jnp.where(eig > 1e-6 * jnp.max(eig), jnp.sqrt(jnp.maximum(eig, 0.0)), 0.0)  # float32 noise -> 0
    p = s / (jnp.sum(s) + 1e-12)
    return jnp.exp(-jnp.sum(p * jnp.log(p + 1e-12)))


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `x [B, ...]` over the batch entries where `mask [B]` is true."""
    x = jnp.mean(x.reshape(x.shape[0], -1), axis=1)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def jepa_loss(
    params,
    target_encoder: Params,
    obs: jax.Array,
    actions: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    perception,
    world_model: WorldModel,
    cfg,
) -> tuple[jax.Array, dict]:
    """Multi-step latent prediction loss with the configured anti-collapse term.

    Args:
      params: a record with `encoder`, `predictor` and `inverse` (the inverse-dynamics head or None).
      target_encoder: EMA encoder parameters (used when `cfg.anti_collapse == "ema"`).
      obs: `[B, L+1, *obs_shape]` consecutive observations; actions: `[B, L, A]`.
      mask: `[B]` 1.0 for windows to train on.
      cfg: a `WorldModelConfig` (anti_collapse and the term weights).
    Returns: `(loss, metrics)`.
    """
    loss, metrics, _, _ = jepa_terms(params, target_encoder, obs, actions, mask, key, perception, world_model, cfg)
    return loss, metrics


def jepa_terms(params, target_encoder, obs, actions, mask, key, perception, world_model: WorldModel, cfg):
    """`jepa_loss` and what it computed on the way: `(loss, metrics, pred [B, L, D], z [B, L+1, D])`,
    the predicted latents and the online embeddings (for the heads trained on them)."""
    z = perception.encode(params.encoder, obs)  # [B, L+1, D]
    if cfg.anti_collapse == "ema":
        target = jax.lax.stop_gradient(perception.encode(target_encoder, obs[:, 1:]))
    else:
        target = z[:, 1:]
    pred = jax.vmap(world_model.rollout, in_axes=(None, 0, 0))(params.predictor, z[:, 0], actions)
    pred_loss = _masked_mean(jnp.sum((pred - target) ** 2, axis=-1), mask)
    flat = z.reshape(-1, z.shape[-1])
    variance, covariance = vicreg_terms(flat)
    monitor = jax.lax.stop_gradient(flat)
    metrics = {
        "pred_loss": pred_loss,
        "z_std": jnp.mean(jnp.std(monitor, axis=0)),
        "z_rank": effective_rank(monitor),
        "vicreg_variance": variance,
        "vicreg_covariance": covariance,
    }
    loss = pred_loss
    if cfg.anti_collapse == "vicreg":
        loss = loss + cfg.variance_weight * variance + cfg.covariance_weight * covariance
    elif cfg.anti_collapse == "sigreg":
        metrics["sigreg"] = sigreg(flat, key)
        loss = loss + cfg.sigreg_weight * metrics["sigreg"]
    if cfg.contrastive_weight > 0:
        offsets = jax.random.randint(jax.random.fold_in(key, 1), (z.shape[0],), 1, z.shape[1])
        metrics["contrastive"] = temporal_contrastive(z, offsets, mask, cfg.contrastive_temperature)
        loss = loss + cfg.contrastive_weight * metrics["contrastive"]
    if params.inverse is not None:
        inverse = inverse_dynamics_loss(params.inverse, z, actions, mask)
        metrics["inverse_loss"] = inverse
        loss = loss + cfg.inverse_weight * inverse
    metrics["loss"] = loss
    return loss, metrics, pred, z


def temporal_contrastive(z: jax.Array, offsets: jax.Array, mask: jax.Array, temperature: float) -> jax.Array:
    """Temporal InfoNCE on window embeddings `z [B, L+1, D]`: each window's first latent must pick
    its own latent `offsets [B]` (in 1..L) steps later among the batch's, by the logits
    `-||z_0 - z_k||^2 / temperature`; windows with `mask [B]` 0 are neither anchors nor candidates.

    States a few steps apart are pulled together and states not reached within the window
    (the other windows; the far side of a wall) pushed apart, so the latent keeps apart what
    the dynamics keep apart instead of blurring it for the predictor's sake.
    """
    b = z.shape[0]
    anchor, positive = z[:, 0], z[jnp.arange(b), offsets]  # [B, D] each
    d2 = jnp.sum((anchor[:, None] - positive[None]) ** 2, axis=-1)  # [B, B]
    logits = jnp.where(mask[None] > 0, -d2 / temperature, -jnp.inf)
    nll = jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits)
    return jnp.sum(jnp.where(mask > 0, nll, 0.0)) / jnp.maximum(jnp.sum(mask), 1.0)


def make_inverse_head(latent_size: int, action_size: int, hidden: Sequence[int] = (128,)) -> nn.Network:
    """The inverse-dynamics head `[z_t, z_{t+1}] -> a_t`."""
    return nn.mlp(hidden, action_size, layer_norm=False)


def inverse_dynamics_loss(params: Params, z: jax.Array, actions: jax.Array, mask: jax.Array) -> jax.Array:
    """Squared error of actions `[B, L, A]` predicted from consecutive latents `z [B, L+1, D]`."""
    latent_size, action_size = z.shape[-1], actions.shape[-1]
    head = make_inverse_head(latent_size, action_size)
    pred = head.apply(params, jnp.concatenate([z[:, :-1], z[:, 1:]], axis=-1))
    return _masked_mean(jnp.sum((pred - actions) ** 2, axis=-1), mask)


class RewardHead(NamedTuple):
    """The world model's reward head: `init(key) -> params`; `apply(params, z [..., D], a [..., A]) -> r [...]`;
    `loss(params, z, a, r) -> [...]` its scalar head's loss against rewards `r`."""

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array, jax.Array], jax.Array]
    loss: Callable[[Params, jax.Array, jax.Array, jax.Array], jax.Array]


def make_reward_head(
    latent_size: int, action_size: int, hidden: Sequence[int], activation: str, head: scalars.ScalarHead, dtype=None
) -> RewardHead:
    """`r(z_t, a_t)`: an MLP on `[z, a]` with a scalar head (`ami.scalars`)."""
    net = nn.mlp(hidden, head.size, activation=activation, layer_norm=True, dtype=dtype)

    def out(params: Params, z: jax.Array, a: jax.Array) -> jax.Array:
        lead = jnp.broadcast_shapes(z.shape[:-1], a.shape[:-1])
        za = [jnp.broadcast_to(x, (*lead, x.shape[-1])) for x in (z, a)]
        return net.apply(params, jnp.concatenate(za, axis=-1))

    return RewardHead(
        init=lambda key: net.init(key, jnp.zeros(latent_size + action_size, jnp.float32)),
        apply=lambda params, z, a: head.value(out(params, z, a)),
        loss=lambda params, z, a, r: head.loss(out(params, z, a), r),
    )


def reward_loss(
    head: RewardHead, params: Params, z: jax.Array, actions: jax.Array, rewards: jax.Array, mask: jax.Array
) -> tuple[jax.Array, dict]:
    """The reward head's loss at the states `z [B, L, D]` the `actions [B, L, A]` were taken in
    (the window's first embedding, then the predicted latents) against `rewards [B, L]`,
    averaged over the windows where `mask [B]` is 1."""
    per = jnp.mean(head.loss(params, z, actions, rewards), axis=1)
    loss = jnp.sum(per * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    err = jnp.abs(jax.lax.stop_gradient(head.apply(params, z, actions)) - rewards)
    return loss, {
        "reward_loss": loss,
        "reward_abs_error": jnp.sum(jnp.mean(err, 1) * mask) / jnp.maximum(jnp.sum(mask), 1.0),
    }
