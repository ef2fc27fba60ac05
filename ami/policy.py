"""Amortised policy: an actor `pi(z, g) -> a` (`pi(z)` on reward tasks) trained to do what the planner does.

LeCun's mode-1 next to the planner's mode-2: the policy is trained by minimising the same
energy the planner minimises, through the learned world model (backpropagation through the
imagined rollout, as in Dreamer's and TD-MPC2's actors), and it proposes candidate action
sequences to the planner (`prior` of `Planner.optimize`), which refines them.

    a_t = pi(z_t, g)  (tanh: inside [-1, 1]),  z_{t+1} = predict(z_t, a_t),  t < H
    loss = mean over the batch of energy(z_0, g, a_{0..H-1})

Only the policy's parameters get gradients: the world model and the critic are held fixed
(`stop_gradient` on their parameters), so the policy follows the model, not the reverse.
Proposals add Gaussian noise of std `noise` to each action (`propose`), clipped to [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ami import nn

Params = nn.Params


class Policy(NamedTuple):
    """`init(key) -> params`; `apply(params, z [..., D], g [..., D] | None) -> a [..., A]` in [-1, 1]
    (`g` None for a policy made without a goal)."""

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array, jax.Array], jax.Array]
    action_size: int


def make_policy(
    latent_size: int,
    action_size: int,
    hidden: Sequence[int] = (256, 256),
    activation: str = "mish",
    goal_conditioned: bool = True,
    dtype=None,
):
    """A deterministic policy `tanh(MLP([z, g]))`, or `tanh(MLP(z))` without a goal."""
    net = nn.mlp(hidden, action_size, activation=activation, layer_norm=True, dtype=dtype)
    width = 2 * latent_size if goal_conditioned else latent_size

    def init(key: jax.Array) -> Params:
        return net.init(key, jnp.zeros(width, jnp.float32))

    def apply(params: Params, z: jax.Array, g: jax.Array | None = None) -> jax.Array:
        if not goal_conditioned:
            return jnp.tanh(net.apply(params, z))
        z, g = jnp.broadcast_arrays(z, g)
        return jnp.tanh(net.apply(params, jnp.concatenate([z, g], axis=-1)))

    return Policy(init, apply, int(action_size))


def rollout(
    policy: Policy,
    params: Params,
    predict: Callable[[jax.Array, jax.Array], jax.Array],
    z0: jax.Array,
    goal: jax.Array,
    horizon: int,
    noise: jax.Array | None = None,
) -> jax.Array:
    """Actions `[H, A]` of the policy run through `predict(z [D], a [A]) -> z' [D]` from `z0 [D]`.

    `noise [H, A]` (optional) is added to each action before it is clipped to [-1, 1] and
    fed to the model, so a noisy proposal stays consistent with its own imagined states.
    """
    noise = jnp.zeros((horizon, policy.action_size), jnp.float32) if noise is None else noise

    def step(z, eps):
        a = jnp.clip(policy.apply(params, z, goal) + eps, -1.0, 1.0)
        return predict(z, a), a

    return jax.lax.scan(step, z0, noise)[1]


def propose(
    policy: Policy,
    params: Params,
    predict: Callable[[jax.Array, jax.Array], jax.Array],
    z0: jax.Array,
    goal: jax.Array,
    horizon: int,
    num: int,
    noise: float,
    key: jax.Array,
) -> jax.Array:
    """`[num, H, A]` candidate sequences: the noiseless rollout first, then `num - 1` noisy ones."""
    eps = noise * jax.random.normal(key, (num, horizon, policy.action_size))
    eps = eps.at[0].set(0.0)
    return jax.vmap(lambda e: rollout(policy, params, predict, z0, goal, horizon, e))(eps)


def policy_loss(
    params: Params,
    policy: Policy,
    predict: Callable[[jax.Array, jax.Array], jax.Array],
    energy: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    z0: jax.Array,
    goal: jax.Array,
    horizon: int,
) -> tuple[jax.Array, dict]:
    """Mean energy of the policy's imagined `horizon`-step rollouts from `z0 [B, D]` towards `goal [B, D]`.

    `energy(z0 [D], goal [D], actions [H, A]) -> []` is the planner's energy with the model
    and critic parameters already bound (and held fixed by the caller).
    """

    def one(z, g):
        actions = rollout(policy, params, predict, z, g, horizon)
        return energy(z, g, actions), jnp.mean(jnp.abs(actions))

    energies, magnitude = jax.vmap(one)(z0, goal)
    loss = jnp.mean(energies)
    return loss, {"policy_loss": loss, "policy_action_abs": jnp.mean(magnitude)}


def value_loss(
    params: Params, policy: Policy, q_value: Callable[[jax.Array, jax.Array], jax.Array], z: jax.Array
) -> tuple[jax.Array, dict]:
    """`-mean Q(z, pi(z))` over latents `z [B, D]`: the policy maximises the value critic at its own
    action (`q_value(z, a) -> [B]`, the heads' mean, held fixed by the caller)."""
    actions = policy.apply(params, z)
    q = q_value(z, actions)
    loss = -jnp.mean(q)
    return loss, {"policy_loss": loss, "policy_action_abs": jnp.mean(jnp.abs(actions))}
