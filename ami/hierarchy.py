"""H-JEPA's second level: a slower world model over latent macro-actions, its cost-to-go, and
the two-level planner.

The high level sees the low level's latents every `k` (`stride`) steps. A macro-action is a
learned code of the `k` actions between two of them, `u = tanh(E(a_{t:t+k})) [m]`; the high
predictor maps `(z_t, u) -> z_{t+k}` (residual MLP, rolled out with `lax.scan`), trained as
a JEPA on subsampled windows of the replay: from `z_0`, predict `z_k, z_2k, ..., z_Mk` (the
encoder's latents, held fixed), `mean_i ||z^_i - z_ik||^2 / D`. A variance hinge keeps each
macro-action coordinate spread over the planner's box (`std(u_j) >= macro_std`), so the box the
planner searches is the one the predictor was trained on.

The high cost-to-go `C_H(z, g)` counts macro-steps to the goal (metric critic of `ami.cost`).
With `objective="distance"` it is the constrained shortest path of `cost.distance_loss`
over macro-steps: every observed macro-step `z_i -> z_{i+1}` within 1, latents of unrelated
windows pushed apart (up to `max_distance`), so that the largest distance the data allow is the
number of macro-steps along the shortest route through them, stitched from short streams.
By default (`objective="td"`) it is fitted by expectile TD with hindsight goals inside a window
and random goals from other windows:

    target = 0                            if g is the latent at step i (offset 0)
             1 + gamma_H C_H'(z_{i+1}, g)  otherwise

Planning (`two_level_act` in `ami.agent`): every `replan_every` steps the high planner (any
planner of `ami.actor`, the same contract as the low one) minimises over `u [M, m]`

    E_H(u) = w_d ||z^_M - g||^2 / D + w_c mean_i C_H(z^_i, g)

and hands its first predicted latent `z^_1` to the low level as the goal it plans to (its own
planner, energy and critic); within `handover` macro-steps of the goal (`C_H`) the low level
plans to the goal itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ami import cost, memory, nn, perception, world_model
from ami.actor import Planner, make_planner, shift_plan

Params = nn.Params


class HighLevel(NamedTuple):
    """The high level's networks and sizes: `stride` k, `macro_size` m, `latent_size` D."""

    stride: int
    macro_size: int
    latent_size: int
    action_size: int
    macro: nn.Network
    model: world_model.WorldModel
    critic: cost.Critic

    def encode_macro(self, params: Params, actions: jax.Array) -> jax.Array:
        """Macro-actions `u [..., m]` in (-1, 1) of low-level action blocks `actions [..., k, A]`."""
        flat = actions.reshape(*actions.shape[:-2], self.stride * self.action_size)
        return jnp.tanh(self.macro.apply(params, flat))


class HighParams(NamedTuple):
    macro: Params
    predictor: Params
    critic: Params


class HighLearner(NamedTuple):
    """The high level's parameters, its critic's slow target and optimiser state."""

    params: HighParams
    target_critic: Params
    opt: Any


class HighSettings(NamedTuple):
    """What the high level's update reads (from `hierarchy.*`)."""

    steps: int
    gamma: float
    expectile: float
    random_goal_fraction: float
    macro_std: float
    target_tau: float
    objective: str = "td"
    max_distance: float = 64.0
    penalty: float = 100.0


def settings(h) -> HighSettings:
    """`HighSettings` from the `hierarchy` config section."""
    fields = ("steps", "gamma", "expectile", "random_goal_fraction", "macro_std", "target_tau")
    return HighSettings(*(getattr(h, f) for f in fields), h.critic_objective, h.max_distance)


class HighMemory(NamedTuple):
    """One agent's high-level memory: the last macro plan `[M, m]`, whether it is real, the
    subgoal latent `[D]` it handed down and the low-level steps since it was made."""

    plan: jax.Array
    plan_valid: jax.Array
    subgoal: jax.Array
    since: jax.Array


def make_high_level(
    latent_size: int,
    action_size: int,
    stride: int,
    macro_size: int,
    hidden: Sequence[int] = (128, 128),
    activation: str = "mish",
    dtype=None,
) -> HighLevel:
    """The high level's macro-action encoder, predictor and macro-step cost-to-go."""
    if stride < 2:
        raise ValueError(f"hierarchy: stride must be >= 2 low-level steps, got {stride}")
    macro = nn.mlp(hidden, macro_size, activation=activation, layer_norm=True, dtype=dtype)
    model = world_model.make_world_model(latent_size, macro_size, hidden, activation, dtype)
    critic = cost.make_critic(latent_size, hidden, activation, kind="metric", dtype=dtype)
    return HighLevel(int(stride), int(macro_size), int(latent_size), int(action_size), macro, model, critic)


