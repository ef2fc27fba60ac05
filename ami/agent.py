"""The agent: wires perception, world model, cost, memory and actor into three pure functions.

    agent = make_agent(cfg, obs_shape, action_size)        # cfg: a resolved ExperimentConfig
    state = agent.init(key, num_envs)                     # parameters, optimisers, key, memory
    state, action, info = agent.act(state, obs, goal, key)   # obs, goal [N, *obs_shape] -> action [N, A]
    state, metrics = agent.update(state, batch)           # one world-model + critic update

`act` is receding-horizon MPC: every `replan_every` calls it encodes the observations and
goals, and runs the planner on the energy of `ami.cost` over latent rollouts, warm-started
from the shifted previous plan kept in short-term memory; in between it executes the plan.
All environments re-plan on the same calls (one `lax.cond` on the shared clock), so
`act` under `jit` traces once and runs batched.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ami import cost, memory, perception, policy, world_model
from ami.actor import make_planner
from ami.config import ExperimentConfig


class Learner(NamedTuple):
    """Everything `update` changes: parameters, their EMA targets, optimiser states, key, step.

    `params` holds `"encoder"`, `"predictor"`, `"inverse"`, `"critic"` and `"policy"` (None
    when that part is off); `policy_opt` is None without a policy.
    """

    params: dict
    target_encoder: Any
    target_critic: Any
    model_opt: Any
    critic_opt: Any
    key: jax.Array
    step: jax.Array
    policy_opt: Any = None


class AgentState(NamedTuple):
    """`learner`, the batched short-term `memory [N]` and the shared decision `clock` (int32)."""

    learner: Learner
    memory: memory.Memory
    clock: jax.Array


class UpdateBatch(NamedTuple):
    """One update's data: JEPA windows `obs [B, L+1, ...]`, `action [B, L, A]`, `mask [B]`, and
    critic transitions `z_obs, next_obs, goal_obs [Bc, ...]` with `at_goal [Bc]`."""

    obs: jax.Array
    action: jax.Array
    mask: jax.Array
    pair_obs: jax.Array
    pair_next_obs: jax.Array
    pair_goal: jax.Array
    pair_at_goal: jax.Array


class Agent(NamedTuple):
    init: Callable[[jax.Array, int], AgentState]
    act: Callable[..., tuple[AgentState, jax.Array, dict]]
    update: Callable[[AgentState, UpdateBatch], tuple[AgentState, dict]]
    plan: Callable[..., Any]
    modules: dict


def energy_weights(cfg: ExperimentConfig) -> cost.EnergyWeights:
    return cost.EnergyWeights(
        goal=cfg.cost.goal_weight,
        action=cfg.cost.action_weight,
        critic=cfg.cost.critic_weight if cfg.critic.enabled else 0.0,
        terminal=cfg.cost.terminal,
        visit=cfg.cost.visit_weight,
        visit_scale=cfg.cost.visit_scale,
    )


def make_modules(cfg: ExperimentConfig, obs_shape: tuple[int, ...], action_size: int) -> dict:
    """The agent's modules built from a resolved config."""
    p, w = cfg.perception, cfg.world_model
    modules = {
        "perception": perception.make_perception(
            obs_shape,
            p.latent_size,
            p.hidden,
            p.activation,
            channels=p.channels,
            fourier=p.fourier_features,
            fourier_scale=p.fourier_scale,
            normalize=p.normalize,
        ),
        "world_model": world_model.make_world_model(p.latent_size, action_size, w.hidden, w.activation),
        "critic": cost.make_critic(
            p.latent_size,
            cfg.critic.hidden,
            kind=cfg.critic.kind,
            fourier=cfg.critic.fourier_features,
            fourier_scale=cfg.critic.fourier_scale,
        )
        if cfg.critic.enabled
        else None,
    }
    modules["policy"] = (
        policy.make_policy(p.latent_size, action_size, cfg.policy.hidden, p.activation) if cfg.policy.enabled else None
    )
    modules["planner"] = make_planner(
        cfg.planner.name, horizon=cfg.planner.horizon, action_size=action_size, **cfg.planner.planner_options()
    )
    modules["energy_weights"] = energy_weights(cfg)
    modules["energy"] = cost.make_energy(modules["world_model"], modules["critic"], modules["energy_weights"])
    modules["cfg"] = cfg
    return modules


