"""The AMI agent's learner: its parameter groups, optimisers, slow targets and `update`.

One `update` is a gradient step of

* the world model (`ami.world_model`): the JEPA loss with its anti-collapse terms and, on
  reward tasks, the reward head's and the value heads' losses on the predicted latents
  (TD-MPC2-style: their gradients shape the latent), then the EMA of the encoder and of
  the value heads (`ami.value`);
* the goal critic (`ami.cost`, goal tasks) on hindsight pairs inside one episode;
* the amortised policy (`ami.policy`): on the planner's energy of its imagined rollouts, or
  on the value critic at its action (`policy.objective`).

Each loss receives its own config section (`UpdateSettings`), never the whole experiment.

Every optimiser step goes through `finite_step`: a step whose gradient or new parameters hold
a NaN or inf is skipped (parameters and optimiser state unchanged, slow targets follow the
unchanged parameters), and the update's metric `nonfinite_updates` is 1.0 (else 0.0).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ami import config, cost, hierarchy, perception, policy, value, world_model

if TYPE_CHECKING:
    from ami.agent import AgentState, Modules


class Params(NamedTuple):
    """The parameter groups; a part the config leaves out is None."""

    encoder: Any
    predictor: Any
    inverse: Any = None
    reward: Any = None
    critic: Any = None
    value: Any = None
    policy: Any = None


class Learner(NamedTuple):
    """Everything `update` changes: parameters, slow targets, optimiser states, key, step."""

    params: Params
    target_encoder: Any
    target_critic: Any
    model_opt: Any
    critic_opt: Any
    key: jax.Array
    step: jax.Array
    policy_opt: Any = None
    target_value: Any = None
    high: Any = None  # hierarchy.HighLearner of two-level runs
    landmarks: Any = None  # landmark observations [L, ...] of `hierarchy.subgoals: landmarks` runs


class UpdateBatch(NamedTuple):
    """One update's data: JEPA windows `obs [B, L+1, ...]`, `action [B, L, A]`, `reward [B, L]`,
    `terminal [B, L]` (1.0 where the task ended, not the time limit) and `mask [B]`; on goal
    tasks also critic pairs `pair_obs, pair_next_obs, pair_goal [Bc, ...]`, `pair_at_goal [Bc]`
    and `pair_mask [Bc]` (1.0 for pairs inside one episode); with a high level, its windows
    `high_obs [Bh, M*k+1, ...]`, `high_action [Bh, M*k, A]` and `high_mask [Bh]`."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminal: jax.Array
    mask: jax.Array
    pair_obs: jax.Array | None = None
    pair_next_obs: jax.Array | None = None
    pair_goal: jax.Array | None = None
    pair_at_goal: jax.Array | None = None
    pair_mask: jax.Array | None = None
    high_obs: jax.Array | None = None
    high_action: jax.Array | None = None
    high_mask: jax.Array | None = None


FIXED = (perception.OBS_MEAN, perception.OBS_STD)


