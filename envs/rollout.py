"""Batched rollouts: `num_envs` environments in parallel for `num_steps`, in one jitted call.

`rollout` scans over time and vmaps over environments; the policy is written for one
environment, `policy(obs [O], key) -> action [A]`, and vmapped here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from envs.base import GOAL_OBS, Env, State
from envs.wrappers import FINAL_OBS, TRUNCATION

Policy = Callable[[jax.Array, jax.Array], jax.Array]


class Trajectory(NamedTuple):
    """Transitions, each field `[T, N, ...]` (time first, then environment).

    `next_obs` is the observation the step reached, before any auto-reset; `done` marks
    the end of an episode (task end or time limit) and `truncated` the time-limit part.
    `goal` is the goal observation for goal-conditioned envs, else `None`.
    """

    obs: Any
    action: jax.Array
    reward: jax.Array
    done: jax.Array
    truncated: jax.Array
    next_obs: Any
    goal: Any = None


def rollout_from(env: Env, policy: Policy, state: State, key: jax.Array, num_steps: int) -> tuple[State, Trajectory]:
    """Steps a batch of states `[N]` for `num_steps`: `(final state [N], Trajectory [T, N])`."""
    num_envs = jnp.shape(state.done)[0]
    step = jax.vmap(env.step)
    act = jax.vmap(policy)

    def body(state: State, key_t: jax.Array):
        action = act(state.obs, jax.random.split(key_t, num_envs))
        nxt = step(state, action)
        transition = Trajectory(
            obs=state.obs,
            action=action,
            reward=nxt.reward,
            done=nxt.done,
            truncated=nxt.info.get(TRUNCATION, jnp.zeros_like(nxt.done)),
            next_obs=nxt.info.get(FINAL_OBS, nxt.obs),
            goal=state.info.get(GOAL_OBS),
        )
        return nxt, transition

    return jax.lax.scan(body, state, jax.random.split(key, num_steps))


@partial(jax.jit, static_argnames=("env", "policy", "num_envs", "num_steps"))
def rollout(env: Env, policy: Policy, key: jax.Array, num_envs: int, num_steps: int) -> Trajectory:
    """Resets `num_envs` envs from `key` and runs `policy` for `num_steps`: `Trajectory [T, N]`.

    `env` and `policy` are static: pass the same objects again to reuse the compiled call.
    """
    k_reset, k_run = jax.random.split(key)
    state = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))
    return rollout_from(env, policy, state, k_run, num_steps)[1]