def _optimizers(cfg: ExperimentConfig) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    t = cfg.train

    def decayed(params):  # fixed observation statistics are never decayed (nor trained: zero gradient)
        return jax.tree_util.tree_map_with_path(
            lambda path, _: not any(getattr(k, "key", None) in FIXED for k in path), params
        )

    def make():
        return optax.chain(
            optax.clip_by_global_norm(t.grad_clip),
            optax.adamw(t.learning_rate, weight_decay=t.weight_decay, mask=decayed),
        )

    return make(), make()


MODEL_PARTS = ("encoder", "predictor", "inverse")
FIXED = (perception.OBS_MEAN, perception.OBS_STD)


def with_obs_stats(state: AgentState, obs: jax.Array) -> AgentState:
    """`state` whose encoder and target encoder standardise observations like `obs [..., O]`."""
    learner = state.learner
    params = {**learner.params, "encoder": perception.with_obs_stats(learner.params["encoder"], obs)}
    target = perception.with_obs_stats(learner.target_encoder, obs)
    return state._replace(learner=learner._replace(params=params, target_encoder=target))


def _model_part(params: dict) -> dict:
    """The parameters the JEPA loss trains (the inverse-dynamics head is None when unused)."""
    return {k: params[k] for k in MODEL_PARTS}


def _init_learner(cfg: ExperimentConfig, modules: dict, key: jax.Array) -> Learner:
    k_enc, k_pred, k_critic, k_next = jax.random.split(key, 4)
    params = {"encoder": modules["perception"].init(k_enc), "predictor": modules["world_model"].init(k_pred)}
    params["critic"] = modules["critic"].init(k_critic) if modules["critic"] is not None else None
    params["inverse"] = None
    params["policy"] = modules["policy"].init(jax.random.fold_in(k_critic, 2)) if modules["policy"] else None
    if cfg.world_model.inverse_weight > 0:
        head = world_model.make_inverse_head(cfg.perception.latent_size, modules["world_model"].action_size)
        params["inverse"] = head.init(jax.random.fold_in(k_critic, 1), jnp.zeros(2 * cfg.perception.latent_size))
    model_tx, critic_tx = _optimizers(cfg)
    model_params = _model_part(params)
    copy = partial(jax.tree.map, jnp.copy)  # targets start equal but own their buffers (donation)
    return Learner(
        params=params,
        target_encoder=copy(params["encoder"]),
        target_critic=copy(params["critic"]),
        model_opt=model_tx.init(model_params),
        critic_opt=critic_tx.init(params["critic"]),
        key=k_next,
        step=jnp.zeros((), jnp.int32),
        policy_opt=critic_tx.init(params["policy"]) if modules["policy"] else None,
    )


def _model_update(cfg: ExperimentConfig, modules: dict, learner: Learner, batch: UpdateBatch, key: jax.Array):
    tx, _ = _optimizers(cfg)
    model_params = _model_part(learner.params)

    def loss_fn(p):
        return world_model.jepa_loss(
            p,
            learner.target_encoder,
            batch.obs,
            batch.action,
            batch.mask,
            key,
            modules["perception"],
            modules["world_model"],
            cfg.world_model,
        )

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(model_params)
    updates, opt_state = tx.update(grads, learner.model_opt, model_params)
    model_params = optax.apply_updates(model_params, updates)
    metrics["model_grad_norm"] = optax.global_norm(grads)
    target = perception.ema_update(learner.target_encoder, model_params["encoder"], cfg.world_model.ema_tau)
    return model_params, opt_state, target, metrics


