"""Offline training: collect data by exploration, then train in jitted chunks of updates.

Two jitted entry points do the work; the host loop around them only logs and checkpoints:

* `collect`: batched envs driven by smooth random actions (one `lax.scan`), every
  transition kept (`envs.Trajectory`: reward, termination and truncation apart);
* `make_train_chunk`: `chunk` updates of any agent family in one `lax.scan`, each on a
  fresh batch the family samples from the replay buffer itself (`agent.sample`).

Online learning (act, store, update in one scan) is `ami.online`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import envs
from ami import distributed, replay


def transition(state: envs.State, action: jax.Array, nxt: envs.State) -> envs.Trajectory:
    """The transition `state --action--> nxt` of a batch of auto-reset envs (goal not kept: goal
    tasks learn from hindsight goals)."""
    return envs.Trajectory(
        obs=state.obs,
        action=action,
        reward=nxt.reward.astype(jnp.float32),
        done=nxt.done.astype(jnp.float32),
        truncated=nxt.info.get(envs.TRUNCATION, jnp.zeros_like(nxt.done)).astype(jnp.float32),
        next_obs=nxt.info.get(envs.FINAL_OBS, nxt.obs),
    )


def collect(env: envs.Env, key: jax.Array, num_envs: int, num_steps: int, smoothing: float) -> envs.Trajectory:
    """Runs `num_envs` envs for `num_steps` with smooth random actions in [-1, 1]: `Trajectory [T, N]`.

    `a_t = clip(beta a_{t-1} + sqrt(1 - beta^2) eps_t, -1, 1)`, eps ~ N(0, I), beta = `smoothing`.
    """
    k_reset, k_run = jax.random.split(key)
    state = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))
    scale = float(np.sqrt(1.0 - smoothing**2))

    def body(carry, key_t):
        state, prev = carry
        action = jnp.clip(smoothing * prev + scale * jax.random.normal(key_t, prev.shape), -1.0, 1.0)
        nxt = jax.vmap(env.step)(state, action)
        return (nxt, action), transition(state, action, nxt)

    start = (state, jnp.zeros((num_envs, env.action_size), jnp.float32))
    return jax.lax.scan(body, start, jax.random.split(k_run, num_steps))[1]


def empty_replay(example: envs.Trajectory, num_envs: int, capacity: int) -> replay.ReplayState:
    """An empty buffer of `num_envs` streams of `capacity` steps for transitions like `example`
    (leaves `[...]` of one step of one env)."""
    return replay.init(example, num_envs, capacity)


def to_replay(data: envs.Trajectory) -> replay.ReplayState:
    """A replay buffer holding `data` (`[T, N, ...]`), one stream per environment."""
    example = jax.tree.map(lambda x: x[0, 0], data)
    num_steps, num_envs = data.done.shape
    return replay.add(empty_replay(example, num_envs, num_steps), data)


def make_train_chunk(agent, chunk: int, shardings=None):
    """`chunk(state, buffer, key) -> (state, metrics)`: `chunk` updates, jitted, state donated.

    Each update trains on `agent.sample(buffer, key_i)` (its batch axis split over the mesh's
    data axis, `ami.distributed`); metrics are averaged over the chunk. `shardings` pins the
    returned state's placement (that of the state passed in), so the next call does not retrace.
    """

    def run(state, buffer: replay.ReplayState, key: jax.Array):
        def one(state, key: jax.Array):
            return agent.update(state, distributed.constrain_batch(agent.sample(buffer, key)))

        state, metrics = jax.lax.scan(one, state, jax.random.split(key, chunk))
        if shardings is not None:
            state = jax.lax.with_sharding_constraint(state, shardings)
        return state, jax.tree.map(jnp.mean, metrics)

    return jax.jit(run, donate_argnums=0)
