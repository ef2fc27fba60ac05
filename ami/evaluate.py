"""Evaluation by planning: every episode batched in one jitted `lax.scan`.

For a goal task the success rate counts an episode as solved when the agent comes within
the task's success radius of the goal at any step (`success="any"`, as if the episode
ended on success) or, with `success="final"`, when its last state is within it.
Three controllers run on the same start/goal pairs (same evaluation key):

* `learned`: the agent's planner over the learned JEPA world model;
* `true_dynamics` (the ground-truth twin): the same planner and the same energy, but the
  latent trajectory comes from rolling out the true simulator and encoding its observations,
  so the gap to `learned` is the world model's fault alone;
* `random`: uniform random actions.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

import envs
from ami import cost, memory
from ami.agent import Agent, AgentState, empty_memory


def true_energy_fn(agent: Agent, env: envs.Env):
    """The ground-truth twin's energy: `energy(params, env_state, goal [D], actions [H, A]) -> []`.

    The agent's cost (`cost.goal_energy` with its weights and critic) of the latent trajectory
    obtained by stepping `env` from `env_state` with `actions` and encoding the observations
    it reaches (`[H, D]`), instead of the world model's imagined one.
    """
    modules = agent.modules
    critic, encode, weights = modules["critic"], modules["perception"].encode, modules["energy_weights"]

    def energy(params, env_state, goal, actions, visited=None, visited_valid=None):
        def step(s, a):
            nxt = env.step(s, a)
            return nxt, nxt.obs

        obs = jax.lax.scan(step, env_state, actions)[1]
        z = encode(params["encoder"], obs)
        value = critic.apply(params["critic"], z, goal) if (critic is not None and weights.critic) else 0.0
        return cost.goal_energy(z, goal, actions, value, weights, visited, visited_valid)

    return energy


def twin_plan_fn(agent: Agent, env: envs.Env):
    """A `plan_fn` for `agent.act` that plans over `env`'s true dynamics (context: env states `[N]`),
    with the same energy as the learned model's, the memory's visit term included."""
    planner, energy = agent.modules["planner"], true_energy_fn(agent, env)

    def plan_fn(params, z, g, init, key, env_states, mem=None):
        visited, valid = memory.recent_latents(mem, z.shape[0], z.shape[-1])

        def one(s, g_i, init_i, k, visited_i, valid_i):
            return planner.optimize(lambda a: energy(params, s, g_i, a, visited_i, valid_i), k, init_i)

        return jax.vmap(one)(env_states, g, init, jax.random.split(key, z.shape[0]), visited, valid)

    return plan_fn


def run_episodes(
    agent: Agent,
    agent_state: AgentState,
    env: envs.Env,
    key: jax.Array,
    num_episodes: int,
    num_steps: int,
    controller: str,
) -> dict:
    """Runs `num_episodes` batched episodes of `num_steps`.

    Returns the fraction reaching the goal at any step (`success_any`), at the last step
    (`success_final`), and the mean final distance.
    """
    k_reset, k_run = jax.random.split(key)
    states = jax.vmap(env.reset)(jax.random.split(k_reset, num_episodes))
    fresh = empty_memory(agent.modules["cfg"], agent.modules, num_episodes)
    agent_state = AgentState(agent_state.learner, fresh, jnp.zeros((), jnp.int32))
    plan_fn = twin_plan_fn(agent, env) if controller == "true_dynamics" else None

    def body(carry, key_t):
        agent_state, states, reached = carry
        if controller == "random":
            action = jax.random.uniform(key_t, (num_episodes, env.action_size), minval=-1.0, maxval=1.0)
        else:
            context = states if controller == "true_dynamics" else None
            agent_state, action, _ = agent.act(
                agent_state, states.obs, states.info[envs.GOAL_OBS], key_t, plan_fn=plan_fn, context=context
            )
        states = jax.vmap(env.step)(states, action)
        reached = jnp.maximum(reached, states.metrics[envs.SUCCESS])
        return (agent_state, states, reached), None

    start = (agent_state, states, jnp.zeros((num_episodes,), jnp.float32))
    (_, states, reached), _ = jax.lax.scan(body, start, jax.random.split(k_run, num_steps))
    return {
        "success_any": jnp.mean(reached),
        "success_final": jnp.mean(states.metrics[envs.SUCCESS]),
        "final_distance": jnp.mean(states.metrics.get("distance", 0.0)),
    }


CONTROLLERS = ("learned", "true_dynamics", "random")


def evaluate(
    agent: Agent,
    agent_state: AgentState,
    env: envs.Env,
    key: jax.Array,
    num_episodes: int,
    num_steps: int,
    controllers=CONTROLLERS,
    success: str = "any",
) -> dict:
    """Success rate (by `success`: `any` or `final` step) and mean final distance per controller,
    on the same episodes."""
    if success not in ("any", "final"):
        raise ValueError(f"success must be 'any' or 'final', got {success!r}")
    results = {}
    for controller in controllers:
        run = jax.jit(
            partial(run_episodes, agent, env=env, num_episodes=num_episodes, num_steps=num_steps, controller=controller)
        )
        out = run(agent_state, key=key)
        results[controller] = {
            "success_rate": float(out[f"success_{success}"]),
            **{k: float(v) for k, v in out.items()},
        }
    return results
