"""The AMI agent: wires perception, world model, cost, memory and actor into the family contract.

    agent = make_agent(cfg, spec)                       # cfg: resolved; spec: what the env gives
    state = agent.init(key, num_envs)                  # parameters, optimisers, key, memories [N]
    state, action, info = agent.act(state, step, key)  # step: TimeStep [N] -> action [N, A]
    batch = agent.sample(buffer, key)                  # this family's batch from the replay
    state, metrics = agent.update(state, batch)        # one world-model, critic and policy update
    state = agent.reset(state, num_envs)               # the same learner, fresh memories [N]
    state = agent.prepare(state, buffer)               # data-dependent set-up (observation statistics)

Every agent family (`ami.family`) returns an `Agent` with these functions, so `ami.run`
trains, evaluates and checkpoints any of them without knowing which it runs.

`act` is receding-horizon MPC: every `replan_every` calls (and whenever an episode starts)
it encodes the observations (and goals) and runs the planner on the energy of `ami.cost`
over latent rollouts, warm-started from the shifted previous plan kept in short-term memory;
in between it executes the plan. Memory is reset where `step.first` marks a new episode.
All environments re-plan on the same calls (one `lax.cond`), so `act` under `jit` traces
once and runs batched. With `planner.mode: policy` the amortised policy acts alone.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ami import config, cost, memory, perception, policy, replay, scalars, value, world_model
from ami.actor import Planner, make_planner


class Spec(NamedTuple):
    """What an agent family needs to know of the task: observation shape, action size, goal or reward."""

    obs_shape: tuple[int, ...]
    action_size: int
    goal_conditioned: bool


class TimeStep(NamedTuple):
    """What the env gives at a step, batched: `obs [N, *obs_shape]`, the `reward [N]` of the step
    that led here, `first [N]` (bool: an episode starts here), `last [N]` (bool: it ended here),
    and `goal [N, *obs_shape]` on goal tasks only (None otherwise)."""

    obs: jax.Array
    reward: jax.Array
    first: jax.Array
    last: jax.Array
    goal: jax.Array | None = None


class Params(NamedTuple):
    """The parameter groups; a part the config leaves out is None."""

    encoder: Any
    predictor: Any
    inverse: Any = None
    reward: Any = None
    critic: Any = None
    value: Any = None
    policy: Any = None


class ActSettings(NamedTuple):
    """What `act` and the planning functions read from the config."""

    replan_every: int
    mode: str
    candidates: int
    noise: float
    visit_history: int


class Modules(NamedTuple):
    """The built modules (None where the config leaves a part out) and the energy over them."""

    perception: perception.Perception
    world_model: world_model.WorldModel
    reward: world_model.RewardHead | None
    critic: cost.Critic | None
    value: value.Value | None
    policy: policy.Policy | None
    planner: Planner
    weights: cost.EnergyWeights
    energy: Callable
    acting: ActSettings
    goal_task: bool


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


class AgentState(NamedTuple):
    """`learner`, the batched short-term `memory [N]` and the shared decision `clock` (int32)."""

    learner: Learner
    memory: memory.Memory
    clock: jax.Array


class UpdateBatch(NamedTuple):
    """One update's data: JEPA windows `obs [B, L+1, ...]`, `action [B, L, A]`, `reward [B, L]`,
    `terminal [B, L]` (1.0 where the task ended, not the time limit) and `mask [B]`; on goal
    tasks also critic pairs `pair_obs, pair_next_obs, pair_goal [Bc, ...]`, `pair_at_goal [Bc]`
    and `pair_mask [Bc]` (1.0 for pairs inside one episode)."""

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


class Agent(NamedTuple):
    """An agent family's contract (see the module docstring); `plan` and `modules` are the AMI
    agent's planning entry point and built modules, read by the diagnostics."""

    name: str
    init: Callable[[jax.Array, int], AgentState]
    act: Callable[..., tuple[AgentState, jax.Array, dict]]
    update: Callable[[AgentState, UpdateBatch], tuple[AgentState, dict]]
    sample: Callable[[replay.ReplayState, jax.Array], UpdateBatch]
    reset: Callable[[AgentState, int], AgentState]
    prepare: Callable[[AgentState, replay.ReplayState], AgentState]
    plan: Callable[..., Any]
    modules: Modules
    spec: Spec


FIXED = (perception.OBS_MEAN, perception.OBS_STD)


