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

from ami import config, cost, hierarchy, landmarks, memory, nn, perception, policy, replay, scalars, value, world_model
from ami.actor import Planner, make_planner
from ami.learner import (
    Learner,
    Params,
    UpdateBatch,
    UpdateSettings,
    init_learner,
    update,
)


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
    high: hierarchy.HighLevel | None = None
    high_planning: hierarchy.HighPlanning | None = None
    landmarks: landmarks.LandmarkPlanning | None = None


class AgentState(NamedTuple):
    """`learner`, the batched short-term `memory [N]`, the shared decision `clock` (int32) and,
    when planning at two levels, the batched high-level memory `high [N]`."""

    learner: Learner
    memory: memory.Memory
    clock: jax.Array
    high: hierarchy.HighMemory | None = None


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


def energy_weights(cfg: config.CostConfig, critic_on: bool, gamma: float) -> cost.EnergyWeights:
    return cost.EnergyWeights(
        goal=cfg.goal_weight,
        action=cfg.action_weight,
        critic=cfg.critic_weight if critic_on else 0.0,
        terminal=cfg.terminal,
        visit=cfg.visit_weight,
        visit_scale=cfg.visit_scale,
        visit_fade=cfg.visit_fade,
        visit_fade_power=cfg.visit_fade_power,
        reward=cfg.reward_weight,
        value=cfg.value_weight,
        discount=gamma,
    )


def make_modules(cfg: config.ExperimentConfig, spec: Spec) -> Modules:
    """The agent's modules built from a resolved config, each from its own section."""
    p, w, c, v, pol, pl = cfg.perception, cfg.world_model, cfg.critic, cfg.value, cfg.policy, cfg.planner
    goal, a, d = spec.goal_conditioned, spec.action_size, p.latent_size
    dtype = nn.compute_dtype(cfg.train.compute_dtype)  # mixed precision: float32 parameters either way
    percept = perception.make_perception(
        spec.obs_shape,
        d,
        p.hidden,
        p.activation,
        channels=p.channels,
        fourier=p.fourier_features,
        fourier_scale=p.fourier_scale,
        normalize=p.normalize,
        dtype=dtype,
    )
    model = world_model.make_world_model(d, a, w.hidden, w.activation, dtype)
    reward = None
    if cfg.cost.reward_weight or (not goal and w.reward_weight):
        reward = world_model.make_reward_head(
            d, a, w.reward_hidden, w.activation, scalars.make_head(w.reward_head), dtype
        )
    critic_on = c.enabled and goal
    critic = (
        cost.make_critic(
            d, c.hidden, kind=c.kind, fourier=c.fourier_features, fourier_scale=c.fourier_scale, dtype=dtype
        )
        if critic_on
        else None
    )
    q = None
    if not goal and (cfg.cost.value_weight or v.weight):
        q = value.make_value(d, a, v.hidden, v.num_heads, w.activation, scalars.make_head(v.head), dtype)
    pi = policy.make_policy(d, a, pol.hidden, p.activation, goal_conditioned=goal, dtype=dtype) if pol.enabled else None
    planner = make_planner(pl.name, horizon=pl.horizon, action_size=a, **pl.planner_options())
    weights = energy_weights(cfg.cost, critic_on, v.gamma)
    heads = cost.Heads(critic=critic, reward=reward, value=q, policy=pi)
    history = cfg.cost.visit_history if cfg.cost.visit_weight > 0 else 1
    acting = ActSettings(pl.replan_every, pl.mode, pol.candidates, pol.noise, history)
    high, high_planning = make_high(cfg, spec, dtype)
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
        high=high,
        high_planning=high_planning,
        landmarks=make_landmark_planning(cfg),
    )


def make_high(cfg: config.ExperimentConfig, spec: Spec, dtype):
    """The learned high level (None unless `hierarchy.learned`) and its planning (None unless `hierarchy.plan`)."""
    h = cfg.hierarchy
    if not h.learned:
        return None, None
    d, act = cfg.perception.latent_size, cfg.world_model.activation
    high = hierarchy.make_high_level(d, spec.action_size, h.stride, h.macro_size, h.hidden, act, dtype)
    if not h.plan:
        return high, None
    options = {**h.options, "distance_weight": h.distance_weight, "critic_weight": h.critic_weight}
    planning = hierarchy.make_high_planning(high, h.planner, h.horizon, h.replan_every, h.handover, **options)
    return high, planning


def make_landmark_planning(cfg: config.ExperimentConfig) -> landmarks.LandmarkPlanning | None:
    """Waypoint planning over the landmark graph (`hierarchy.subgoals: landmarks` with `plan`)."""
    h = cfg.hierarchy
    if not (h.enabled and h.subgoals == "landmarks" and h.plan):
        return None
    return landmarks.LandmarkPlanning(h.landmarks, float(h.edge_cutoff), h.max_hops, int(h.replan_every))


