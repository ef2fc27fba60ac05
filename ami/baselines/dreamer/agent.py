"""The Dreamer-style baseline agent (`agent.name: dreamer`), DreamerV3's recipe for vector observations.

    agent = make_dreamer(cfg, spec)                     # the same contract as ami.agent.make_agent
    state = agent.init(key, num_envs)
    state, action, info = agent.act(state, step, key)  # filter the observation, sample the actor
    batch = agent.sample(buffer, key)                  # windows of dreamer.length decisions
    state, metrics = agent.update(state, batch)        # world model, then actor and critic

World model (`rssm`, an encoder of `symlog(obs)`, a decoder back to `symlog(obs)`, a two-hot
symlog reward head and a Bernoulli continue head on the features `[h, z]`), trained on replayed
windows by

    L_model = ||dec(f_t) - symlog(o_t)||^2 - log p(r_t | f_t) - log p(c_t | f_t) + L_kl(q_t, p_t)

(`objectives.kl_balance`; reward and continue terms from the window's second step on, where a
transition led there). Actor and critic learn in imagination: from every posterior state of
the batch (stop-gradient) the actor samples `dreamer.horizon` steps through the prior; rewards,
continuation probabilities and critic values along the way give lambda-returns `R_t`
(`objectives.imagined_returns`), weighted by the cumulative continuation `w_t`. The actor
(`actor_grad: reinforce`) minimises `-w_t (sg((R_t - v_t) / max(1, S)) log pi(a_t) + eta H[pi])`
(`backprop`: `-w_t (R_t / max(1, S) + eta H[pi])` with gradients through the model); the
critic, a two-hot symlog head, regresses `R_t` and, with `slow_weight`, its slow copy's output.

Short-term memory is the filter's state and the previous action per env, reset where
`step.first` marks an episode start. Exploration is the actor's own sampling (set
`online.action_noise: 0`). There is no planner: the true-dynamics twin is not available.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ami import config, nn, replay, scalars
from ami.baselines.dreamer import objectives as obj
from ami.baselines.dreamer.rssm import RSSM, RState, make_rssm, observe
from ami.learner import finite_step

Params = Any


class Nets(NamedTuple):
    """The baseline's networks and scalar heads."""

    rssm: RSSM
    encoder: nn.Network
    decoder: nn.Network
    reward: nn.Network
    cont: nn.Network
    actor: nn.Network
    critic: nn.Network
    head: scalars.ScalarHead  # two-hot symlog: reward and critic


class DreamerParams(NamedTuple):
    """`model` (dict: rssm, encoder, decoder, reward, cont), `actor`, `critic`."""

    model: Params
    actor: Params
    critic: Params


class DreamerLearner(NamedTuple):
    params: DreamerParams
    slow_critic: Params
    model_opt: Any
    actor_opt: Any
    critic_opt: Any
    scale: obj.ReturnScale
    key: jax.Array
    step: jax.Array


class DreamerMemory(NamedTuple):
    """Per env: the filter's `state` (`RState [N]`) and the previous `action [N, A]`."""

    state: RState
    action: jax.Array


class DreamerState(NamedTuple):
    learner: DreamerLearner
    memory: DreamerMemory


class Windows(NamedTuple):
    """Replayed windows of `L + 1` observations: `obs [B, L+1, O]`, the action that led to each
    `prev_action [B, L+1, A]` (zero at the first), the reward and continuation flag of that
    transition `reward, cont [B, L+1]` (0 and 1 at the first), `first [B, L+1]` and `mask [B]`."""

    obs: jax.Array
    prev_action: jax.Array
    reward: jax.Array
    cont: jax.Array
    first: jax.Array
    mask: jax.Array


def make_nets(d: config.DreamerConfig, obs_size: int, action_size: int) -> Nets:
    hidden, act = (d.hidden,) * d.layers, d.activation
    rssm = make_rssm(d.hidden, action_size, d.deter, d.stoch, d.classes, d.hidden, act, d.unimix)
    head = scalars.make_head("twohot", bins=d.bins, limit=20.0)
    return Nets(
        rssm=rssm,
        encoder=nn.mlp(hidden, d.hidden, act),
        decoder=nn.mlp(hidden, obs_size, act),
        reward=nn.mlp(hidden, head.size, act),
        cont=nn.mlp(hidden, 1, act),
        actor=nn.mlp(hidden, 2 * action_size, act),
        critic=nn.mlp(hidden, head.size, act),
        head=head,
    )