def _critic_update(
    cfg: ExperimentConfig, modules: dict, learner: Learner, encoder, predictor, batch: UpdateBatch, key: jax.Array
):
    _, tx = _optimizers(cfg)
    critic, c = modules["critic"], cfg.critic
    enc = modules["perception"].encode
    z, z_next, goal = (
        jax.lax.stop_gradient(enc(encoder, x)) for x in (batch.pair_obs, batch.pair_next_obs, batch.pair_goal)
    )

    def loss_fn(p):
        if c.objective == "distance":
            return cost.distance_loss(p, critic, z, z_next, goal, c.max_distance, c.penalty)
        if c.objective == "model":
            actions = jax.random.uniform(key, (c.model_actions, modules["world_model"].action_size), minval=-1.0)
            predict = partial(modules["world_model"].predict, jax.lax.stop_gradient(predictor))
            return cost.model_critic_loss(
                p, learner.target_critic, critic, predict, z, z_next, goal, batch.pair_at_goal, actions, c.gamma
            )
        return cost.critic_loss(
            p, learner.target_critic, critic, z, z_next, goal, batch.pair_at_goal, c.gamma, c.expectile
        )

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(learner.params["critic"])
    updates, opt_state = tx.update(grads, learner.critic_opt, learner.params["critic"])
    params = optax.apply_updates(learner.params["critic"], updates)
    target = perception.ema_update(learner.target_critic, params, c.target_tau)
    return params, opt_state, target, metrics


def _policy_update(cfg: ExperimentConfig, modules: dict, learner: Learner, params: dict, batch: UpdateBatch):
    """One step of the amortised policy on the energy of its imagined rollouts (model and critic fixed)."""
    _, tx = _optimizers(cfg)
    fixed = jax.lax.stop_gradient({"predictor": params["predictor"], "critic": params["critic"]})
    enc = modules["perception"].encode
    n = cfg.policy.batch_size
    z0, goal = (jax.lax.stop_gradient(enc(params["encoder"], x[:n])) for x in (batch.pair_obs, batch.pair_goal))
    predict = partial(modules["world_model"].predict, fixed["predictor"])
    energy = partial(modules["energy"], fixed)

    def loss_fn(p):
        return policy.policy_loss(p, modules["policy"], predict, energy, z0, goal, cfg.planner.horizon)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(learner.params["policy"])
    updates, opt_state = tx.update(grads, learner.policy_opt, learner.params["policy"])
    return optax.apply_updates(learner.params["policy"], updates), opt_state, metrics


def update(cfg: ExperimentConfig, modules: dict, state: AgentState, batch: UpdateBatch) -> tuple[AgentState, dict]:
    """One gradient step of the world model (JEPA loss) and, if enabled, of the critic and the policy."""
    learner = state.learner
    key, k_model, k_critic = jax.random.split(learner.key, 3)
    model_params, model_opt, target_encoder, metrics = _model_update(cfg, modules, learner, batch, k_model)
    critic_params, critic_opt, target_critic = learner.params["critic"], learner.critic_opt, learner.target_critic
    if modules["critic"] is not None:
        critic_params, critic_opt, target_critic, critic_metrics = _critic_update(
            cfg, modules, learner, model_params["encoder"], model_params["predictor"], batch, k_critic
        )
        metrics.update(critic_metrics)
    params = {**model_params, "critic": critic_params, "policy": learner.params["policy"]}
    policy_opt = learner.policy_opt
    if modules["policy"] is not None:
        params["policy"], policy_opt, policy_metrics = _policy_update(cfg, modules, learner, params, batch)
        metrics.update(policy_metrics)
    learner = Learner(params, target_encoder, target_critic, model_opt, critic_opt, key, learner.step + 1, policy_opt)
    return state._replace(learner=learner), metrics


def policy_prior(modules: dict, params: dict, z0: jax.Array, goal: jax.Array, key: jax.Array) -> jax.Array | None:
    """`[P, H, A]` proposals of the amortised policy from `z0 [D]` towards `goal [D]` (None without one)."""
    if modules["policy"] is None:
        return None
    cfg, planner = modules["cfg"], modules["planner"]
    predict = partial(modules["world_model"].predict, params["predictor"])
    return policy.propose(
        modules["policy"],
        params["policy"],
        predict,
        z0,
        goal,
        planner.horizon,
        cfg.policy.candidates,
        cfg.policy.noise,
        key,
    )