def make_optimizer(t: config.TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping and AdamW; fixed observation statistics are never decayed (nor trained)."""

    def decayed(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: not any(getattr(k, "key", None) in FIXED for k in path), params
        )

    return optax.chain(
        optax.clip_by_global_norm(t.grad_clip),
        optax.adamw(t.learning_rate, weight_decay=t.weight_decay, mask=decayed),
    )


def all_finite(tree: Any) -> jax.Array:
    """bool `[]`: every floating leaf of `tree` is free of NaN and inf (True for a tree without one)."""
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.ones((), jnp.bool_)


def finite_step(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any):
    """One step of `tx`, skipped unless finite: `(params, opt_state, finite)`.

    `optax.apply_if_finite` with no tolerated steps, except that the optimiser state keeps
    its structure (checkpoints written before this guard still restore): when `grads` or the
    updated parameters hold a NaN or inf, `params` and `opt_state` come back unchanged and
    `finite` (bool `[]`) is False.
    """
    updates, new_state = tx.update(grads, opt_state, params)
    new = optax.apply_updates(params, updates)
    finite = all_finite(grads) & all_finite(new)

    def keep(a, b):
        return jnp.where(finite, a, b)

    return jax.tree.map(keep, new, params), jax.tree.map(keep, new_state, opt_state), finite


def model_part(params: Params) -> Params:
    """The parameters the world model's loss trains: encoder, predictor and the heads trained on its latents."""
    return params._replace(critic=None, policy=None)


def init_learner(m: Modules, t: config.TrainConfig, w: config.WorldModelConfig, key: jax.Array) -> Learner:
    """Fresh parameters of every part `m` has, their optimiser states (`t`) and slow targets."""
    k_enc, k_pred, k_critic, k_next = jax.random.split(key, 4)
    d = m.perception.latent_size
    inverse = None
    if w.inverse_weight > 0:
        head = world_model.make_inverse_head(d, m.world_model.action_size)
        inverse = head.init(jax.random.fold_in(k_critic, 1), jnp.zeros(2 * d))
    params = Params(
        encoder=m.perception.init(k_enc),
        predictor=m.world_model.init(k_pred),
        inverse=inverse,
        reward=m.reward.init(jax.random.fold_in(k_critic, 3)) if m.reward else None,
        critic=m.critic.init(k_critic) if m.critic else None,
        value=m.value.init(jax.random.fold_in(k_critic, 4)) if m.value else None,
        policy=m.policy.init(jax.random.fold_in(k_critic, 2)) if m.policy else None,
    )
    tx = make_optimizer(t)
    copy = partial(jax.tree.map, jnp.copy)  # targets start equal but own their buffers (donation)
    return Learner(
        params=params,
        target_encoder=copy(params.encoder),
        target_critic=copy(params.critic),
        model_opt=tx.init(model_part(params)),
        critic_opt=tx.init(params.critic),
        key=k_next,
        step=jnp.zeros((), jnp.int32),
        policy_opt=tx.init(params.policy) if m.policy else None,
        target_value=copy(params.value),
        high=hierarchy.init_high(m.high, jax.random.fold_in(k_critic, 5), tx) if m.high else None,
    )


class UpdateSettings(NamedTuple):
    """The config sections `update` reads: each loss gets its own."""

    train: config.TrainConfig
    world_model: config.WorldModelConfig
    critic: config.CriticConfig
    value: config.ValueConfig
    policy: config.PolicyConfig
    horizon: int
    hierarchy: config.HierarchyConfig | None = None


def _value_targets(m: Modules, s: UpdateSettings, learner: Learner, z_next, batch: UpdateBatch, key):
    """TD(lambda) targets `[B, L]` bootstrapped from the target heads at the policy's action."""
    params = learner.params
    z_next = jax.lax.stop_gradient(z_next)
    a_next = m.policy.apply(params.policy, z_next)
    bootstrap = value.pessimistic(m.value.apply(learner.target_value, z_next, a_next), key)
    discounts = s.value.gamma * (1.0 - batch.terminal)
    return jax.lax.stop_gradient(value.lambda_returns(batch.reward, bootstrap, discounts, s.value.lam))


def _model_loss(m: Modules, s: UpdateSettings, learner: Learner, batch: UpdateBatch, key, p: Params):
    """The JEPA loss, plus on reward tasks the reward head's and the value heads' losses on the
    predicted latents (their gradients reach the encoder and the predictor)."""
    loss, metrics, pred, z = world_model.jepa_terms(
        p, learner.target_encoder, batch.obs, batch.action, batch.mask, key, m.perception, m.world_model, s.world_model
    )
    states = jnp.concatenate([z[:, :1], pred[:, :-1]], axis=1)  # [B, L, D]: where each action was taken
    if m.reward is not None:
        r_loss, r_metrics = world_model.reward_loss(m.reward, p.reward, states, batch.action, batch.reward, batch.mask)
        loss, metrics = loss + s.world_model.reward_weight * r_loss, {**metrics, **r_metrics}
    if m.value is not None:
        targets = _value_targets(m, s, learner, z[:, 1:], batch, jax.random.fold_in(key, 7))
        v_loss, v_metrics = value.value_loss(m.value, p.value, states, batch.action, targets, batch.mask)
        loss, metrics = loss + s.value.weight * v_loss, {**metrics, **v_metrics}
    metrics["loss"] = loss
    return loss, metrics


def _model_update(m: Modules, s: UpdateSettings, learner: Learner, batch: UpdateBatch, key):
    tx = make_optimizer(s.train)
    params = model_part(learner.params)
    (_, metrics), grads = jax.value_and_grad(partial(_model_loss, m, s, learner, batch, key), has_aux=True)(params)
    params, opt_state, finite = finite_step(tx, grads, learner.model_opt, params)
    metrics["model_grad_norm"] = optax.global_norm(grads)
    return params, opt_state, metrics, finite


def _critic_update(m: Modules, s: UpdateSettings, learner: Learner, params: Params, batch: UpdateBatch, key):
    """One step of the goal critic (cost-to-go) on hindsight pairs inside one episode."""
    tx, critic, c = make_optimizer(s.train), m.critic, s.critic
    enc = m.perception.encode
    z, z_next, goal = (
        jax.lax.stop_gradient(enc(params.encoder, x)) for x in (batch.pair_obs, batch.pair_next_obs, batch.pair_goal)
    )
    mask = batch.pair_mask

    def loss_fn(p):
        if c.objective == "distance":
            return cost.distance_loss(p, critic, z, z_next, goal, c.max_distance, c.penalty, mask=mask)
        if c.objective == "model":
            actions = jax.random.uniform(key, (c.model_actions, m.world_model.action_size), minval=-1.0)
            predict = partial(m.world_model.predict, jax.lax.stop_gradient(params.predictor))
            return cost.model_critic_loss(
                p, learner.target_critic, critic, predict, z, z_next, goal, batch.pair_at_goal, actions, c.gamma, mask
            )
        return cost.critic_loss(
            p, learner.target_critic, critic, z, z_next, goal, batch.pair_at_goal, c.gamma, c.expectile, mask
        )

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(learner.params.critic)
    new, opt_state, finite = finite_step(tx, grads, learner.critic_opt, learner.params.critic)
    return new, opt_state, perception.ema_update(learner.target_critic, new, c.target_tau), metrics, finite


def _policy_starts(m: Modules, s: UpdateSettings, params: Params, batch: UpdateBatch):
    """`(z0 [n, D], goal [n, D] | None)`: where the policy's imagined rollouts start."""
    n, enc = s.policy.batch_size, m.perception.encode
    if m.goal_task:
        return tuple(jax.lax.stop_gradient(enc(params.encoder, x[:n])) for x in (batch.pair_obs, batch.pair_goal))
    starts = batch.obs[:, :-1].reshape(-1, *batch.obs.shape[2:])[:n]
    return jax.lax.stop_gradient(enc(params.encoder, starts)), None


def _policy_update(m: Modules, s: UpdateSettings, learner: Learner, params: Params, batch: UpdateBatch):
    """One step of the amortised policy on the energy of its imagined rollouts (model and heads fixed)."""
    tx = make_optimizer(s.train)
    fixed = jax.lax.stop_gradient(params)
    z0, goal = _policy_starts(m, s, params, batch)
    predict = partial(m.world_model.predict, fixed.predictor)
    energy = partial(m.energy, fixed)

    def loss_fn(p):
        if s.policy.objective == "value":
            q_value = lambda z, a: jnp.mean(m.value.apply(fixed.value, z, a), axis=0)  # noqa: E731
            return policy.value_loss(p, m.policy, q_value, z0)
        return policy.policy_loss(p, m.policy, predict, energy, z0, goal, s.horizon)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(learner.params.policy)
    return (*finite_step(tx, grads, learner.policy_opt, learner.params.policy), metrics)


def _high_update(m: Modules, s: UpdateSettings, learner: Learner, params: Params, batch: UpdateBatch, key):
    """One step of the high level on the encoder's (fixed) latents of its windows."""
    h = s.hierarchy
    obs, blocks = jax.vmap(partial(hierarchy.subsample, stride=h.stride))(batch.high_obs, batch.high_action)
    z = m.perception.encode(params.encoder, obs)  # [Bh, M+1, D]
    settings = hierarchy.settings(h)
    tx = make_optimizer(s.train)
    return hierarchy.high_update(m.high, settings, tx, learner.high, z, blocks, batch.high_mask, key, finite_step)


def update(m: Modules, s: UpdateSettings, state: AgentState, batch: UpdateBatch) -> tuple[AgentState, dict]:
    """One gradient step of the world model (JEPA loss, and the reward and value heads on reward
    tasks) and, where enabled, of the goal critic and the policy; each part's step is skipped
    when it is not finite (`finite_step`), and `metrics["nonfinite_updates"]` says whether any was."""
    learner = state.learner
    key, k_model, k_critic = jax.random.split(learner.key, 3)
    model, model_opt, metrics, finite = _model_update(m, s, learner, batch, k_model)
    params = learner.params._replace(
        encoder=model.encoder, predictor=model.predictor, inverse=model.inverse, reward=model.reward, value=model.value
    )
    target_encoder = perception.ema_update(learner.target_encoder, model.encoder, s.world_model.ema_tau)
    target_value = learner.target_value
    if m.value is not None:
        target_value = perception.ema_update(learner.target_value, model.value, s.value.target_tau)
    critic_opt, target_critic = learner.critic_opt, learner.target_critic
    if m.critic is not None:
        critic, critic_opt, target_critic, critic_metrics, ok = _critic_update(m, s, learner, params, batch, k_critic)
        params, metrics, finite = params._replace(critic=critic), {**metrics, **critic_metrics}, finite & ok
    policy_opt = learner.policy_opt
    if m.policy is not None:
        pi, policy_opt, ok, policy_metrics = _policy_update(m, s, learner, params, batch)
        params, metrics, finite = params._replace(policy=pi), {**metrics, **policy_metrics}, finite & ok
    high = learner.high
    if m.high is not None:
        high, high_metrics, ok = _high_update(m, s, learner, params, batch, jax.random.fold_in(k_critic, 1))
        metrics, finite = {**metrics, **high_metrics}, finite & ok
    metrics["nonfinite_updates"] = 1.0 - finite.astype(jnp.float32)
    learner = Learner(
        params,
        target_encoder,
        target_critic,
        model_opt,
        critic_opt,
        key,
        learner.step + 1,
        policy_opt,
        target_value,
        high,
        learner.landmarks,
    )
    return state._replace(learner=learner), metrics