def zero_last_layer(params: Params) -> Params:
    """`params` of an `nn.mlp` with its output layer zeroed (DreamerV3 starts reward and critic at 0)."""
    last = max((k for k in params if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))
    return {**params, last: jax.tree.map(jnp.zeros_like, params[last])}


def _optimizer(lr: float, clip: float, eps: float) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr, eps=eps))


def _optimizers(d: config.DreamerConfig):
    return (
        _optimizer(d.model_lr, d.model_clip, 1e-8),
        _optimizer(d.actor_lr, d.actor_critic_clip, 1e-5),
        _optimizer(d.critic_lr, d.actor_critic_clip, 1e-5),
    )


def init_learner(nets: Nets, d: config.DreamerConfig, obs_size: int, key: jax.Array) -> DreamerLearner:
    k = jax.random.split(key, 8)
    feat = jnp.zeros(nets.rssm.feature_size)
    model = {
        "rssm": nets.rssm.init(k[0]),
        "encoder": nets.encoder.init(k[1], jnp.zeros(obs_size)),
        "decoder": nets.decoder.init(k[2], feat),
        "reward": zero_last_layer(nets.reward.init(k[3], feat)),
        "cont": nets.cont.init(k[4], feat),
    }
    params = DreamerParams(model, nets.actor.init(k[5], feat), zero_last_layer(nets.critic.init(k[6], feat)))
    tx_model, tx_actor, tx_critic = _optimizers(d)
    return DreamerLearner(
        params=params,
        slow_critic=jax.tree.map(jnp.copy, params.critic),
        model_opt=tx_model.init(params.model),
        actor_opt=tx_actor.init(params.actor),
        critic_opt=tx_critic.init(params.critic),
        scale=obj.init_return_scale(),
        key=k[7],
        step=jnp.zeros((), jnp.int32),
    )


def _time_major(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, 0, 1)


def _masked_mean(x: jax.Array, weight: jax.Array) -> jax.Array:
    return jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def model_loss(nets: Nets, d: config.DreamerConfig, model: Params, batch: Windows, key: jax.Array):
    """`(L_model, (posterior states RState [L+1, B], metrics))` on `batch` (module docstring)."""
    target = scalars.symlog(_time_major(batch.obs))  # [T, B, O]
    embed = nets.encoder.apply(model["encoder"], target)
    first = _time_major(batch.first)
    states, post, prior = observe(nets.rssm, model["rssm"], embed, _time_major(batch.prev_action), first, key)
    feat = nets.rssm.features(states)
    recon = jnp.sum((nets.decoder.apply(model["decoder"], feat) - target) ** 2, axis=-1)  # [T, B]
    reward = nets.head.loss(nets.reward.apply(model["reward"], feat), _time_major(batch.reward))
    cont_logit = nets.cont.apply(model["cont"], feat)[..., 0]
    cont = optax.sigmoid_binary_cross_entropy(cont_logit, _time_major(batch.cont))
    kl, kl_metrics = obj.kl_balance(post, prior, d.free_nats, d.dyn_weight, d.rep_weight)
    mask = jnp.broadcast_to(batch.mask[None], first.shape)
    transition = mask * (1.0 - first)  # steps a transition led to
    parts = {
        "recon_loss": _masked_mean(recon, mask),
        "reward_loss": _masked_mean(reward, transition),
        "cont_loss": _masked_mean(cont, transition),
        "kl_loss": _masked_mean(kl, mask),
    }
    loss = sum(parts.values())
    metrics = {**parts, **kl_metrics, "model_loss": loss}
    return loss, (states, metrics)


def imagine(nets: Nets, d: config.DreamerConfig, model: Params, actor: Params, start: RState, key: jax.Array):
    """Rolls the actor `d.horizon` steps through the prior from `start [N]`: features `[H+1, N, F]`,
    raw action samples `[H, N, A]` and the actor's distributions at s_0..s_{H-1}."""

    def step(state: RState, k):
        feat = nets.rssm.features(state)
        dist = obj.bounded_normal(nets.actor.apply(actor, feat), d.min_std, d.max_std)
        k_act, k_img = jax.random.split(k)
        raw, action = obj.sample_normal(dist, k_act)
        state, _ = nets.rssm.img_step(model["rssm"], state, action, k_img)
        return state, (feat, raw, dist)

    last, (feats, raws, dists) = jax.lax.scan(step, start, jax.random.split(key, d.horizon))
    return jnp.concatenate([feats, nets.rssm.features(last)[None]], 0), raws, dists