def energy_weights(cfg: config.CostConfig, critic_on: bool, gamma: float) -> cost.EnergyWeights:
    return cost.EnergyWeights(
        goal=cfg.goal_weight,
        action=cfg.action_weight,
        critic=cfg.critic_weight if critic_on else 0.0,
        terminal=cfg.terminal,
        visit=cfg.visit_weight,
        visit_scale=cfg.visit_scale,
        reward=cfg.reward_weight,
        value=cfg.value_weight,
        discount=gamma,
    )


def make_modules(cfg: config.ExperimentConfig, spec: Spec) -> Modules:
    """The agent's modules built from a resolved config, each from its own section."""
    p, w, c, v, pol, pl = cfg.perception, cfg.world_model, cfg.critic, cfg.value, cfg.policy, cfg.planner
    goal, a, d = spec.goal_conditioned, spec.action_size, p.latent_size
    percept = perception.make_perception(
        spec.obs_shape,
        d,
        p.hidden,
        p.activation,
        channels=p.channels,
        fourier=p.fourier_features,
        fourier_scale=p.fourier_scale,
        normalize=p.normalize,
    )
    model = world_model.make_world_model(d, a, w.hidden, w.activation)
    reward = None
    if cfg.cost.reward_weight or (not goal and w.reward_weight):
        reward = world_model.make_reward_head(d, a, w.reward_hidden, w.activation, scalars.make_head(w.reward_head))
    critic_on = c.enabled and goal
    critic = (
        cost.make_critic(d, c.hidden, kind=c.kind, fourier=c.fourier_features, fourier_scale=c.fourier_scale)
        if critic_on
        else None
    )
    q = None
    if not goal and (cfg.cost.value_weight or v.weight):
        q = value.make_value(d, a, v.hidden, v.num_heads, w.activation, scalars.make_head(v.head))
    pi = policy.make_policy(d, a, pol.hidden, p.activation, goal_conditioned=goal) if pol.enabled else None
    planner = make_planner(pl.name, horizon=pl.horizon, action_size=a, **pl.planner_options())
    weights = energy_weights(cfg.cost, critic_on, v.gamma)
    heads = cost.Heads(critic=critic, reward=reward, value=q, policy=pi)
    history = cfg.cost.visit_history if cfg.cost.visit_weight > 0 else 1
    acting = ActSettings(pl.replan_every, pl.mode, pol.candidates, pol.noise, history)
    return Modules(
        perception=percept,
        world_model=model,
        reward=reward,
        critic=critic,
        value=q,
        policy=pi,
        planner=planner,
        weights=weights,
        energy=cost.make_energy(model, heads, weights, goal),
        acting=acting,
        goal_task=goal,
    )


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


def model_part(params: Params) -> Params:
    """The parameters the world model's loss trains: encoder, predictor and the heads trained on its latents."""
    return params._replace(critic=None, policy=None)


def with_obs_stats(state: AgentState, obs: jax.Array) -> AgentState:
    """`state` whose encoder and target encoder standardise observations like `obs [..., O]`."""
    learner = state.learner
    params = learner.params._replace(encoder=perception.with_obs_stats(learner.params.encoder, obs))
    target = perception.with_obs_stats(learner.target_encoder, obs)
    return state._replace(learner=learner._replace(params=params, target_encoder=target))


def init_learner(m: Modules, cfg: config.ExperimentConfig, key: jax.Array) -> Learner:
    k_enc, k_pred, k_critic, k_next = jax.random.split(key, 4)
    d = cfg.perception.latent_size
    inverse = None
    if cfg.world_model.inverse_weight > 0:
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
    tx = make_optimizer(cfg.train)
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
    )


class UpdateSettings(NamedTuple):
    """The config sections `update` reads: each loss gets its own."""

    train: config.TrainConfig
    world_model: config.WorldModelConfig
    critic: config.CriticConfig
    value: config.ValueConfig
    policy: config.PolicyConfig
    horizon: int


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
    updates, opt_state = tx.update(grads, learner.model_opt, params)
    params = optax.apply_updates(params, updates)
    metrics["model_grad_norm"] = optax.global_norm(grads)
    return params, opt_state, metrics


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
    updates, opt_state = tx.update(grads, learner.critic_opt, learner.params.critic)
    new = optax.apply_updates(learner.params.critic, updates)
    return new, opt_state, perception.ema_update(learner.target_critic, new, c.target_tau), metrics


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
    updates, opt_state = tx.update(grads, learner.policy_opt, learner.params.policy)
    return optax.apply_updates(learner.params.policy, updates), opt_state, metrics


