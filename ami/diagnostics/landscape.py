"""Energy landscapes of planning: slices through a plan, learned-vs-true gradients, and a guard
against bad true gradients.

An energy here is `energy_fn: [H, A] -> []`, one problem's energy of an action sequence
(the planner contract of `ami.actor`). Two energies of the same problem are compared:

* learned: the agent's energy over the world model's latent rollout (`ami.cost.make_energy`);
* true: the same cost over the true simulator, stepped from its state and encoded
  (`true_energy_fn`, the ground-truth twin's energy, defined in `ami.evaluate`).

Slices (`slice_1d`, `slice_2d`) evaluate an energy on a line or a plane through a plan;
`compare_gradients` returns both energies at a plan, the norms of their gradients w.r.t. the
actions and the cosine between them.

Gradients through contact physics can be NaN, infinite or explode. A true gradient is
*unhealthy* when it has a non-finite entry (`nonfinite`) or when its norm is above `max_norm`
(default `MAX_NORM = 1e6`) or above `max_ratio` (`MAX_RATIO = 1e4`) times a non-zero learned
gradient norm (`exploding`). An unhealthy pair is left out of the cosine statistics, and so
is a pair where either gradient is exactly zero; `gradient_summary` counts both. When
planning on an energy with a gradient planner, `guarded_optimize` checks the gradient at the
planner's plan and, if it is non-finite or its norm above `max_norm`, returns the plan of a
gradient-free fallback planner (e.g. CEM) for that decision instead, run from the same key,
warm start and prior.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import envs
from ami import agent as agent_lib
from ami.actor import Planner, PlanResult, make_planner
from ami.agent import Agent
from ami.evaluate import true_energy_fn, twin_plan_fn

Array = jax.Array
EnergyFn = Callable[[Array], Array]

__all__ = [
    "GradientCheck",
    "best_first_action",
    "boxed",
    "compare_gradients",
    "coordinate_direction",
    "cosine",
    "gradient_health",
    "gradient_summary",
    "iteration_option",
    "guarded_optimize",
    "guarded_planner",
    "guarded_twin_plan_fn",
    "plan_pairs",
    "random_directions",
    "slice_1d",
    "slice_2d",
    "take_fallback",
    "toward_first_action",
    "true_energy_fn",
    "with_iterations",
    "with_guarded_twin",
    "with_planner",
]

MAX_NORM = 1e6  # a true gradient norm above this is exploding
MAX_RATIO = 1e4  # ... and so is one above this many times the learned gradient's norm


# ----- slices -----


def slice_1d(energy_fn: EnergyFn, actions: Array, direction: Array, alphas: Array) -> Array:
    """`[K]` energies `energy_fn(actions + alphas[k] * direction)`; `actions, direction [H, A]`, `alphas [K]`."""
    return jax.vmap(lambda alpha: energy_fn(actions + alpha * direction))(alphas)


def slice_2d(energy_fn: EnergyFn, actions: Array, d1: Array, d2: Array, alphas: Array) -> Array:
    """`[K, K]` energies: `out[i, j] = energy_fn(actions + alphas[i] * d1 + alphas[j] * d2)`; `d1, d2 [H, A]`."""
    row = lambda alpha: slice_1d(energy_fn, actions + alpha * d1, d2, alphas)  # noqa: E731
    return jax.vmap(row)(alphas)


def boxed(energy_fn: EnergyFn, low: float | Array = -1.0, high: float | Array = 1.0) -> EnergyFn:
    """`energy_fn` of actions clipped into `[low, high]` (what a planner in that box can see).

    The clip is the identity inside the box, so a plan's energy is unchanged.
    """
    return lambda actions: energy_fn(jnp.clip(actions, low, high))


def coordinate_direction(shape: tuple[int, int], step: int, dim: int) -> Array:
    """`[H, A]` one-hot: moves action coordinate `dim` of step `step` alone."""
    return jnp.zeros(shape, jnp.float32).at[step, dim].set(1.0)


def random_directions(key: Array, shape: tuple[int, int], num: int) -> Array:
    """`[num, H, A]` Gaussian directions of unit root-mean-square entry (Frobenius norm `sqrt(H*A)`).

    With this scale `alpha = 1` moves a typical coordinate by 1, like a coordinate direction.
    """
    d = jax.random.normal(key, (num, *shape))
    return d / jnp.sqrt(jnp.mean(d**2, axis=(1, 2), keepdims=True))


def toward_first_action(actions: Array, first: Array) -> Array:
    """`[H, A]` direction that replaces the first action of `actions [H, A]` by `first [A]` at `alpha = 1`."""
    return jnp.zeros_like(actions).at[0].set(first - actions[0])


def best_first_action(env, state, grid: int = 21) -> Array | None:
    """`[A]` the action that brings `state` closest to its goal in one step, or None if unknown.

    Known for envs whose unwrapped env has `geodesic_distance(obs, goal_obs)` (Two-Rooms: the
    shortest wall-avoiding path length): the minimiser of the geodesic distance after one
    `env.step` over a `grid**A` grid of the action box `[-1, 1]^A` (the greedy move along
    the shortest path; ties go to the first grid point).
    """
    geodesic = getattr(getattr(env, "unwrapped", env), "geodesic_distance", None)
    if geodesic is None:
        return None
    ticks = jnp.linspace(-1.0, 1.0, grid)
    candidates = jnp.stack(jnp.meshgrid(*[ticks] * env.action_size, indexing="ij"), -1).reshape(-1, env.action_size)
    goal = state.info[envs.GOAL_OBS]
    after = jax.vmap(lambda a: geodesic(env.step(state, a).obs, goal))(candidates)
    return candidates[jnp.argmin(after)]


# ----- gradients -----


class GradientCheck(NamedTuple):
    """Both energies and their gradients w.r.t. the actions at one plan (all `[]`).

    `cosine` is NaN where the pair is left out: the true gradient is unhealthy (`nonfinite`
    or `exploding`), or either gradient is zero or not finite.
    """

    learned_energy: Array
    true_energy: Array
    learned_norm: Array
    true_norm: Array
    cosine: Array
    nonfinite: Array
    exploding: Array


def cosine(u: Array, v: Array) -> Array:
    """`[]` cosine of the angle between two arrays of one shape (NaN if either is zero)."""
    u, v = jnp.ravel(u), jnp.ravel(v)
    return jnp.dot(u, v) / (jnp.linalg.norm(u) * jnp.linalg.norm(v))


def gradient_health(
    grad: Array, max_norm: float = MAX_NORM, reference_norm: Array | None = None, max_ratio: float = MAX_RATIO
) -> tuple[Array, Array, Array]:
    """`(norm [], nonfinite [] bool, exploding [] bool)` of a gradient `[H, A]`.

    `exploding`: finite, with norm above `max_norm`, or above `max_ratio * reference_norm` where
    `reference_norm > 0`.
    """
    nonfinite = ~jnp.all(jnp.isfinite(grad))
    norm = jnp.linalg.norm(jnp.where(jnp.isfinite(grad), grad, 0.0))
    exploding = ~nonfinite & (norm > max_norm)
    if reference_norm is not None:  # relative to a non-zero reference only (a plateau is no reference)
        exploding = exploding | (~nonfinite & (reference_norm > 0) & (norm > max_ratio * reference_norm))
    return norm, nonfinite, exploding


def compare_gradients(
    learned_fn: EnergyFn, true_fn: EnergyFn, actions: Array, max_norm: float = MAX_NORM, max_ratio: float = MAX_RATIO
) -> GradientCheck:
    """Both energies at `actions [H, A]` and their gradients: norms, health of the true one, cosine."""
    (e_learned, g_learned), (e_true, g_true) = (
        jax.value_and_grad(learned_fn)(actions),
        jax.value_and_grad(true_fn)(actions),
    )
    learned_norm, learned_bad, _ = gradient_health(g_learned, jnp.inf)
    true_norm, nonfinite, exploding = gradient_health(g_true, max_norm, learned_norm, max_ratio)
    valid = ~(learned_bad | nonfinite | exploding) & (learned_norm > 0) & (true_norm > 0)
    cos = jnp.where(valid, cosine(g_learned, g_true), jnp.nan)
    return GradientCheck(e_learned, e_true, learned_norm, true_norm, cos, nonfinite, exploding)


def gradient_summary(checks: GradientCheck) -> dict[str, Any]:
    """Statistics of a batch of checks (every field `[N]`), as plain Python numbers.

    The cosine's mean and median run over the valid pairs only (`valid` of `count`);
    `nonfinite` and `exploding` count unhealthy true gradients, `zero` the other pairs left
    out, where a gradient is exactly zero (e.g. every step pushes against a wall or a bound).
    Norm means run over finite norms.
    """
    c = jax.tree.map(np.asarray, checks)
    valid = np.isfinite(c.cosine)
    count = int(c.cosine.size)
    zero = ((c.learned_norm == 0) | (c.true_norm == 0)) & ~c.nonfinite & ~c.exploding
    stat = lambda f, x: float(f(x)) if x.size else None  # noqa: E731
    return {
        "count": count,
        "valid": int(valid.sum()),
        "cosine_mean": stat(np.mean, c.cosine[valid]),
        "cosine_median": stat(np.median, c.cosine[valid]),
        "cosine": c.cosine.tolist(),
        "learned_norm_mean": stat(np.mean, c.learned_norm[np.isfinite(c.learned_norm)]),
        "true_norm_mean": stat(np.mean, c.true_norm[~c.nonfinite]),
        "nonfinite": int(c.nonfinite.sum()),
        "exploding": int(c.exploding.sum()),
        "zero": int(zero.sum()),
        "nonfinite_fraction": float(c.nonfinite.mean()) if count else 0.0,
        "exploding_fraction": float(c.exploding.mean()) if count else 0.0,
    }


# ----- the guard -----


def guarded_optimize(
    planner: Planner,
    fallback: Planner,
    energy_fn: EnergyFn,
    key: Array,
    init: Array | None = None,
    prior: Array | None = None,
    max_norm: float = MAX_NORM,
) -> tuple[PlanResult, Array]:
    """`(PlanResult, used_fallback [] bool)`: `planner`'s plan unless the gradient there is unhealthy.

    Runs `planner`, then evaluates `grad energy_fn` at its plan. If that gradient has a
    non-finite entry or a norm above `max_norm`, the decision is `fallback`'s plan (same
    `energy_fn`, `key`, warm start `init` and policy `prior`): its actions and energy, its
    trace resampled to the length of `planner`'s, and the evaluations of both planners plus
    the check (`take_fallback`). Under `vmap` both planners run (the choice becomes a select);
    unbatched, only the one chosen. `guarded_twin_plan_fn` applies the same rule to a batch
    and runs the fallback only when some decision needs it.
    """
    result = planner.optimize(energy_fn, key, init, prior)
    _, nonfinite, exploding = gradient_health(jax.grad(energy_fn)(result.actions), max_norm)
    bad = nonfinite | exploding
    fallback_plan = lambda: take_fallback(result, fallback.optimize(energy_fn, key, init, prior), bad)  # noqa: E731
    return jax.lax.cond(bad, fallback_plan, lambda: take_fallback(result, result, bad)), bad


def take_fallback(result: PlanResult, other: PlanResult, use: Array) -> PlanResult:
    """Per decision, `other`'s plan where `use` and `result`'s elsewhere (`use []`, or `[N]` with
    both results batched `[N]`): actions, energy and trace (`other`'s resampled to the length of
    `result`'s); evaluations: `result`'s, plus 1 for the gradient check, plus `other`'s where used.
    """
    trace = _resample(other.energy_trace, result.energy_trace.shape[-1])
    evaluations = result.evaluations + 1 + jnp.where(use, other.evaluations, 0)
    return PlanResult(
        jnp.where(use[..., None, None], other.actions, result.actions),
        jnp.where(use, other.energy, result.energy),
        jnp.where(use[..., None], trace, result.energy_trace),
        evaluations.astype(result.evaluations.dtype),
    )


def _resample(trace: Array, length: int) -> Array:
    """`[..., L] -> [..., length]`: entry `i` is `trace` at the same fraction of the run (the last entry is kept)."""
    index = (jnp.arange(1, length + 1) * trace.shape[-1]) // length - 1
    return trace[..., jnp.clip(index, 0, trace.shape[-1] - 1)]


def guarded_planner(planner: Planner, fallback: Planner, max_norm: float = MAX_NORM) -> Planner:
    """`planner` whose `optimize` is `guarded_optimize` (the flag dropped); same name and space."""

    def optimize(energy_fn: EnergyFn, key: Array, init: Array | None = None, prior: Array | None = None) -> PlanResult:
        return guarded_optimize(planner, fallback, energy_fn, key, init, prior, max_norm)[0]

    options = (*planner.options, ("fallback", fallback.name), ("fallback_max_grad_norm", max_norm))
    return Planner(planner.name, planner.space, options, optimize)


def guarded_twin_plan_fn(
    plan_fn: Callable, fallback_plan_fn: Callable, true_energy: Callable, max_norm: float = MAX_NORM
):
    """`guarded_optimize`'s rule for a batch of decisions on the true dynamics, as a `plan_fn` of `agent.act`.

    `plan_fn` and `fallback_plan_fn` are the twin's (`ami.evaluate.twin_plan_fn`) for the
    planner and for its fallback: `(params, z [N, D], goal [N, D], init [N, H, A], key,
    env_states [N]) -> PlanResult [N]`; `true_energy(params, env_state, goal [D], actions
    [H, A]) -> []`. The fallback runs (`lax.cond` on `any`) only when some decision's true
    gradient at its plan is non-finite or above `max_norm`, and is taken for those decisions
    only (`take_fallback`). Both get the same key, so decision `i` plans from the same subkey.
    """
    grad = jax.vmap(jax.grad(true_energy, argnums=3), (None, 0, 0, 0))

    def guarded(params, z, goal, init, key, env_states, mem=None) -> PlanResult:
        result = plan_fn(params, z, goal, init, key, env_states, mem)
        _, nonfinite, exploding = jax.vmap(partial(gradient_health, max_norm=max_norm))(
            grad(params, env_states, goal, result.actions)
        )
        bad = nonfinite | exploding

        def fallback_plan() -> PlanResult:
            return take_fallback(result, fallback_plan_fn(params, z, goal, init, key, env_states, mem), bad)

        return jax.lax.cond(jnp.any(bad), fallback_plan, lambda: take_fallback(result, result, bad))

    return guarded


# ----- planners on problems -----


ITERATION_OPTIONS = ("iterations", "refine_iterations")  # the option that sets a kind's number of iterations


def iteration_option(planner: Planner) -> str | None:
    """The first of `ITERATION_OPTIONS` that `planner`'s kind has (None if none)."""
    return next((name for name in ITERATION_OPTIONS if name in dict(planner.options)), None)


def with_iterations(planner: Planner, iterations: int) -> Planner:
    """The same planner kind and options with another number of iterations (`iteration_option`)."""
    option = iteration_option(planner)
    if option is None:
        raise ValueError(f"planner {planner.name!r} has none of the options {ITERATION_OPTIONS}")
    options = {**dict(planner.options), option: iterations}
    low, high = np.asarray(planner.space.low), np.asarray(planner.space.high)
    return make_planner(
        planner.name,
        horizon=planner.horizon,
        action_size=planner.action_size,
        action_low=low,
        action_high=high,
        **options,
    )


def plan_pairs(optimize: Callable, energy: Callable, params: Any, contexts: Any, goals: Array, key: Array) -> Any:
    """Plans `P` problems at once: what `optimize` returns, with a leading `[P]` axis on every leaf.

    `optimize(energy_fn, key)` is a planner's `optimize` (-> `PlanResult`) or a partial
    `guarded_optimize` (-> `(PlanResult, used_fallback)`); `energy(params, context, goal [D],
    actions [H, A]) -> []`; `contexts` is a pytree with a leading `[P]` axis (start latents
    `[P, D]` or env states), `goals [P, D]`. Problem `p` uses key `split(key, P)[p]`.
    """
    keys = jax.random.split(key, goals.shape[0])
    return jax.vmap(lambda c, g, k: optimize(partial(energy, params, c, g), k))(contexts, goals, keys)


def with_planner(agent: Agent, planner: Planner) -> Agent:
    """`agent` whose `act` and `plan` use `planner` (same horizon) instead of its configured one."""
    m = agent.modules._replace(planner=planner)

    def act(state, step, key, plan_fn=None, context=None):
        return agent_lib.act(m, state, step, key, plan_fn, context)

    def plan(params, z0, goal, init_plan, key, mem=None):
        return agent_lib.plan_batch(m, params, z0, goal, init_plan, key, mem)

    return agent._replace(act=act, plan=plan, modules=m)


def with_guarded_twin(agent: Agent, planner: Planner, fallback: Planner, env, max_norm: float = MAX_NORM) -> Agent:
    """`with_planner(agent, planner)` for the true-dynamics controller of `ami.evaluate.run_episodes`:
    given a `plan_fn` (the twin's over `env`, which plans with `planner`), its `act` plans with
    `guarded_twin_plan_fn` around it, falling back on `fallback`'s twin plan per decision."""
    planned = with_planner(agent, planner)
    fallback_plan_fn = twin_plan_fn(with_planner(agent, fallback), env)
    energy = true_energy_fn(agent, env)

    def act(state, step, key, plan_fn=None, context=None):
        if plan_fn is not None:
            plan_fn = guarded_twin_plan_fn(plan_fn, fallback_plan_fn, energy, max_norm)
        return planned.act(state, step, key, plan_fn, context)

    return planned._replace(act=act)
