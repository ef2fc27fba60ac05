"""Training: collect offline data by exploration -> train the world model and critic -> evaluate.

Three jitted entry points do the work; the host loop around them only logs and reports:

* `collect`: batched envs driven by smooth random actions (one `lax.scan`);
* `make_train_chunk`: `chunk` updates of the world model and critic in one `lax.scan`,
  each on a fresh batch sampled from the replay buffer;
* `ami.evaluate.evaluate`: all evaluation episodes batched, acting by planning.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import envs
from ami import replay
from ami.agent import Agent, AgentState, UpdateBatch
from ami.config import ExperimentConfig


class Collected(NamedTuple):
    """Transitions `[T, N, ...]` of the exploration policy."""

    obs: jax.Array
    action: jax.Array
    done: jax.Array
    next_obs: jax.Array


def collect(env: envs.Env, key: jax.Array, num_envs: int, num_steps: int, smoothing: float) -> Collected:
    """Runs `num_envs` envs for `num_steps` with smooth random actions in [-1, 1].

    `a_t = clip(beta a_{t-1} + sqrt(1 - beta^2) eps_t, -1, 1)`, eps ~ N(0, I), beta = `smoothing`.
    """
    k_reset, k_run = jax.random.split(key)
    state = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))
    scale = float(np.sqrt(1.0 - smoothing**2))

    def body(carry, key_t):
        state, prev = carry
        action = jnp.clip(smoothing * prev + scale * jax.random.normal(key_t, prev.shape), -1.0, 1.0)
        nxt = jax.vmap(env.step)(state, action)
        out = Collected(state.obs, action, nxt.done, nxt.info.get(envs.FINAL_OBS, nxt.obs))
        return (nxt, action), out

    start = (state, jnp.zeros((num_envs, env.action_size), jnp.float32))
    return jax.lax.scan(body, start, jax.random.split(k_run, num_steps))[1]


def to_replay(data: Collected) -> replay.ReplayState:
    """A replay buffer holding `data` (`[T, N, ...]`), one stream per environment."""
    example = jax.tree.map(lambda x: x[0, 0], data)
    num_steps, num_envs = data.done.shape
    return replay.add(replay.init(example, num_envs, num_steps), data)


def sample_batch(cfg: ExperimentConfig, buffer: replay.ReplayState, key: jax.Array) -> UpdateBatch:
    """JEPA windows and hindsight critic pairs (a fraction with random goals) for one update."""
    k_win, k_pair, k_rand, k_perm = jax.random.split(key, 4)
    length = cfg.world_model.prediction_horizon
    windows = replay.sample(buffer, k_win, cfg.train.batch_size, length)
    t = windows.transitions
    obs = jnp.concatenate([t.obs[:, :1], t.next_obs], axis=1)
    c = cfg.critic
    pairs = replay.sample_pairs(buffer, k_pair, c.batch_size, c.max_goal_offset, num_candidates=8)
    rand = jax.random.bernoulli(k_rand, c.random_goal_fraction, (c.batch_size,))
    other = jax.random.permutation(k_perm, pairs.obs_goal)
    goal = jnp.where(rand.reshape(-1, *(1,) * (pairs.obs_goal.ndim - 1)), other, pairs.obs_goal)
    at_goal = ((pairs.offset == 0) & ~rand).astype(jnp.float32)
    return UpdateBatch(
        obs=obs,
        action=t.action,
        mask=windows.valid.astype(jnp.float32),
        pair_obs=pairs.transition.obs,
        pair_next_obs=pairs.transition.next_obs,
        pair_goal=goal,
        pair_at_goal=at_goal,
    )


def make_train_chunk(cfg: ExperimentConfig, agent: Agent):
    """`chunk(state, buffer, key) -> (state, metrics)`: `cfg.train.chunk` updates, jitted, state donated.

    Metrics are averaged over the chunk.
    """

    def chunk(state: AgentState, buffer: replay.ReplayState, key: jax.Array):
        def one(state: AgentState, key: jax.Array):
            return agent.update(state, sample_batch(cfg, buffer, key))

        state, metrics = jax.lax.scan(one, state, jax.random.split(key, cfg.train.chunk))
        return state, jax.tree.map(jnp.mean, metrics)

    return jax.jit(chunk, donate_argnums=0)