def update(m: Modules, s: UpdateSettings, state: AgentState, batch: UpdateBatch) -> tuple[AgentState, dict]:
    """One gradient step of the world model (JEPA loss, and the reward and value heads on reward
    tasks) and, where enabled, of the goal critic and the policy."""
    learner = state.learner
    key, k_model, k_critic = jax.random.split(learner.key, 3)
    model, model_opt, metrics = _model_update(m, s, learner, batch, k_model)
    params = learner.params._replace(
        encoder=model.encoder, predictor=model.predictor, inverse=model.inverse, reward=model.reward, value=model.value
    )
    target_encoder = perception.ema_update(learner.target_encoder, model.encoder, s.world_model.ema_tau)
    target_value = learner.target_value
    if m.value is not None:
        target_value = perception.ema_update(learner.target_value, model.value, s.value.target_tau)
    critic_opt, target_critic = learner.critic_opt, learner.target_critic
    if m.critic is not None:
        critic, critic_opt, target_critic, critic_metrics = _critic_update(m, s, learner, params, batch, k_critic)
        params, metrics = params._replace(critic=critic), {**metrics, **critic_metrics}
    policy_opt = learner.policy_opt
    if m.policy is not None:
        pi, policy_opt, policy_metrics = _policy_update(m, s, learner, params, batch)
        params, metrics = params._replace(policy=pi), {**metrics, **policy_metrics}
    learner = Learner(
        params, target_encoder, target_critic, model_opt, critic_opt, key, learner.step + 1, policy_opt, target_value
    )
    return state._replace(learner=learner), metrics


def policy_prior(m: Modules, params: Params, z0: jax.Array, goal: jax.Array | None, key: jax.Array):
    """`[P, H, A]` proposals of the amortised policy from `z0 [D]` (towards `goal [D]`); None without one."""
    if m.policy is None:
        return None
    predict = partial(m.world_model.predict, params.predictor)
    return policy.propose(
        m.policy, params.policy, predict, z0, goal, m.planner.horizon, m.acting.candidates, m.acting.noise, key
    )


def plan_batch(m: Modules, params: Params, z0, goal, init, key, mem: memory.Memory | None = None):
    """Plans for a batch: `z0 [N, D]`, `goal [N, D]` (None on reward tasks), warm starts
    `init [N, H, A]` -> `PlanResult [N]`.

    With an amortised policy its proposals are the planner's `prior` candidates; the batched
    short-term memory `mem [N]` feeds the energy's visit term (ignored when its weight is 0).
    """
    visited, valid = memory.recent_latents(mem, z0.shape[0], z0.shape[-1])

    def one(z0_i, goal_i, init_i, key_i, visited_i, valid_i):
        k_plan, k_prior = jax.random.split(key_i)
        prior = policy_prior(m, params, z0_i, goal_i, k_prior)

        def energy_fn(a):
            return m.energy(params, z0_i, goal_i, a, visited_i, valid_i)

        if prior is None:
            return m.planner.optimize(energy_fn, key_i, init_i)
        return m.planner.optimize(energy_fn, k_plan, init_i, prior=prior)

    return jax.vmap(one)(z0, goal, init, jax.random.split(key, z0.shape[0]), visited, valid)


def act(m: Modules, state: AgentState, step: TimeStep, key, plan_fn: Callable | None = None, context: Any = None):
    """Receding-horizon MPC for a batch: `step` (a `TimeStep [N]`) -> `(state, action [N, A], info)`.

    `plan_fn(params, z [N, D], goal [N, D] | None, init [N, H, A], key, context, memory [N]) ->
    PlanResult [N]` replaces planning over the learned model (e.g. the ground-truth twin plans
    over the true simulator, passing the env states as `context`).
    """
    params = state.learner.params
    encode = m.perception.encode
    mem = memory.reset_where(state.memory, step.first)
    z = encode(params.encoder, step.obs)
    g = encode(params.encoder, step.goal) if m.goal_task else None
    n = z.shape[0]
    if m.acting.mode == "policy":
        action = m.policy.apply(params.policy, z, g)
        mem = jax.vmap(memory.update)(mem, z, action)
        info = {"replanned": jnp.zeros((), jnp.bool_), "plan_energy": jnp.full((n,), jnp.nan, jnp.float32)}
        return AgentState(state.learner, mem, state.clock + 1), action, info
    if plan_fn is None:

        def plan_fn(params, z, g, init, key, context, mem):
            return plan_batch(m, params, z, g, init, key, mem)

    def replan(mem: memory.Memory):
        init = jax.vmap(memory.read_warm_start)(mem)
        result = plan_fn(params, z, g, init, key, context, mem)
        return jax.vmap(memory.store_plan)(mem, result.actions), result.energy

    def keep(mem: memory.Memory):
        return mem, jnp.full((n,), jnp.nan, jnp.float32)

    now = (state.clock % m.acting.replan_every == 0) | jnp.any(step.first & (state.clock > 0))
    mem, plan_energy = jax.lax.cond(now, replan, keep, mem)
    action = jax.vmap(memory.read_warm_start)(mem)[:, 0]
    mem = jax.vmap(memory.update)(mem, z, action)
    info = {"replanned": now, "plan_energy": plan_energy}
    return AgentState(state.learner, mem, state.clock + 1), action, info