def actor_loss(nets: Nets, d: config.DreamerConfig, learner: DreamerLearner, model, start: RState, key, actor):
    """`(loss, (imagined features [H+1, N, F], returns [H, N], weights [H, N], new scale, metrics))`."""
    sg = jax.lax.stop_gradient
    reinforce = d.actor_grad == "reinforce"
    # REINFORCE needs no gradient through the imagined path: roll out with fixed actor parameters,
    # then score the sampled actions under the actor's distributions at the (fixed) states
    feats, raws, dists = imagine(nets, d, model, sg(actor) if reinforce else actor, start, key)
    if reinforce:
        feats, raws = sg(feats), sg(raws)
        dists = obj.bounded_normal(nets.actor.apply(actor, feats[:-1]), d.min_std, d.max_std)
    rewards = nets.head.value(nets.reward.apply(model["reward"], feats[1:]))  # [H, N]
    conts = jax.nn.sigmoid(nets.cont.apply(model["cont"], feats[1:])[..., 0])
    values = nets.head.value(nets.critic.apply(learner.params.critic, feats))  # [H+1, N]
    returns = _time_major(obj.imagined_returns(*(_time_major(x) for x in (rewards, values, conts)), d.gamma, d.lam))
    weights = sg(jnp.cumprod(jnp.concatenate([jnp.ones_like(conts[:1]), conts[:-1]], 0), axis=0))
    scale_state, scale = obj.update_return_scale(learner.scale, returns, d.return_decay)
    ent = obj.entropy(dists)
    objective = sg((returns - values[:-1]) / scale) * obj.log_prob(dists, raws) if reinforce else returns / scale
    loss = -jnp.mean(weights * (objective + d.entropy * ent))
    metrics = {
        "actor_loss": loss,
        "actor_entropy": jnp.mean(ent),
        "imagined_return": jnp.mean(returns),
        "imagined_reward": jnp.mean(rewards),
        "return_scale": scale,
        "action_std": jnp.mean(dists.std),
    }
    return loss, (sg(feats), sg(returns), weights, scale_state, metrics)


def critic_loss(nets: Nets, d: config.DreamerConfig, slow: Params, feats, returns, weights, critic: Params):
    """Two-hot loss of the critic at s_0..s_{H-1} against the returns and the slow critic's values."""
    out = nets.critic.apply(critic, feats[:-1])
    slow_value = jax.lax.stop_gradient(nets.head.value(nets.critic.apply(slow, feats[:-1])))
    per = nets.head.loss(out, returns) + d.slow_weight * nets.head.loss(out, slow_value)
    loss = jnp.mean(weights * per)
    return loss, {"critic_loss": loss, "value_mean": jnp.mean(nets.head.value(jax.lax.stop_gradient(out)))}


def update(nets: Nets, d: config.DreamerConfig, state: DreamerState, batch: Windows):
    """One step of the world model, then of the actor and the critic on its imagination; a step
    that is not finite is skipped (`ami.learner.finite_step`; metric `nonfinite_updates`)."""
    learner = state.learner
    p = learner.params
    key, k_model, k_imagine = jax.random.split(learner.key, 3)
    tx_model, tx_actor, tx_critic = _optimizers(d)
    (_, (states, metrics)), grads = jax.value_and_grad(
        partial(model_loss, nets, d, batch=batch, key=k_model), has_aux=True
    )(p.model)
    model, model_opt, ok_model = finite_step(tx_model, grads, learner.model_opt, p.model)
    metrics["model_grad_norm"] = optax.global_norm(grads)
    start = jax.tree.map(lambda x: jax.lax.stop_gradient(x.reshape(-1, *x.shape[2:])), states)  # [T B]
    if d.imagine_starts is not None and d.imagine_starts < start.deter.shape[0]:
        key, k_starts = jax.random.split(key)
        pick = jax.random.permutation(k_starts, start.deter.shape[0])[: d.imagine_starts]
        start = jax.tree.map(lambda x: x[pick], start)
    fixed = jax.lax.stop_gradient(model)
    (_, (feats, returns, weights, scale, a_metrics)), a_grads = jax.value_and_grad(
        partial(actor_loss, nets, d, learner, fixed, start, k_imagine), has_aux=True
    )(p.actor)
    actor, actor_opt, ok_actor = finite_step(tx_actor, a_grads, learner.actor_opt, p.actor)
    scale = jax.tree.map(lambda new, old: jnp.where(ok_actor, new, old), scale, learner.scale)
    (_, c_metrics), c_grads = jax.value_and_grad(
        partial(critic_loss, nets, d, learner.slow_critic, feats, returns, weights), has_aux=True
    )(p.critic)
    critic, critic_opt, ok_critic = finite_step(tx_critic, c_grads, learner.critic_opt, p.critic)
    slow = jax.tree.map(lambda s, c: d.slow_tau * s + (1.0 - d.slow_tau) * c, learner.slow_critic, critic)
    learner = DreamerLearner(
        DreamerParams(model, actor, critic), slow, model_opt, actor_opt, critic_opt, scale, key, learner.step + 1
    )
    skipped = 1.0 - (ok_model & ok_actor & ok_critic).astype(jnp.float32)
    return state._replace(learner=learner), {**metrics, **a_metrics, **c_metrics, "nonfinite_updates": skipped}


