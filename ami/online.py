"""Online learning: act in batched envs, store every transition, update, repeat, in jitted chunks.

One chunk is one `lax.scan` over `online.chunk` decisions of the `data.num_envs` envs; each
decision is

    step = what the envs show (obs, reward, episode start, goal where there is one)
    action = agent.act(step) + N(0, action_noise)  (uniform random during the seed steps)
    envs step (auto-reset)  ->  the transition goes into the replay buffer
    U = round(updates_per_step * num_envs) updates, each on agent.sample(replay)  (after the seed steps)

and at the decision that ends the seed steps, before the first update, `agent.prepare` sees the
seed transitions (an encoder that standardises observations takes their statistics there)

so the host loop only evaluates, logs and checkpoints between chunks.

Non-finite values never reach the agent: a transition whose observations or reward hold a NaN
or inf is stored with them zeroed (`ami.train.sanitize`), the agent sees the same zeroed
observation, and an action that is not finite is replaced by 0. Each chunk counts what
happened in its metrics: `nonfinite_obs`, `nonfinite_rewards` (transitions),
`nonfinite_plans` (per env and decision: a re-plan that found no finite energy, or an action
that was not finite) and `nonfinite_updates` (skipped updates, `ami.learner.finite_step`);
`check_chunk` stops the run at the first one with `train.strict_finite`. Everything the loop
carries is in `Online` (agent state with its memories, env states, replay with its write
head, episode returns, counters), so a checkpoint of it continues bit for bit: chunk `i`
always draws from `fold_in(key, i)`. Steps are counted as env (control) steps, the action
repeat included, as the DMC benchmarks count them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import envs
from ami import distributed, replay, train
from ami.evaluate import observe
from ami.train import NONFINITE, empty_replay, transition


class Online(NamedTuple):
    """The online loop's carry: `agent` state, env `states [N]`, `first [N]` (the current states
    start an episode), the `replay`, `episode_return [N]` so far, and int32 counters
    `env_steps` (control steps), `episodes` (finished) and `updates` (done)."""

    agent: object
    states: envs.State
    first: jax.Array
    replay: replay.ReplayState
    episode_return: jax.Array
    env_steps: jax.Array
    episodes: jax.Array
    updates: jax.Array


class Settings(NamedTuple):
    num_envs: int
    capacity: int
    action_repeat: int
    seed_steps: int
    updates: int
    noise: float
    chunk: int


def settings(cfg, action_repeat: int) -> Settings:
    o, n = cfg.online, cfg.data.num_envs
    updates = round(o.updates_per_step * n)
    return Settings(n, cfg.data.steps_per_env, action_repeat, o.seed_steps, updates, o.action_noise, o.chunk)


def init(agent, env: envs.Env, s: Settings, key: jax.Array) -> Online:
    """A fresh loop: a new agent, `num_envs` reset envs and an empty replay of `capacity` steps each."""
    k_agent, k_env = jax.random.split(key)
    states = jax.vmap(env.reset)(jax.random.split(k_env, s.num_envs))
    example = jax.eval_shape(lambda st: transition(st, jnp.zeros((s.num_envs, env.action_size)), st), states)
    example = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), example)
    zeros = jnp.zeros((s.num_envs,), jnp.float32)
    return Online(
        agent=agent.init(k_agent, s.num_envs),
        states=states,
        first=jnp.ones((s.num_envs,), jnp.bool_),
        replay=empty_replay(example, s.num_envs, s.capacity),
        episode_return=zeros,
        env_steps=jnp.zeros((), jnp.int32),
        episodes=jnp.zeros((), jnp.int32),
        updates=jnp.zeros((), jnp.int32),
    )


def _updates(agent, num: int, agent_state, buffer, key):
    """`num` updates of `agent` on batches of `buffer` (metrics averaged)."""

    def one(state, k):
        return agent.update(state, distributed.constrain_batch(agent.sample(buffer, k)))

    state, metrics = jax.lax.scan(one, agent_state, jax.random.split(key, num))
    return state, train.reduce_chunk(metrics)


def make_chunk(agent, env: envs.Env, s: Settings, shardings=None):
    """`chunk(online, key) -> (online, stats)`: `s.chunk` decisions with their updates, jitted, donated.

    `shardings` (`ami.distributed.online_shardings`) pins the returned carry's placement to that
    of the carry passed in, so the next chunk does not retrace.

    `stats` holds the chunk's mean update metrics (over the decisions that updated; the
    `nonfinite_*` counts summed, with those of the env data and the plans added), the sum and
    count of the episode returns finished in it, `finite`: per transition field, whether every
    value of the chunk was finite (the boundary check of `envs.check_finite`), and
    `first_nonfinite`: the env-step counter after the first decision whose transitions held a
    NaN or inf (-1 when none did).
    """
    goal_task = agent.spec.goal_conditioned
    per_decision = s.num_envs * s.action_repeat
    seeded = min(-(-s.seed_steps // per_decision), s.capacity)  # decisions stored when the seed steps end

    def prepare(agent_state, buffer: replay.ReplayState):
        seed = jax.tree.map(lambda x: x[:, :seeded], buffer.data)
        return agent.prepare(agent_state, replay.ReplayState(seed, jnp.int32(seeded % s.capacity), jnp.int32(seeded)))

    def decide(o: Online, key):
        k_act, k_noise = jax.random.split(key)
        step = observe(o.states, o.first, goal_task)
        fixed = train.zero_nonfinite((step.obs, step.reward, step.goal))
        step = step._replace(obs=fixed[0], reward=fixed[1], goal=fixed[2])
        agent_state, action, info = agent.act(o.agent, step, k_act)
        bad = ~jnp.all(jnp.isfinite(action).reshape(s.num_envs, -1), axis=-1)
        if "plan_energy" in info and "replanned" in info:
            bad = bad | (info["replanned"] & ~jnp.isfinite(info["plan_energy"]))
        noisy = train.zero_nonfinite(action) + s.noise * jax.random.normal(k_noise, action.shape)
        return agent_state, jnp.clip(noisy, -1.0, 1.0), jnp.sum(bad).astype(jnp.float32)

    def explore(o: Online, key):
        action = jax.random.uniform(key, (s.num_envs, env.action_size), minval=-1.0, maxval=1.0)
        return o.agent, action, jnp.zeros((), jnp.float32)

    def body(o: Online, key):
        k_decide, k_update = jax.random.split(key)
        seeding = o.env_steps < s.seed_steps
        agent_state, action, bad_plans = jax.lax.cond(seeding, explore, decide, o, k_decide)
        nxt = jax.vmap(env.step)(o.states, action)
        raw = transition(o.states, action, nxt)
        tr = train.sanitize(raw)
        health = {**train.nonfinite_counts(raw), "nonfinite_plans": bad_plans}
        buffer = replay.add(o.replay, jax.tree.map(lambda x: x[None], tr))
        env_steps = o.env_steps + per_decision
        learn = (env_steps >= s.seed_steps) & (s.updates > 0)
        if seeded:
            just_seeded = (o.env_steps < s.seed_steps) & (env_steps >= s.seed_steps)
            agent_state = jax.lax.cond(just_seeded, prepare, lambda a, b: a, agent_state, buffer)
        blank = jax.tree.map(
            jnp.zeros_like,
            jax.eval_shape(lambda a, b, k: _updates(agent, 1, a, b, k)[1], agent_state, buffer, k_update),
        )
        if s.updates > 0:
            agent_state, metrics = jax.lax.cond(
                learn,
                lambda a: _updates(agent, s.updates, a, buffer, k_update),
                lambda a: (a, blank),
                agent_state,
            )
        else:
            metrics = blank
        ret = o.episode_return + tr.reward
        ended = tr.done > 0
        out = {
            "metrics": metrics,
            "learned": learn.astype(jnp.float32),
            "return_sum": jnp.sum(jnp.where(ended, ret, 0.0)),
            "return_count": jnp.sum(ended.astype(jnp.int32)),
            "finite": envs.finite_flags(raw),
            "health": health,
            "env_steps": env_steps,
        }
        o = Online(
            agent_state,
            nxt,
            ended,
            buffer,
            jnp.where(ended, 0.0, ret),
            env_steps,
            o.episodes + jnp.sum(ended),
            o.updates + learn.astype(jnp.int32) * s.updates,
        )
        return o, out

    def run(o: Online, key: jax.Array):
        o, out = jax.lax.scan(body, o, jax.random.split(key, s.chunk))
        if shardings is not None:
            o = jax.lax.with_sharding_constraint(o, shardings)
        weight = out["learned"]
        count = jnp.maximum(jnp.sum(weight), 1.0)
        metrics = {
            k: jnp.sum(x * weight) if k.startswith(NONFINITE) else jnp.sum(x * weight) / count
            for k, x in out["metrics"].items()
        }
        bad = ~jnp.all(jnp.stack(jax.tree.leaves(out["finite"])), axis=0)  # [chunk]: a decision's data held NaN/inf
        stats = {
            "metrics": {**metrics, **{k: jnp.sum(v) for k, v in out["health"].items()}},
            "first_nonfinite": jnp.where(jnp.any(bad), out["env_steps"][jnp.argmax(bad)], -1),
            "updates": jnp.sum(weight) * s.updates,
            "return_sum": jnp.sum(out["return_sum"]),
            "return_count": jnp.sum(out["return_count"]),
            "finite": jax.tree.map(jnp.all, out["finite"]),
        }
        return o, stats

    return jax.jit(run, donate_argnums=0)


def raise_if_nonfinite(finite: dict, name: str, where: str | None = None) -> None:
    """Host side: `FloatingPointError` naming every transition field a chunk saw a NaN or inf in
    (and `where`: the step and the key, when given)."""
    bad = [field for field, ok in jax.device_get(finite).items() if not bool(ok)]
    if bad:
        context = f"{where}; " if where else ""
        raise FloatingPointError(
            f"env {name!r} produced non-finite values in {', '.join(bad)} ({context}checked once per online chunk)"
        )


def check_chunk(
    stats: dict, name: str, s: Settings, index: int, key: jax.Array, *, strict: bool, check_env: bool
) -> None:
    """Host side, after chunk `index` (drawn from `key`): `FloatingPointError` when its env data
    held a NaN or inf (with `check_env`, the env's `check_finite`, or `strict`), naming the fields
    and the env step; with `strict` (`train.strict_finite`) also at any other `nonfinite_*` count
    (skipped updates, plans without a finite energy). Messages name env `name`, the step and the key."""
    if (check_env or strict) and not all(bool(ok) for ok in jax.device_get(stats["finite"]).values()):
        where = f"at env step {int(stats['first_nonfinite'])}, chunk {index}, key {train.describe_key(key)}"
        raise_if_nonfinite(stats["finite"], name, where)
    per_chunk = s.chunk * s.num_envs * s.action_repeat
    steps = f"env steps {index * per_chunk}-{(index + 1) * per_chunk}"
    train.check_chunk(stats["metrics"], name, strict, steps=steps, index=index, key=key)