def plan_batch(
    modules: dict,
    params: dict,
    z0: jax.Array,
    goal: jax.Array,
    init: jax.Array,
    key: jax.Array,
    mem: memory.Memory | None = None,
):
    """Plans for a batch: `z0, goal [N, D]`, warm starts `init [N, H, A]` -> `PlanResult [N]`.

    With an amortised policy its proposals are the planner's `prior` candidates; the batched
    short-term memory `mem [N]` feeds the energy's visit term (ignored when its weight is 0).
    """
    planner, energy = modules["planner"], modules["energy"]
    visited, valid = memory.recent_latents(mem, z0.shape[0], z0.shape[-1])

    def one(z0_i, goal_i, init_i, key_i, visited_i, valid_i):
        k_plan, k_prior = jax.random.split(key_i)
        prior = policy_prior(modules, params, z0_i, goal_i, k_prior)

        def energy_fn(a):
            return energy(params, z0_i, goal_i, a, visited_i, valid_i)

        if prior is None:
            return planner.optimize(energy_fn, key_i, init_i)
        return planner.optimize(energy_fn, k_plan, init_i, prior=prior)

    keys = jax.random.split(key, z0.shape[0])
    return jax.vmap(one)(z0, goal, init, keys, visited, valid)


def act(
    cfg: ExperimentConfig,
    modules: dict,
    state: AgentState,
    obs: jax.Array,
    goal: jax.Array,
    key: jax.Array,
    plan_fn: Callable | None = None,
    context: Any = None,
):
    """Receding-horizon MPC for a batch: `obs, goal [N, *obs_shape]` -> `(state, action [N, A], info)`.

    `plan_fn(params, z [N, D], goal [N, D], init [N, H, A], key, context, memory [N]) ->
    PlanResult [N]` replaces planning over the learned model (e.g. the ground-truth twin plans
    over the true simulator, passing the env states as `context`).
    """
    encode = modules["perception"].encode
    if plan_fn is None:

        def plan_fn(params, z, g, init, key, context, mem):
            return plan_batch(modules, params, z, g, init, key, mem)

    params = state.learner.params
    z, g = encode(params["encoder"], obs), encode(params["encoder"], goal)
    n = z.shape[0]

    def replan(mem: memory.Memory):
        init = jax.vmap(memory.read_warm_start)(mem)
        result = plan_fn(params, z, g, init, key, context, mem)
        return jax.vmap(memory.store_plan)(mem, result.actions), result.energy

    def keep(mem: memory.Memory):
        return mem, jnp.full((n,), jnp.nan, jnp.float32)

    now = state.clock % cfg.planner.replan_every == 0
    mem, plan_energy = jax.lax.cond(now, replan, keep, state.memory)
    action = jax.vmap(memory.read_warm_start)(mem)[:, 0]
    mem = jax.vmap(memory.update)(mem, z, action)
    info = {"replanned": now, "plan_energy": plan_energy}
    return AgentState(state.learner, mem, state.clock + 1), action, info


def init(cfg: ExperimentConfig, modules: dict, key: jax.Array, num_envs: int) -> AgentState:
    """A fresh agent: initial parameters and optimisers, and `num_envs` empty memories."""
    learner = _init_learner(cfg, modules, key)
    return AgentState(learner, empty_memory(cfg, modules, num_envs), jnp.zeros((), jnp.int32))


def empty_memory(cfg: ExperimentConfig, modules: dict, num_envs: int) -> memory.Memory:
    """`num_envs` fresh short-term memories (batched on the leading axis)."""
    planner = modules["planner"]
    history = cfg.cost.visit_history if cfg.cost.visit_weight > 0 else 1
    one = memory.init(planner.horizon, planner.action_size, cfg.perception.latent_size, history=history)
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_envs, *x.shape)), one)


def make_agent(cfg: ExperimentConfig, obs_shape: tuple[int, ...], action_size: int) -> Agent:
    """The agent for a resolved config (`ami.configurator.resolve`)."""
    modules = make_modules(cfg, tuple(obs_shape), action_size)

    def _plan(params, z0, goal, init_plan, key, mem=None):
        return plan_batch(modules, params, z0, goal, init_plan, key, mem)

    return Agent(
        init=lambda key, num_envs: init(cfg, modules, key, num_envs),
        act=lambda state, obs, goal, key, plan_fn=None, context=None: act(
            cfg, modules, state, obs, goal, key, plan_fn, context
        ),
        update=lambda state, batch: update(cfg, modules, state, batch),
        plan=_plan,
        modules=modules,
    )
