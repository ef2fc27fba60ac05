"""Evaluation episodes recorded for the report: one jitted `lax.scan` over `T` steps of `N` envs.

The episodes start from the first `N` start states of the run's evaluation (`eval.seed`, drawn
as `ami.evaluate.run_episodes` draws its `E = eval.episodes`: `reset(k)` for `k in
split(k_reset, E)[:N]`) and act with the learned controller (`agent.act`, jitted, batched).
With `N = E` these are the evaluation's episodes exactly (same keys, same actions: the same
returns and successes as `run_episodes`); with fewer, the planner's noise comes from per-step
keys split for `N` envs, so the actions may differ from the evaluation's in `summary.json`.

Per step the recording keeps the scene's snapshot of the state (the start state included),
the reward, success and distance where the env measures them, and, for the AMI agent, the
energy of each new plan and (on planar tasks) the plan itself seen two ways:

* `imagined [T, N, H, D]`: the world model's latent rollout of the current plan from the
  current latent (what the agent believes will happen);
* `true_path [T, N, H, ...]`: the same actions stepped through the true env from the current
  state (where the plan really leads).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import envs
from ami import memory
from ami.actor.base import shift_plan
from ami.agent import Agent
from ami.evaluate import observe
from ami.report.scenes import Scene


class Recording(NamedTuple):
    """Recorded episodes (leading axes: steps `T` (`T + 1` for `frames`), envs `N`).

    Attributes:
      frames: the scene's snapshots `[T + 1, N, ...]`.
      reward: `[T, N]` rewards.
      success: `[T, N]` (0/1) on goal tasks, else None.
      distance: `[T, N]` distance to the goal where the env measures it, else None.
      alive: `[T, N]` 1 until the episode ends (`done`), then 0.
      plan_energy: `[T, N]` energy of the plan made at that step (NaN where none was made);
        None for agents without a planner.
      goal: `[N, 2]` the goal positions of a planar task, else None.
      imagined: `[T, N, H, D]` the world model's rollout of the plan in force, or None.
      true_path: `[T, N, H, ...]` snapshots along the same plan on the true env, or None.
      plan_valid: `[T, N, H]` which plan steps are real (not padding of a shifted plan), or None.
      latent: `[T, N, D]` the encoder's latent of each step's observation, or None.
    """

    frames: Any
    reward: jax.Array
    success: jax.Array | None
    distance: jax.Array | None
    alive: jax.Array
    plan_energy: jax.Array | None
    goal: jax.Array | None
    imagined: jax.Array | None
    true_path: Any
    plan_valid: jax.Array | None
    latent: jax.Array | None


def plans_in_memory(agent: Agent, agent_state: Any) -> bool:
    """Whether `agent_state` keeps the AMI agent's plan in its short-term memory (planner mode)."""
    m = agent.modules
    return (
        agent.name == "ami"
        and isinstance(getattr(agent_state, "memory", None), memory.Memory)
        and getattr(getattr(m, "acting", None), "mode", "") != "policy"
    )


def _plan_now(mem: memory.Memory) -> tuple[jax.Array, jax.Array]:
    """The plan in force after `act` (its first action just taken) `[H, A]` and its real steps `[H]`."""
    taken = jnp.maximum(mem.steps_since_plan - 1, 0)
    horizon = mem.plan.shape[0]
    return shift_plan(mem.plan, taken), (jnp.arange(horizon) < horizon - taken) & mem.plan_valid


def start_states(env: envs.Env, key: jax.Array, num_envs: int, eval_episodes: int) -> Any:
    """The first `num_envs` start states of an `eval_episodes`-episode evaluation from `key`."""
    k_reset = jax.random.split(key)[0]
    keys = jax.random.split(k_reset, max(eval_episodes, num_envs))[:num_envs]
    return jax.vmap(env.reset)(keys)


def record(
    agent: Agent,
    agent_state: Any,
    env: envs.Env,
    scene: Scene,
    key: jax.Array,
    *,
    num_envs: int,
    num_steps: int,
    eval_episodes: int,
) -> Recording:
    """Runs and records `num_envs` episodes of `num_steps` (env without auto-reset); jit it with
    `agent`, `env`, `scene` and the counts static (`make_recorder`)."""
    goal_task = agent.spec.goal_conditioned
    states = start_states(env, key, num_envs, eval_episodes)
    agent_state = agent.reset(agent_state, num_envs)
    overlay = plans_in_memory(agent, agent_state) and scene.planar is not None
    m = agent.modules

    def true_path(state, plan):
        def step(s, a):
            nxt = env.step(s, a)
            return nxt, scene.snapshot(nxt)

        return jax.lax.scan(step, state, plan)[1]

    def body(carry, xs):
        agent_state, states, alive = carry
        t, key_t = xs
        step = observe(states, jnp.full((num_envs,), t == 0), goal_task)
        agent_state, action, info = agent.act(agent_state, step, key_t)
        out = {"energy": info.get("plan_energy")}
        if overlay:
            params = agent_state.learner.params
            plan, valid = jax.vmap(_plan_now)(agent_state.memory)
            z = m.perception.encode(params.encoder, states.obs)
            out.update(
                imagined=jax.vmap(partial(m.world_model.rollout, params.predictor))(z, plan),
                true_path=jax.vmap(true_path)(states, plan),
                plan_valid=valid,
                latent=z,
            )
        nxt = jax.vmap(env.step)(states, action)
        out.update(frame=jax.vmap(scene.snapshot)(nxt), reward=nxt.reward, alive=alive)
        if goal_task:
            out["success"] = nxt.metrics[envs.SUCCESS]
        if "distance" in nxt.metrics:
            out["distance"] = nxt.metrics["distance"]
        alive = alive * (nxt.done == 0)
        return (agent_state, nxt, alive), out

    start = (agent_state, states, jnp.ones((num_envs,), jnp.float32))
    xs = (jnp.arange(num_steps), jax.random.split(jax.random.split(key)[1], num_steps))
    _, out = jax.lax.scan(body, start, xs)
    first = jax.vmap(scene.snapshot)(states)
    frames = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, out["frame"])
    goal = jax.vmap(scene.planar.goal)(states) if scene.planar is not None else None
    return Recording(
        frames=frames,
        reward=out["reward"],
        success=out.get("success"),
        distance=out.get("distance"),
        alive=out["alive"],
        plan_energy=out["energy"] if agent.plan is not None else None,
        goal=goal,
        imagined=out.get("imagined"),
        true_path=out.get("true_path"),
        plan_valid=out.get("plan_valid"),
        latent=out.get("latent"),
    )


def make_recorder(agent: Agent, env: envs.Env, scene: Scene, *, num_envs: int, num_steps: int, eval_episodes: int):
    """`recorder(agent_state, key) -> Recording` (numpy arrays on the host), compiled once."""
    run = jax.jit(
        partial(
            record, agent, env=env, scene=scene, num_envs=num_envs, num_steps=num_steps, eval_episodes=eval_episodes
        )
    )

    def recorder(agent_state: Any, key: jax.Array) -> Recording:
        return jax.device_get(run(agent_state, key=key))

    return recorder
