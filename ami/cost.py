"""Cost: the intrinsic goal energy and a trainable goal-conditioned critic (cost-to-go).

Energy of an action sequence `a [H, A]` from latent `z0 [D]` towards goal latent `g [D]`:

    z_{1..H} = world_model.rollout(z0, a)
    E(a) = sum_t c_t (w_goal ||z_t - g||^2 / D  +  w_critic C(z_t, g))  +  w_action mean_t ||a_t||^2

with `c_t` = 1 at t = H only (`terminal`) or uniform 1/H over the horizon, plus, with
`w_visit > 0`, a cost of revisiting the latents `v_k` the agent was in recently (short-term
memory): `w_visit mean_t sum_k exp(-||z_t - v_k||^2 / (2 s^2))`. An agent held at a local
minimum of the energy (at a wall, the goal behind it) makes its own position dearer the
longer it stays, until the plan slides away along the wall; on Two-Rooms it lifts learned
success from 0.84 to 0.97, but the agent then leaves the goal too (benchmarks/RESULTS.md).
Averaging the
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
from typing import NamedTuple

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
) -> Critic:
    """A goal-conditioned cost-to-go `C(z, g) >= 0`.

    `kind="metric"`: `C = ||psi(z) - psi(g)||` with an MLP embedding psi (a distance, so it is
    symmetric and obeys the triangle inequality, as in Hilbert representations);
    `kind="mlp"`: `C = softplus(MLP([z, g]))`. `fourier > 0` adds random Fourier features of z
    to the metric critic's input.
    """
    if kind == "metric":
        return _metric_critic(latent_size, hidden, activation, embed_size, fourier, fourier_scale)
    if kind != "mlp":
        raise ValueError(f"critic kind must be 'metric' or 'mlp', got {kind!r}")
    net = nn.mlp(hidden, 1, activation=activation, layer_norm=True)

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
) -> Critic:
    psi = nn.mlp(hidden, embed_size, activation=activation, layer_norm=True)
    features = nn.fourier_features(latent_size, fourier, fourier_scale)

    def init(key: jax.Array) -> Params:
        return psi.init(key, features(jnp.zeros(latent_size, jnp.float32)))

    def apply(params: Params, z: jax.Array, g: jax.Array) -> jax.Array:
        diff = psi.apply(params, features(z)) - psi.apply(params, features(g))
        return jnp.sqrt(jnp.sum(diff**2, axis=-1) + 1e-6)

    return Critic(init, apply)


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
) -> tuple[jax.Array, dict]:
    """TD loss of the cost-to-go on transitions `z [B, D] -> z_next [B, D]` towards `goal [B, D]`.

    `at_goal [B]` is 1.0 where the goal is the observation at t itself (target 0).
    """
    bootstrap = 1.0 + gamma * critic.apply(target_params, z_next, goal)
    target = jax.lax.stop_gradient(jnp.where(at_goal > 0, 0.0, bootstrap))
    pred = critic.apply(params, z, goal)
    loss = jnp.mean(expectile_loss(target - pred, tau))
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
    loss = jnp.mean((target - pred) ** 2)
    return loss, {"critic_loss": loss, "critic_mean": jnp.mean(pred), "critic_max": jnp.max(pred)}


def distance_loss(
    params: Params,
    critic: Critic,
    z: jax.Array,
    z_next: jax.Array,
    z_other: jax.Array,
    max_distance: float,
    penalty: float,
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
    violation = jnp.mean(jax.nn.relu(step - 1.0) ** 2)
    loss = -jnp.mean(spread) / max_distance + penalty * violation
    metrics = {
        "critic_loss": loss,
        "critic_mean": jnp.mean(spread),
        "critic_max": jnp.max(spread),
        "critic_step": jnp.mean(step),
        "critic_violation": violation,
    }
    return loss, metrics


class EnergyWeights(NamedTuple):
    """Weights of the energy's terms; `terminal` picks the goal term's time weighting."""

    goal: float = 1.0
    action: float = 0.0
    critic: float = 0.0
    terminal: bool = True
    visit: float = 0.0
    visit_scale: float = 1.0


def visit_cost(z: jax.Array, visited: jax.Array, valid: jax.Array, scale: float) -> jax.Array:
    """`mean_t sum_k valid_k exp(-||z_t - v_k||^2 / (2 scale^2))` of `z [H, D]`, `visited [K, D]`, `valid [K]`."""
    d2 = jnp.sum((z[:, None, :] - visited[None]) ** 2, axis=-1)  # [H, K]
    return jnp.mean(jnp.sum(jnp.where(valid[None], jnp.exp(-0.5 * d2 / scale**2), 0.0), axis=-1))


def goal_energy(
    z: jax.Array,
    goal: jax.Array,
    actions: jax.Array,
    critic_value: jax.Array,
    w: EnergyWeights,
    visited: jax.Array | None = None,
    visited_valid: jax.Array | None = None,
) -> jax.Array:
    """Energy of a latent trajectory `z [H, D]` against `goal [D]` given `actions [H, A]`.

    `critic_value` is the cost-to-go of each imagined state `[H]` (or 0.0 without critic);
    `visited [K, D]` with `visited_valid [K]` the recent latents of the visit term (used when
    `w.visit > 0`).
    """
    per_step = w.goal * jnp.sum((z - goal) ** 2, axis=-1) / z.shape[-1] + w.critic * critic_value  # [H]
    state_term = per_step[-1] if w.terminal else jnp.mean(per_step)
    energy = state_term + w.action * jnp.mean(jnp.sum(actions**2, -1))
    if w.visit and visited is not None:
        energy = energy + w.visit * visit_cost(z, visited, visited_valid, w.visit_scale)
    return energy


def make_energy(world_model, critic: Critic | None, w: EnergyWeights):
    """`energy(params, z0 [D], goal [D], actions [H, A], visited=None, visited_valid=None) -> scalar`
    over the learned model (`visited [K, D]`, `visited_valid [K]`: see `goal_energy`).

    `params` holds `"predictor"` and, when the critic weight is non-zero, `"critic"`.
    """

    def energy(
        params: dict,
        z0: jax.Array,
        goal: jax.Array,
        actions: jax.Array,
        visited: jax.Array | None = None,
        visited_valid: jax.Array | None = None,
    ) -> jax.Array:
        z = world_model.rollout(params["predictor"], z0, actions)
        value = critic.apply(params["critic"], z, goal) if (critic is not None and w.critic) else 0.0
        return goal_energy(z, goal, actions, value, w, visited, visited_valid)

    return energy
