"""Offline training: collect data by exploration, then train in jitted chunks of updates.

Two jitted entry points do the work; the host loop around them only logs and checkpoints:

* `collect`: batched envs driven by smooth random actions (one `lax.scan`), every
  transition kept (`envs.Trajectory`: reward, termination and truncation apart);
* `make_train_chunk`: `chunk` updates of any agent family in one `lax.scan`, each on a
  fresh batch the family samples from the replay buffer itself (`agent.sample`).

Online learning (act, store, update in one scan) is `ami.online`.

Non-finite values: metrics named `nonfinite_*` are counts, summed over a chunk (the others are
averaged). Transitions whose observations or reward hold a NaN or inf are counted
(`nonfinite_obs`, `nonfinite_rewards`) and stored with those values zeroed (`sanitize`);
`train.strict_finite` instead stops at the first one (`check_collected`, `check_chunk`),
naming the env, the step and the key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import envs
from ami import distributed, replay

NONFINITE = "nonfinite_"  # metrics with this prefix are counts: summed over a chunk, not averaged


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


def reduce_chunk(metrics: dict) -> dict:
    """Metrics `[U]` of `U` updates -> `[]`: the `nonfinite_*` counts summed, the others averaged."""
    return {k: jnp.sum(v) if k.startswith(NONFINITE) else jnp.mean(v) for k, v in metrics.items()}


def _leaves_bad(tree, batch_ndim: int) -> jax.Array:
    """bool `[...]` (the first `batch_ndim` axes): some floating value of `tree` there is NaN or inf."""
    bad = jnp.zeros((), jnp.bool_)
    for x in jax.tree.leaves(tree):
        if jnp.issubdtype(x.dtype, jnp.inexact):
            bad = bad | ~jnp.all(jnp.isfinite(x).reshape(*x.shape[:batch_ndim], -1), axis=-1)
    return bad


def nonfinite_transitions(tr: envs.Trajectory) -> tuple[jax.Array, jax.Array]:
    """`(obs_bad, reward_bad)`, bool `[...]` for transitions `[...]` (e.g. `[N]`, `[T, N]`): the
    transition's `obs`, `next_obs` (or `goal`) / its `reward` hold a NaN or inf."""
    ndim = jnp.ndim(tr.reward)
    obs_bad = _leaves_bad((tr.obs, tr.next_obs, tr.goal), ndim)
    return jnp.broadcast_to(obs_bad, jnp.shape(tr.reward)), _leaves_bad(tr.reward, ndim)


def zero_nonfinite(tree):
    """`tree` with every NaN and inf of its floating leaves replaced by 0."""

    def fix(x):
        return jnp.where(jnp.isfinite(x), x, jnp.zeros((), x.dtype)) if jnp.issubdtype(x.dtype, jnp.inexact) else x

    return jax.tree.map(fix, tree)


def sanitize(tr: envs.Trajectory) -> envs.Trajectory:
    """`tr` with the NaNs and infs of `obs`, `next_obs`, `goal` and `reward` zeroed (what is stored)."""
    fixed = zero_nonfinite((tr.obs, tr.next_obs, tr.goal, tr.reward))
    return tr._replace(obs=fixed[0], next_obs=fixed[1], goal=fixed[2], reward=fixed[3])


def nonfinite_counts(tr: envs.Trajectory) -> dict[str, jax.Array]:
    """float32 counts of the transitions `[...]` with a non-finite observation / reward:
    `{"nonfinite_obs": [], "nonfinite_rewards": []}`."""
    obs_bad, reward_bad = nonfinite_transitions(tr)
    return {
        "nonfinite_obs": jnp.sum(obs_bad).astype(jnp.float32),
        "nonfinite_rewards": jnp.sum(reward_bad).astype(jnp.float32),
    }


def describe_key(key: jax.Array) -> str:
    """A PRNG key as its raw data, `[a, b]`, for error messages."""
    return str(np.asarray(jax.random.key_data(key)).tolist())


@jax.jit
def _guard_replay(data: envs.Trajectory):
    obs_bad, reward_bad = nonfinite_transitions(data)
    return sanitize(data), nonfinite_counts(data), obs_bad | reward_bad


def check_collected(
    buffer: replay.ReplayState, name: str, key: jax.Array, strict: bool
) -> tuple[replay.ReplayState, dict[str, float]]:
    """Host side, after the offline collection: `(buffer with non-finite values zeroed, counts)`.

    With `strict` the first non-finite transition raises `FloatingPointError` naming the env, its
    collect step and stream, and the data key `key` (through `envs.check_finite`'s message).
    """
    data, counts, bad = _guard_replay(buffer.data)
    counts = {k: float(v) for k, v in counts.items()}
    if strict and any(counts.values()):
        step, stream = (int(i) for i in np.argwhere(np.asarray(bad).T)[0])  # bad [N, C]: the earliest step
        first = jax.tree.map(lambda x: x[stream, step], buffer.data)
        where = f"at collect step {step} of env {stream}, data key {describe_key(key)}"
        envs.check_finite(first, name, where=where)
    return buffer._replace(data=data), counts


def check_chunk(metrics: dict, name: str, strict: bool, *, steps: str, index: int, key: jax.Array) -> None:
    """Host side, after chunk `index` (drawn from `key`), with `strict` (`train.strict_finite`):
    `FloatingPointError` naming the env, every `nonfinite_*` count that is not 0, the chunk's
    `steps` (e.g. `"updates 500-1000"`), its index and its key."""
    if not strict:
        return
    bad = {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(NONFINITE) and float(v) > 0}
    if bad:
        counts = ", ".join(f"{k} {v:.0f}" for k, v in bad.items())
        raise FloatingPointError(
            f"env {name!r}: non-finite values ({counts}) in {steps}, chunk {index}, key {describe_key(key)} "
            "(train.strict_finite)"
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
    data axis, `ami.distributed`); metrics are averaged over the chunk, `nonfinite_*` counts
    summed. `shardings` pins the returned state's placement (that of the state passed in), so
    the next call does not retrace.
    """

    def run(state, buffer: replay.ReplayState, key: jax.Array):
        def one(state, key: jax.Array):
            return agent.update(state, distributed.constrain_batch(agent.sample(buffer, key)))

        state, metrics = jax.lax.scan(one, state, jax.random.split(key, chunk))
        if shardings is not None:
            state = jax.lax.with_sharding_constraint(state, shardings)
        return state, reduce_chunk(metrics)

    return jax.jit(run, donate_argnums=0)
