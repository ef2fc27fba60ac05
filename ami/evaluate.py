"""Evaluation: every episode batched in one jitted `lax.scan`, for any agent family.

Reward tasks report the mean episode return (the sum of the env's rewards until the episode
ends). Goal tasks report the success rate: an episode counts as solved when the agent comes
within the task's success radius of the goal at any step (`success="any"`, as if the
episode ended on success) or, with `success="final"`, when its last state is within it; the
mean final distance is reported where the env measures one (`metrics["distance"]`).
Controllers run on the same episodes (same evaluation key):

* `learned`: the agent's own `act` (the AMI agent: its planner over the learned world model);
* `true_dynamics` (the ground-truth twin, AMI agent on goal tasks): the same planner, energy
  and policy prior, but the latent trajectory comes from rolling out the true simulator and
  encoding its observations, so the gap to `learned` is the world model's fault alone;
* `random`: uniform random actions.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

import envs
from ami import cost, memory
from ami.agent import Agent, AgentState, TimeStep, policy_prior


def observe(states: envs.State, first: jax.Array, goal_task: bool) -> TimeStep:
    """The `TimeStep [N]` an agent sees of a batch of env `states`; `first [N]` marks episode starts."""
    goal = states.info[envs.GOAL_OBS] if goal_task else None
    return TimeStep(states.obs, states.reward, jnp.asarray(first, jnp.bool_), states.done > 0, goal)


def true_energy_fn(agent: Agent, env: envs.Env):
    """The ground-truth twin's energy: `energy(params, env_state, goal [D], actions [H, A]) -> []`.

    The agent's energy terms (`cost.trajectory_energy` with its weights and heads) of the latent
    trajectory obtained by stepping `env` from `env_state` with `actions` and encoding the
    observations it reaches (`[H, D]`), instead of the world model's imagined one.
    """
    m = agent.modules
    heads = cost.Heads(critic=m.critic, reward=m.reward, value=m.value, policy=m.policy)
    terms = cost.active_terms(m.weights, m.goal_task)

    def energy(params, env_state, goal, actions, visited=None, visited_valid=None):
        def step(s, a):
            nxt = env.step(s, a)
            return nxt, nxt.obs

        obs = jax.lax.scan(step, env_state, actions)[1]
        z = m.perception.encode(params.encoder, obs)
        z0 = m.perception.encode(params.encoder, env_state.obs)
        imagined = cost.Imagined(z0, z, actions, goal, visited, visited_valid)
        return cost.trajectory_energy(params, heads, imagined, m.weights, terms)

    return energy


def twin_plan_fn(agent: Agent, env: envs.Env):
    """A `plan_fn` for `agent.act` that plans over `env`'s true dynamics (context: env states `[N]`),
    with the same energy as the learned model's (the memory's visit term included) and the same
    policy prior."""
    m, energy = agent.modules, true_energy_fn(agent, env)

    def plan_fn(params, z, g, init, key, env_states, mem=None):
        visited, valid = memory.recent_latents(mem, z.shape[0], z.shape[-1])

        def one(s, z_i, g_i, init_i, k, visited_i, valid_i):
            k_plan, k_prior = jax.random.split(k)
            prior = policy_prior(m, params, z_i, g_i, k_prior)
            fn = partial(energy, params, s, g_i, visited=visited_i, visited_valid=valid_i)
            if prior is None:
                return m.planner.optimize(fn, k, init_i)
            return m.planner.optimize(fn, k_plan, init_i, prior=prior)

        return jax.vmap(one)(env_states, z, g, init, jax.random.split(key, z.shape[0]), visited, valid)

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
    """Runs `num_episodes` batched episodes of `num_steps` (an env without auto-reset).

    Returns the mean `return` (rewards summed until each episode ends) and, on goal tasks, the
    fraction reaching the goal at any step (`success_any`) and at the last step
    (`success_final`), and the mean final distance where the env measures it.
    """
    goal_task = agent.spec.goal_conditioned
    k_reset, k_run = jax.random.split(key)
    states = jax.vmap(env.reset)(jax.random.split(k_reset, num_episodes))
    agent_state = agent.reset(agent_state, num_episodes)
    plan_fn = twin_plan_fn(agent, env) if controller == "true_dynamics" else None
    zeros = jnp.zeros((num_episodes,), jnp.float32)

    def body(carry, xs):
        agent_state, states, reached, ret, alive = carry
        t, key_t = xs
        if controller == "random":
            action = jax.random.uniform(key_t, (num_episodes, env.action_size), minval=-1.0, maxval=1.0)
        else:
            context = states if controller == "true_dynamics" else None
            step = observe(states, jnp.full((num_episodes,), t == 0), goal_task)
            agent_state, action, _ = agent.act(agent_state, step, key_t, plan_fn=plan_fn, context=context)
        states = jax.vmap(env.step)(states, action)
        ret = ret + alive * states.reward
        alive = alive * (states.done == 0)
        if goal_task:
            reached = jnp.maximum(reached, states.metrics[envs.SUCCESS])
        return (agent_state, states, reached, ret, alive), None

    start = (agent_state, states, zeros, zeros, jnp.ones_like(zeros))
    xs = (jnp.arange(num_steps), jax.random.split(k_run, num_steps))
    (_, states, reached, ret, _), _ = jax.lax.scan(body, start, xs)
    out = {"return": jnp.mean(ret), "return_std": jnp.std(ret)}
    if goal_task:
        out.update(success_any=jnp.mean(reached), success_final=jnp.mean(states.metrics[envs.SUCCESS]))
        if "distance" in states.metrics:
            out["final_distance"] = jnp.mean(states.metrics["distance"])
    return out


CONTROLLERS = ("learned", "true_dynamics", "random")


def make_evaluator(
    agent: Agent, env: envs.Env, num_episodes: int, num_steps: int, controllers=CONTROLLERS, success: str = "any"
):
    """`evaluator(agent_state, key) -> results`: `evaluate` with each controller's episodes compiled
    once, for runs that evaluate again and again (online learning)."""
    if success not in ("any", "final"):
        raise ValueError(f"success must be 'any' or 'final', got {success!r}")
    runs = {
        c: jax.jit(partial(run_episodes, agent, env=env, num_episodes=num_episodes, num_steps=num_steps, controller=c))
        for c in controllers
    }

    def evaluator(agent_state: AgentState, key: jax.Array) -> dict:
        results = {}
        for controller, run in runs.items():
            out = {k: float(v) for k, v in run(agent_state, key=key).items()}
            if agent.spec.goal_conditioned:
                out = {"success_rate": out[f"success_{success}"], **out}
            results[controller] = out
        return results

    return evaluator


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
    """Per controller, on the same episodes: the mean return and, on goal tasks, the success rate
    (by `success`: `any` or `final` step) and the mean final distance where the env measures it."""
    return make_evaluator(agent, env, num_episodes, num_steps, controllers, success)(agent_state, key)
