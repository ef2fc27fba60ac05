"""Cost: the energy of a plan as a sum of named, weighted terms, and the goal critic (cost-to-go).

The energy of an action sequence `a [H, A]` from latent `z0 [D]` is computed on the imagined
states `z_{1..H} = world_model.rollout(z0, a)` (or, for the ground-truth twin, the encoded
states of the true simulator) as `E(a) = sum_k w_k term_k` over the terms of `TERMS`:

    goal_distance   c_t ||z_t - g||^2 / D                         (goal tasks)
    cost_to_go      c_t C(z_t, g)                                  (goal tasks, goal critic)
    visit           mean_t sum_k exp(-||z_t - v_k||^2 / (2 s^2))   (short-term memory)
    action          mean_t ||a_t||^2
    reward          -sum_{t<H} gamma^t r(z_t, a_t)                 (reward tasks, world model's head)
    value           -gamma^H V(z_H),  V(z) = mean_i Q_i(z, pi(z))   (reward tasks, `ami.value`)

with `c_t` = 1 at t = H only (`terminal`) or uniform 1/H over the horizon, `z_0 = z0` in the
reward term. A reward task's energy is thus the negated model-predicted return
`E(a) = -(sum_{t<H} gamma^t r(z_t, a_t) + gamma^H V(z_H))` (TD-MPC2's planning objective);
a goal task's is the goal distance plus the critic's steps to go. The configurator picks
the weights from the task; a term of weight 0 is never computed.

The visit term makes an agent held at a local minimum of the energy (at a wall, the goal
behind it) find its own position dearer the longer it stays, until the plan slides away
along the wall; on Two-Rooms it lifts learned success from 0.84 to 0.97, but the agent then
leaves the goal too (benchmarks/RESULTS.md). Averaging the
cost-to-go over the imagined states rewards getting closer early and keeps the gradient
alive where the last state alone sits on a plateau (measured on Two-Rooms with the exact
geodesic cost-to-go and true dynamics, H=16, 8 restarts: 88.5 % terminal, 100 % averaged;
see benchmarks/RESULTS.md). The critic `C(z, g)` is a
learned number of steps to go, fitted on offline data by goal-conditioned temporal
differences with hindsight goals (GCIVL-style, distance form):

    target = 0                                   if g is the observation at t (k = 0)
             1 + gamma * C_target(z_{t+1}, g)    otherwise

regressed with a low expectile `tau` (< 0.5) so that C tracks the shortest observed way
to the goal rather than the behaviour policy's average. `C` lies in [0, 1/(1-gamma)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ami import nn

Params = nn.Params


class Critic(NamedTuple):
    """`init(key) -> params`; `apply(params, z [..., D], g [..., D]) -> steps to go [...]`."""

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array, jax.Array], jax.Array]


def make_critic(
    latent_size: int,
    hidden: Sequence[int] = (256, 256),
    activation: str = "mish",
    kind: str = "metric",
    embed_size: int = 32,
    fourier: int = 0,
    fourier_scale: float = 1.0,
    dtype=None,
) -> Critic:
    """A goal-conditioned cost-to-go `C(z, g) >= 0`.

    `kind="metric"`: `C = ||psi(z) - psi(g)||` with an MLP embedding psi (a distance, so it is
    symmetric and obeys the triangle inequality, as in Hilbert representations);
    `kind="mlp"`: `C = softplus(MLP([z, g]))`. `fourier > 0` adds random Fourier features of z
    to the metric critic's input.
    """
    if kind == "metric":
        return _metric_critic(latent_size, hidden, activation, embed_size, fourier, fourier_scale, dtype)
    if kind != "mlp":
        raise ValueError(f"critic kind must be 'metric' or 'mlp', got {kind!r}")
    net = nn.mlp(hidden, 1, activation=activation, layer_norm=True, dtype=dtype)

    def init(key: jax.Array) -> Params:
        return net.init(key, jnp.zeros(2 * latent_size, jnp.float32))

    def apply(params: Params, z: jax.Array, g: jax.Array) -> jax.Array:
        z, g = jnp.broadcast_arrays(z, g)
        return jax.nn.softplus(net.apply(params, jnp.concatenate([z, g], axis=-1))[..., 0])

    return Critic(init, apply)


def _metric_critic(
    latent_size: int,
    hidden: Sequence[int],
    activation: str,
    embed_size: int,
    fourier: int = 0,
    fourier_scale: float = 1.0,
    dtype=None,
) -> Critic:
    psi = nn.mlp(hidden, embed_size, activation=activation, layer_norm=True, dtype=dtype)
    features = nn.fourier_features(latent_size, fourier, fourier_scale)

    def init(key: jax.Array) -> Params:
        return psi.init(key, features(jnp.zeros(latent_size, jnp.float32)))

    def apply(params: Params, z: jax.Array, g: jax.Array) -> jax.Array:
        diff = psi.apply(params, features(z)) - psi.apply(params, features(g))
        return jnp.sqrt(jnp.sum(diff**2, axis=-1) + 1e-6)

    return Critic(init, apply)


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean of `x [B]` over the entries where `mask [B]` is 1 (all of them without a mask)."""
    if mask is None:
        return jnp.mean(x)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def expectile_loss(diff: jax.Array, tau: float) -> jax.Array:
    """`|tau - 1(diff < 0)| * diff^2` with `diff = target - prediction` (elementwise)."""
    return jnp.abs(tau - (diff < 0).astype(diff.dtype)) * diff**2