def with_obs_stats(state: AgentState, obs: jax.Array) -> AgentState:
    """`state` whose encoder and target encoder standardise observations like `obs [..., O]`."""
    learner = state.learner
    params = learner.params._replace(encoder=perception.with_obs_stats(learner.params.encoder, obs))
    target = perception.with_obs_stats(learner.target_encoder, obs)
    return state._replace(learner=learner._replace(params=params, target_encoder=target))


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

    started = jnp.any(step.first & (state.clock > 0))
    now = (state.clock % m.acting.replan_every == 0) | started
    high, info = state.high, {}
    if m.high_planning is not None:
        key, k_high = jax.random.split(key)
        high, g, high_now, info = subgoal_step(m, state, z, g, step.first, started, k_high)
        now = now | high_now
    elif m.landmarks is not None:
        high, g, high_now, info = waypoint_step(m, state, z, g, step.first, started)
        now = now | high_now
    mem, plan_energy = jax.lax.cond(now, replan, keep, mem)
    action = jax.vmap(memory.read_warm_start)(mem)[:, 0]
    mem = jax.vmap(memory.update)(mem, z, action)
    info = {"replanned": now, "plan_energy": plan_energy, **info}
    return AgentState(state.learner, mem, state.clock + 1, high), action, info


def subgoal_step(m: Modules, state: AgentState, z, g, first, started, key):
    """The high level's part of a two-level `act`: re-plans the macro-actions every
    `replan_every` steps (and where an episode starts) and returns `(high memory [N], the low
    level's goal [N, D], whether it re-planned, info)`; the low goal is the subgoal, or the goal
    itself within `handover` macro-steps of it by the high critic."""
    hp = m.high_planning
    high = memory.zeros_where(state.high, first)
    now = (state.clock % hp.replan_every == 0) | started

    def replan(h):
        return hierarchy.plan_subgoals(m.high, hp, state.learner.high.params, h, z, g, key)

    def keep(h):
        return h, jnp.full((z.shape[0],), jnp.nan, jnp.float32)

    high, energy = jax.lax.cond(now, replan, keep, high)
    near = m.high.critic.apply(state.learner.high.params.critic, z, g) <= hp.handover
    low_goal = jnp.where(near[:, None], g, high.subgoal)
    info = {"high_replanned": now, "high_energy": energy, "handed_over": near}
    return high._replace(since=high.since + 1), low_goal, now, info


def waypoint_step(m: Modules, state: AgentState, z, g, first, started):
    """The landmark graph's part of a two-level `act` (`ami.landmarks`): a new waypoint every
    `replan_every` steps (and where an episode starts); the low level's goal is the waypoint, or
    the goal itself once the low critic reads it within the edge cutoff."""
    lp, params = m.landmarks, state.learner.params
    high = memory.zeros_where(state.high, first)
    now = (state.clock % lp.replan_every == 0) | started
    critic = partial(m.critic.apply, params.critic)

    def replan(h):
        l = m.perception.encode(params.encoder, state.learner.landmarks)
        h, route, direct = landmarks.plan_waypoints(critic, lp, l, h, z, g)
        return h, route, direct

    def keep(h):
        return h, jnp.full((z.shape[0],), jnp.nan, jnp.float32), jnp.zeros((z.shape[0],), jnp.bool_)

    high, route, direct = jax.lax.cond(now, replan, keep, high)
    near = critic(z, g) <= lp.cutoff
    low_goal = jnp.where(near[:, None], g, high.subgoal)
    info = {"high_replanned": now, "high_energy": route, "handed_over": near, "waypoint_direct": direct}
    return high._replace(since=high.since + 1), low_goal, now, info


def empty_memory(m: Modules, latent_size: int, num_envs: int) -> memory.Memory:
    """`num_envs` fresh short-term memories (batched on the leading axis)."""
    one = memory.init(m.planner.horizon, m.planner.action_size, latent_size, history=m.acting.visit_history)
    return memory.batched(one, num_envs)


class SampleSettings(NamedTuple):
    batch_size: int
    length: int
    critic: config.CriticConfig
    hierarchy: config.HierarchyConfig | None = None
    groups: int = 1  # blocks of replay streams the batch is stratified over (`replay.sample`)