def empty_memory(m: Modules, latent_size: int, num_envs: int) -> memory.Memory:
    """`num_envs` fresh short-term memories (batched on the leading axis)."""
    one = memory.init(m.planner.horizon, m.planner.action_size, latent_size, history=m.acting.visit_history)
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_envs, *x.shape)), one)


class SampleSettings(NamedTuple):
    batch_size: int
    length: int
    critic: config.CriticConfig


def sample_batch(s: SampleSettings, goal_task: bool, buffer: replay.ReplayState, key: jax.Array) -> UpdateBatch:
    """JEPA windows with rewards and, on goal tasks, hindsight critic pairs (a fraction with random goals)."""
    k_win, k_pair, k_rand, k_perm = jax.random.split(key, 4)
    windows = replay.sample(buffer, k_win, s.batch_size, s.length)
    t = windows.transitions
    obs = jnp.concatenate([t.obs[:, :1], t.next_obs], axis=1)
    terminal = (t.done * (1.0 - t.truncated)).astype(jnp.float32)
    batch = UpdateBatch(obs, t.action, t.reward.astype(jnp.float32), terminal, windows.valid.astype(jnp.float32))
    if not goal_task:
        return batch
    c = s.critic
    pairs = replay.sample_pairs(buffer, k_pair, c.batch_size, c.max_goal_offset, num_candidates=8)
    rand = jax.random.bernoulli(k_rand, c.random_goal_fraction, (c.batch_size,))
    other = jax.random.permutation(k_perm, pairs.obs_goal)
    goal = jnp.where(rand.reshape(-1, *(1,) * (pairs.obs_goal.ndim - 1)), other, pairs.obs_goal)
    return batch._replace(
        pair_obs=pairs.transition.obs,
        pair_next_obs=pairs.transition.next_obs,
        pair_goal=goal,
        pair_at_goal=((pairs.offset == 0) & ~rand).astype(jnp.float32),
        pair_mask=pairs.valid.astype(jnp.float32),
    )


def make_agent(cfg: config.ExperimentConfig, spec: Spec) -> Agent:
    """The AMI agent for a resolved config (`ami.configurator.resolve`)."""
    spec = Spec(tuple(spec.obs_shape), int(spec.action_size), bool(spec.goal_conditioned))
    m = make_modules(cfg, spec)
    d = cfg.perception.latent_size
    settings = UpdateSettings(cfg.train, cfg.world_model, cfg.critic, cfg.value, cfg.policy, cfg.planner.horizon)
    sampling = SampleSettings(cfg.train.batch_size, cfg.world_model.prediction_horizon, cfg.critic)

    def init(key: jax.Array, num_envs: int) -> AgentState:
        return AgentState(init_learner(m, cfg, key), empty_memory(m, d, num_envs), jnp.zeros((), jnp.int32))

    def reset(state: AgentState, num_envs: int) -> AgentState:
        return AgentState(state.learner, empty_memory(m, d, num_envs), jnp.zeros((), jnp.int32))

    def prepare(state: AgentState, buffer: replay.ReplayState) -> AgentState:
        return with_obs_stats(state, buffer.data.obs) if cfg.perception.normalize else state

    def plan(params, z0, goal, init_plan, key, mem=None):
        return plan_batch(m, params, z0, goal, init_plan, key, mem)

    return Agent(
        name="ami",
        init=init,
        act=lambda state, step, key, plan_fn=None, context=None: act(m, state, step, key, plan_fn, context),
        update=lambda state, batch: update(m, settings, state, batch),
        sample=lambda buffer, key: sample_batch(sampling, spec.goal_conditioned, buffer, key),
        reset=reset,
        prepare=prepare,
        plan=plan,
        modules=m,
        spec=spec,
    )