def act(nets: Nets, d: config.DreamerConfig, state: DreamerState, step, key, plan_fn=None, context=None):
    """Filters `step.obs [N, O]` into the model state and samples the actor: `(state, action [N, A], info)`."""
    if plan_fn is not None:
        raise ValueError("the dreamer agent has no planner: the true-dynamics controller is not available")
    model, actor = state.learner.params.model, state.learner.params.actor
    keep = (1.0 - step.first.astype(jnp.float32))[:, None]
    mem = state.memory
    prev = RState(mem.state.deter * keep, mem.state.stoch * keep[..., None])
    embed = nets.encoder.apply(model["encoder"], scalars.symlog(step.obs))
    k_obs, k_act = jax.random.split(key)
    rstate, _, _ = nets.rssm.obs_step(model["rssm"], prev, mem.action * keep, embed, k_obs)
    dist = obj.bounded_normal(nets.actor.apply(actor, nets.rssm.features(rstate)), d.min_std, d.max_std)
    _, action = obj.sample_normal(dist, k_act)
    return state._replace(memory=DreamerMemory(rstate, action)), action, {}


def sample_windows(d: config.DreamerConfig, buffer: replay.ReplayState, key: jax.Array, groups: int = 1) -> Windows:
    """`d.batch_size` windows of `d.length` transitions inside one episode, as `Windows`
    (stratified over `groups` blocks of streams, `ami.replay.sample`)."""
    w = replay.sample(buffer, key, d.batch_size, d.length, groups=groups)
    t = w.transitions
    b = t.action.shape[0]
    terminal = (t.done * (1.0 - t.truncated)).astype(jnp.float32)
    return Windows(
        obs=jnp.concatenate([t.obs[:, :1], t.next_obs], axis=1).astype(jnp.float32),
        prev_action=jnp.concatenate([jnp.zeros_like(t.action[:, :1]), t.action], axis=1),
        reward=jnp.concatenate([jnp.zeros((b, 1)), t.reward.astype(jnp.float32)], axis=1),
        cont=jnp.concatenate([jnp.ones((b, 1)), 1.0 - terminal], axis=1),
        first=jnp.concatenate([jnp.ones((b, 1)), jnp.zeros((b, d.length))], axis=1),
        mask=w.valid.astype(jnp.float32),
    )


def make_dreamer(cfg: config.ExperimentConfig, spec):
    """The Dreamer-style agent for a resolved config (vector observations, reward tasks)."""
    from ami.agent import Agent, Spec

    spec = Spec(tuple(spec.obs_shape), int(spec.action_size), bool(spec.goal_conditioned))
    if spec.goal_conditioned or len(spec.obs_shape) != 1:
        raise ValueError(
            f"the dreamer agent learns reward tasks from vector observations; got obs shape {spec.obs_shape}"
            + (" and a goal-conditioned env" if spec.goal_conditioned else "")
        )
    d, (obs_size,), a = cfg.dreamer, spec.obs_shape, spec.action_size
    nets = make_nets(d, obs_size, a)

    def memory(num_envs: int) -> DreamerMemory:
        return DreamerMemory(nets.rssm.initial((num_envs,)), jnp.zeros((num_envs, a)))

    def init(key: jax.Array, num_envs: int) -> DreamerState:
        return DreamerState(init_learner(nets, d, obs_size, key), memory(num_envs))

    return Agent(
        name="dreamer",
        init=init,
        act=lambda state, step, key, plan_fn=None, context=None: act(nets, d, state, step, key, plan_fn, context),
        update=lambda state, batch: update(nets, d, state, batch),
        sample=lambda buffer, key: sample_windows(d, buffer, key, cfg.distributed.sample_groups),
        reset=lambda state, num_envs: DreamerState(state.learner, memory(num_envs)),
        prepare=lambda state, buffer: state,
        plan=None,
        modules=nets,
        spec=spec,
    )