def sample_batch(s: SampleSettings, goal_task: bool, buffer: replay.ReplayState, key: jax.Array) -> UpdateBatch:
    """JEPA windows with rewards and, on goal tasks, hindsight critic pairs (a fraction with random
    goals, drawn from the pairs of the same block of streams: nothing crosses the `s.groups` blocks)."""
    k_win, k_pair, k_rand, k_perm = jax.random.split(key, 4)
    windows = replay.sample(buffer, k_win, s.batch_size, s.length, groups=s.groups)
    t = windows.transitions
    obs = jnp.concatenate([t.obs[:, :1], t.next_obs], axis=1)
    terminal = (t.done * (1.0 - t.truncated)).astype(jnp.float32)
    batch = UpdateBatch(obs, t.action, t.reward.astype(jnp.float32), terminal, windows.valid.astype(jnp.float32))
    if not goal_task:
        return batch
    if s.hierarchy is not None:
        h = s.hierarchy
        span = h.steps * h.stride
        k_long = jax.random.fold_in(k_win, 1)
        long = replay.sample(buffer, k_long, h.batch_size, span, num_candidates=4, groups=s.groups)
        lt = long.transitions
        batch = batch._replace(
            high_obs=jnp.concatenate([lt.obs[:, :1], lt.next_obs], axis=1),
            high_action=lt.action,
            high_mask=long.valid.astype(jnp.float32),
        )
    c = s.critic
    pairs = replay.sample_pairs(buffer, k_pair, c.batch_size, c.max_goal_offset, num_candidates=8, groups=s.groups)
    rand = jax.random.bernoulli(k_rand, c.random_goal_fraction, (c.batch_size,))
    other = _permute_within(k_perm, pairs.obs_goal, s.groups)
    goal = jnp.where(rand.reshape(-1, *(1,) * (pairs.obs_goal.ndim - 1)), other, pairs.obs_goal)
    return batch._replace(
        pair_obs=pairs.transition.obs,
        pair_next_obs=pairs.transition.next_obs,
        pair_goal=goal,
        pair_at_goal=((pairs.offset == 0) & ~rand).astype(jnp.float32),
        pair_mask=pairs.valid.astype(jnp.float32),
    )


def _permute_within(key: jax.Array, x: jax.Array, groups: int) -> jax.Array:
    """`x [B, ...]` with its rows shuffled inside each of `groups` consecutive blocks (1: all rows)."""
    if groups == 1:
        return jax.random.permutation(key, x)
    blocks = x.reshape(groups, x.shape[0] // groups, *x.shape[1:])
    shuffled = jax.vmap(jax.random.permutation)(jax.random.split(key, groups), blocks)
    return shuffled.reshape(x.shape)


def make_agent(cfg: config.ExperimentConfig, spec: Spec) -> Agent:
    """The AMI agent for a resolved config (`ami.configurator.resolve`)."""
    spec = Spec(tuple(spec.obs_shape), int(spec.action_size), bool(spec.goal_conditioned))
    m = make_modules(cfg, spec)
    d = cfg.perception.latent_size
    high = cfg.hierarchy if m.high is not None else None
    settings = UpdateSettings(cfg.train, cfg.world_model, cfg.critic, cfg.value, cfg.policy, cfg.planner.horizon, high)
    sampling = SampleSettings(
        cfg.train.batch_size, cfg.world_model.prediction_horizon, cfg.critic, high, cfg.distributed.sample_groups
    )

    def high_memory(num_envs: int):
        if m.landmarks is not None:
            return landmarks.empty_memory(d, num_envs)
        if m.high_planning is None:
            return None
        return hierarchy.empty_high_memory(m.high, m.high_planning, num_envs)

    def init(key: jax.Array, num_envs: int) -> AgentState:
        learner = init_learner(m, cfg.train, cfg.world_model, key)
        if cfg.hierarchy.enabled and cfg.hierarchy.subgoals == "landmarks":  # chosen from the replay by `prepare`
            learner = learner._replace(landmarks=jnp.zeros((cfg.hierarchy.landmarks, *spec.obs_shape), jnp.float32))
        return AgentState(learner, empty_memory(m, d, num_envs), jnp.zeros((), jnp.int32), high_memory(num_envs))

    def reset(state: AgentState, num_envs: int) -> AgentState:
        clock = jnp.zeros((), jnp.int32)
        return AgentState(state.learner, empty_memory(m, d, num_envs), clock, high_memory(num_envs))

    def prepare(state: AgentState, buffer: replay.ReplayState) -> AgentState:
        state = with_obs_stats(state, buffer.data.obs) if cfg.perception.normalize else state
        if cfg.hierarchy.enabled and cfg.hierarchy.subgoals == "landmarks":
            chosen = landmarks.from_replay(buffer.data.obs, cfg.hierarchy.landmarks).astype(jnp.float32)
            state = state._replace(learner=state.learner._replace(landmarks=chosen))
        return state

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