def critic_loss(
    params: Params,
    target_params: Params,
    critic: Critic,
    z: jax.Array,
    z_next: jax.Array,
    goal: jax.Array,
    at_goal: jax.Array,
    gamma: float,
    tau: float,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """TD loss of the cost-to-go on transitions `z [B, D] -> z_next [B, D]` towards `goal [B, D]`.

    `at_goal [B]` is 1.0 where the goal is the observation at t itself (target 0); pairs where
    `mask [B]` is 0 (not inside one episode) are left out.
    """
    bootstrap = 1.0 + gamma * critic.apply(target_params, z_next, goal)
    target = jax.lax.stop_gradient(jnp.where(at_goal > 0, 0.0, bootstrap))
    pred = critic.apply(params, z, goal)
    loss = masked_mean(expectile_loss(target - pred, tau), mask)
    return loss, {"critic_loss": loss, "critic_mean": jnp.mean(pred), "critic_max": jnp.max(pred)}


def model_critic_loss(
    params: Params,
    target_params: Params,
    critic: Critic,
    predict: Callable[[jax.Array, jax.Array], jax.Array],
    z: jax.Array,
    z_next: jax.Array,
    goal: jax.Array,
    at_goal: jax.Array,
    actions: jax.Array,
    gamma: float,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """Value iteration through the world model: the Bellman optimality backup, least squares.

    The best next state is chosen among the observed `z_next [B, D]` and the world model's
    predictions `predict(z, a_k)` for `actions [K, A]`, so the backup takes a minimum over
    actions instead of a low expectile of the behaviour's successors:

        target = 0 if at the goal, else 1 + gamma * min(C_target(z_next, g), min_k C_target(predict(z, a_k), g))
    """
    candidates = jax.vmap(lambda a: predict(z, jnp.broadcast_to(a, (*z.shape[:-1], a.shape[-1]))))(actions)
    imagined = jnp.min(critic.apply(target_params, candidates, goal[None]), axis=0)  # [B]
    best = jnp.minimum(imagined, critic.apply(target_params, z_next, goal))
    target = jax.lax.stop_gradient(jnp.where(at_goal > 0, 0.0, 1.0 + gamma * best))
    pred = critic.apply(params, z, goal)
    loss = masked_mean((target - pred) ** 2, mask)
    return loss, {"critic_loss": loss, "critic_mean": jnp.mean(pred), "critic_max": jnp.max(pred)}


def distance_loss(
    params: Params,
    critic: Critic,
    z: jax.Array,
    z_next: jax.Array,
    z_other: jax.Array,
    max_distance: float,
    penalty: float,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """Shortest-path distance by constrained maximisation (quasimetric-RL style, metric critic).

    Pushes the distance between unrelated states `z [B, D]`, `z_other [B, D]` up (capped at
    `max_distance`) while every observed transition `z -> z_next` must stay within one step:

        L = -mean min(C(z, z_other), max) / max  +  penalty * mean relu(C(z, z_next) - 1)^2

    The largest distance that respects one step per transition is the shortest-path
    length in steps through the data, so walls are learned as long detours, not shortcuts.
    """
    spread = jnp.minimum(critic.apply(params, z, z_other), max_distance)
    step = critic.apply(params, z, z_next)
    violation = masked_mean(jax.nn.relu(step - 1.0) ** 2, mask)
    loss = -masked_mean(spread, mask) / max_distance + penalty * violation
    metrics = {
        "critic_loss": loss,
        "critic_mean": jnp.mean(spread),
        "critic_max": jnp.max(spread),
        "critic_step": jnp.mean(step),
        "critic_violation": violation,
    }
    return loss, metrics


class EnergyWeights(NamedTuple):
    """Weights of the energy's named terms (`TERMS`); a term of weight 0 is never computed.

    `terminal` picks the time weighting of the state terms (goal distance, cost-to-go):
    the last imagined state only, or the mean over the horizon. `discount` is the reward
    and value terms' gamma.
    """

    goal: float = 1.0
    action: float = 0.0
    critic: float = 0.0
    terminal: bool = True
    visit: float = 0.0
    visit_scale: float = 1.0
    visit_fade: float = 0.0
    visit_fade_power: float = 1.0
    reward: float = 0.0
    value: float = 0.0
    discount: float = 0.99


class Heads(NamedTuple):
    """The trained heads the energy may read: goal `critic` (cost-to-go), `reward` head of the
    world model, `value` critic (Q ensemble) and the `policy` that picks the value's action."""

    critic: Critic | None = None
    reward: Any = None
    value: Any = None
    policy: Any = None


class Imagined(NamedTuple):
    """A latent trajectory to score: `z0 [D]`, the states it reaches `z [H, D]` under
    `actions [H, A]`, the `goal [D]` (None on reward tasks), and the visit term's recent
    latents `visited [K, D]` with `visited_valid [K]` (None without short-term memory)."""

    z0: jax.Array
    z: jax.Array
    actions: jax.Array
    goal: jax.Array | None = None
    visited: jax.Array | None = None
    visited_valid: jax.Array | None = None


def _over_time(per_step: jax.Array, w: EnergyWeights) -> jax.Array:
    return per_step[-1] if w.terminal else jnp.mean(per_step)


def goal_distance_term(params, heads: Heads, x: Imagined, w: EnergyWeights) -> jax.Array:
    """`||z_t - g||^2 / D`, at the last state or averaged (`terminal`)."""
    return _over_time(jnp.sum((x.z - x.goal) ** 2, axis=-1) / x.z.shape[-1], w)


def cost_to_go_term(params, heads: Heads, x: Imagined, w: EnergyWeights) -> jax.Array:
    """The goal critic's steps to go `C(z_t, g)`, at the last state or averaged (`terminal`)."""
    return _over_time(heads.critic.apply(params.critic, x.z, x.goal), w)


def visit_term(params, heads: Heads, x: Imagined, w: EnergyWeights) -> jax.Array:
    """`visit_cost` of the imagined states against the recent latents of short-term memory.

    With `visit_fade > 0` on a goal task with a goal critic, each imagined state's visit cost
    is scaled by `min(1, C(z_t, g) / visit_fade) ** visit_fade_power`: it fades out over the last `visit_fade`
    steps to go, so the agent that reached the goal is held there by the cost-to-go instead of
    being pushed on by its own recent positions.
    """
    if x.visited is None:
        return jnp.zeros((), jnp.float32)
    fade = None
    if w.visit_fade > 0.0 and x.goal is not None and heads.critic is not None:
        fade = jnp.clip(heads.critic.apply(params.critic, x.z, x.goal) / w.visit_fade, 0.0, 1.0) ** w.visit_fade_power
    return visit_cost(x.z, x.visited, x.visited_valid, w.visit_scale, fade)


def action_term(params, heads: Heads, x: Imagined, w: EnergyWeights) -> jax.Array:
    """`mean_t ||a_t||^2`."""
    return jnp.mean(jnp.sum(x.actions**2, -1))


def reward_term(params, heads: Heads, x: Imagined, w: EnergyWeights) -> jax.Array:
    """`-sum_{t<H} gamma^t r(z_t, a_t)` with `z_t` the state each action is taken in (`z_0` first)."""
    states = jnp.concatenate([x.z0[None], x.z[:-1]], axis=0)
    rewards = heads.reward.apply(params.reward, states, x.actions)  # [H]
    return -jnp.sum(w.discount ** jnp.arange(rewards.shape[0]) * rewards)


def value_term(params, heads: Heads, x: Imagined, w: EnergyWeights) -> jax.Array:
    """`-gamma^H V(z_H)`, `V(z) = mean_i Q_i(z, pi(z))`."""
    z_last = x.z[-1]
    q = heads.value.apply(params.value, z_last, heads.policy.apply(params.policy, z_last, x.goal))
    return -(w.discount ** x.z.shape[0]) * jnp.mean(q)


# name -> (weight field of EnergyWeights, term, needs a goal). Goal tasks and reward tasks
# select terms by their weights (the configurator's rule), on this one code path.
TERMS: dict[str, tuple[str, Callable, bool]] = {
    "goal_distance": ("goal", goal_distance_term, True),
    "cost_to_go": ("critic", cost_to_go_term, True),
    "visit": ("visit", visit_term, False),
    "action": ("action", action_term, False),
    "reward": ("reward", reward_term, False),
    "value": ("value", value_term, False),
}


def active_terms(w: EnergyWeights, goal_task: bool) -> tuple[str, ...]:
    """The names of the terms with non-zero weight that the task can compute."""
    return tuple(
        n for n, (field, _, needs_goal) in TERMS.items() if getattr(w, field) and (goal_task or not needs_goal)
    )


def trajectory_energy(params, heads: Heads, x: Imagined, w: EnergyWeights, terms: Sequence[str]) -> jax.Array:
    """`sum_k w_k term_k(x)` over the named `terms` (see `TERMS`)."""
    total = jnp.zeros((), jnp.float32)
    for name in terms:
        field, term, _ = TERMS[name]
        total = total + getattr(w, field) * term(params, heads, x, w)
    return total


def visit_cost(
    z: jax.Array, visited: jax.Array, valid: jax.Array, scale: float, fade: jax.Array | None = None
) -> jax.Array:
    """`mean_t f_t sum_k valid_k exp(-||z_t - v_k||^2 / (2 scale^2))` of `z [H, D]`, `visited [K, D]`,
    `valid [K]`, with per-step factors `fade [H]` (`f_t = 1` when None)."""
    d2 = jnp.sum((z[:, None, :] - visited[None]) ** 2, axis=-1)  # [H, K]
    per_step = jnp.sum(jnp.where(valid[None], jnp.exp(-0.5 * d2 / scale**2), 0.0), axis=-1)
    return jnp.mean(per_step if fade is None else fade * per_step)


def make_energy(world_model, heads: Heads, w: EnergyWeights, goal_task: bool):
    """`energy(params, z0 [D], goal [D] | None, actions [H, A], visited=None, visited_valid=None) -> []`
    over the learned model: the weighted sum of the active terms of the imagined rollout.

    `params` is the agent's parameter record (`predictor` and the heads the terms read).
    """
    terms = active_terms(w, goal_task)

    def energy(params, z0, goal, actions, visited=None, visited_valid=None) -> jax.Array:
        z = world_model.rollout(params.predictor, z0, actions)
        return trajectory_energy(params, heads, Imagined(z0, z, actions, goal, visited, visited_valid), w, terms)

    return energy