def init_high(hl: HighLevel, key: jax.Array, tx: optax.GradientTransformation) -> HighLearner:
    k_macro, k_pred, k_critic = jax.random.split(key, 3)
    params = HighParams(
        macro=hl.macro.init(k_macro, jnp.zeros(hl.stride * hl.action_size, jnp.float32)),
        predictor=hl.model.init(k_pred),
        critic=hl.critic.init(k_critic),
    )
    return HighLearner(params, jax.tree.map(jnp.copy, params.critic), tx.init(params))


def subsample(z: jax.Array, actions: jax.Array, stride: int) -> tuple[jax.Array, jax.Array]:
    """Latents every `stride` steps and the action blocks between them.

    `z [L + 1, D]`, `actions [L, A]` with `L = M * stride` -> `z_k [M + 1, D]` (`z[0], z[k], ...,
    z[Mk]`) and `blocks [M, k, A]` (`blocks[i] = actions[ik : (i + 1)k]`).
    """
    length = actions.shape[0]
    if length % stride or z.shape[0] != length + 1:
        raise ValueError(
            f"subsample: need actions [M*{stride}, A] and z [M*{stride}+1, D], got {actions.shape}, {z.shape}"
        )
    return z[::stride], actions.reshape(length // stride, stride, actions.shape[-1])


def prediction_loss(hl: HighLevel, params: HighParams, z: jax.Array, blocks: jax.Array, mask: jax.Array):
    """JEPA loss of the high predictor: `z [B, M+1, D]` fixed targets, `blocks [B, M, k, A]`,
    `mask [B]`. Returns `(loss, (u [B, M, m], per-step error [M]))`."""
    u = hl.encode_macro(params.macro, blocks)
    pred = jax.vmap(hl.model.rollout, in_axes=(None, 0, 0))(params.predictor, z[:, 0], u)  # [B, M, D]
    err = jnp.mean((pred - z[:, 1:]) ** 2, axis=-1)  # [B, M]
    per_step = jnp.sum(err * mask[:, None], 0) / jnp.maximum(jnp.sum(mask), 1.0)
    return jnp.mean(per_step), (u, per_step)


def spread_loss(u: jax.Array, mask: jax.Array, target_std: float) -> jax.Array:
    """`mean_j relu(target_std - std(u_j))` over the valid macro-actions `u [B, M, m]`."""
    w = jnp.broadcast_to(mask[:, None, None], u.shape)
    n = jnp.maximum(jnp.sum(w[..., 0]), 1.0)
    mean = jnp.sum(u * w, axis=(0, 1)) / n
    var = jnp.sum(w * (u - mean) ** 2, axis=(0, 1)) / n
    return jnp.mean(jax.nn.relu(target_std - jnp.sqrt(var + 1e-6)))


def critic_targets(z: jax.Array, key: jax.Array, random_fraction: float):
    """Hindsight pairs over macro-steps of windows `z [B, M+1, D]`: for every step `i < M` of
    every window a goal at offset `j - i`, `j ~ U{i..M}` (the window's own latent), or with
    probability `random_fraction` the latent of another window. Returns `(z_i, z_{i+1}, g
    [B, M, D], at_goal [B, M])` (`at_goal`: offset 0 of the window's own latent)."""
    b, steps = z.shape[0], z.shape[1] - 1
    k_off, k_rand, k_perm = jax.random.split(key, 3)
    i = jnp.arange(steps)
    j = i + jnp.floor(jax.random.uniform(k_off, (b, steps)) * (steps + 1 - i)).astype(jnp.int32)  # [B, M] in [i, M]
    own = jnp.take_along_axis(z, j[..., None], axis=1)  # [B, M, D]
    rand = jax.random.bernoulli(k_rand, random_fraction, (b, steps))
    other = jax.random.permutation(k_perm, own, axis=0)
    goal = jnp.where(rand[..., None], other, own)
    return z[:, :-1], z[:, 1:], goal, ((j == i) & ~rand).astype(jnp.float32)


def critic_loss(hl: HighLevel, s: HighSettings, params: HighParams, target: Params, z, key, mask):
    """The loss of `C_H` on windows `z [B, M+1, D]` (`mask [B]`): expectile TD on `critic_targets`
    (`objective="td"`), or the constrained shortest path of `cost.distance_loss` over macro-steps
    (`"distance"`: every observed macro-step within 1, unrelated latents of other windows pushed
    apart up to `max_distance`)."""
    if s.objective == "distance":
        z_i, z_next = z[:, :-1].reshape(-1, z.shape[-1]), z[:, 1:].reshape(-1, z.shape[-1])
        other = jax.random.permutation(key, z_next, axis=0)
        weights = jnp.repeat(mask, z.shape[1] - 1)
        return cost.distance_loss(params.critic, hl.critic, z_i, z_next, other, s.max_distance, s.penalty, weights)[0]
    z_i, z_next, goal, at_goal = critic_targets(z, key, s.random_goal_fraction)
    boot = 1.0 + s.gamma * hl.critic.apply(target, z_next, goal)
    y = jax.lax.stop_gradient(jnp.where(at_goal > 0, 0.0, boot))
    diff = y - hl.critic.apply(params.critic, z_i, goal)
    per = jnp.mean(cost.expectile_loss(diff, s.expectile), axis=-1)  # [B]
    return cost.masked_mean(per, mask)


def high_update(
    hl: HighLevel,
    s: HighSettings,
    tx: optax.GradientTransformation,
    learner: HighLearner,
    z: jax.Array,
    blocks: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    finite_step: Callable,
):
    """One step of the high level on windows of latents every `stride` steps `z [B, M+1, D]`
    (fixed targets), the action blocks between them `blocks [B, M, k, A]` (`subsample`) and
    `mask [B]`. Returns `(learner, metrics, finite)`."""
    z = jax.lax.stop_gradient(z)

    def loss_fn(p: HighParams):
        pred, (u, per_step) = prediction_loss(hl, p, z, blocks, mask)
        spread = spread_loss(u, mask, s.macro_std)
        c = critic_loss(hl, s, p, learner.target_critic, z, key, mask)
        metrics = {"high_pred": pred, "high_pred_last": per_step[-1], "high_spread": spread, "high_critic": c}
        return pred + spread + c, metrics

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(learner.params)
    params, opt, finite = finite_step(tx, grads, learner.opt, learner.params)
    target = perception.ema_update(learner.target_critic, params.critic, s.target_tau)
    return HighLearner(params, target, opt), metrics, finite


# --- planning -------------------------------------------------------------------------------


class HighPlanning(NamedTuple):
    """The high level's planner and the settings of the two-level act."""

    planner: Planner
    replan_every: int
    handover: float
    distance_weight: float
    critic_weight: float


def make_high_planning(hl: HighLevel, name: str, horizon: int, replan_every: int, handover: float, **kw):
    """`HighPlanning` with planner `name` over `horizon` macro-steps of size m (`kw`: its
    options and the two energy weights `distance_weight`, `critic_weight`)."""
    dw, cw = kw.pop("distance_weight", 1.0), kw.pop("critic_weight", 1.0)
    planner = make_planner(name, horizon=horizon, action_size=hl.macro_size, **kw)
    return HighPlanning(planner, int(replan_every), float(handover), float(dw), float(cw))


def high_energy(hl: HighLevel, hp: HighPlanning, params: HighParams, z0: jax.Array, goal: jax.Array, u: jax.Array):
    """`E_H(u)` of macro plan `u [M, m]` from `z0 [D]` to `goal [D]` (see the module docstring)."""
    z = hl.model.rollout(params.predictor, z0, u)  # [M, D]
    distance = jnp.sum((z[-1] - goal) ** 2) / z.shape[-1]
    return hp.distance_weight * distance + hp.critic_weight * jnp.mean(hl.critic.apply(params.critic, z, goal))


def empty_high_memory(hl: HighLevel, hp: HighPlanning, num_envs: int) -> HighMemory:
    m = HighMemory(
        plan=jnp.zeros((hp.planner.horizon, hl.macro_size), jnp.float32),
        plan_valid=jnp.zeros((), jnp.bool_),
        subgoal=jnp.zeros((hl.latent_size,), jnp.float32),
        since=jnp.zeros((), jnp.int32),
    )
    return memory.batched(m, num_envs)


def plan_subgoals(hl: HighLevel, hp: HighPlanning, params: HighParams, mem: HighMemory, z, g, key):
    """Re-plans the macro sequence for a batch (`z, g [N, D]`), warm-started from the shifted last
    plan, and stores its first predicted latent as the subgoal. Returns `(mem, energy [N])`."""

    def one(m: HighMemory, z_i, g_i, k):
        init = shift_plan(m.plan, m.since // hl.stride, fill="zeros")
        result = hp.planner.optimize(lambda u: high_energy(hl, hp, params, z_i, g_i, u), k, init)
        subgoal = hl.model.predict(params.predictor, z_i, result.actions[0])
        return HighMemory(result.actions, jnp.ones((), jnp.bool_), subgoal, jnp.zeros((), jnp.int32)), result.energy

    return jax.vmap(one)(mem, z, g, jax.random.split(key, z.shape[0]))
