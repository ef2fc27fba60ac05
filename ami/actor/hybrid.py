"""The `"hybrid"` planner: a sampling planner proposes, L-BFGS (or Adam) refines its best proposals.

1. Proposal: the sampling planner `proposer` (`"cem"`, `"icem"` or `"mppi"`, see
   `ami.actor.sampling`) runs `proposer_iterations` iterations with its own options, the
   warm start `init` and the policy `prior` (exactly as that planner uses them), and keeps the
   `refine_top_k` best sequences it evaluated (best first; fewer distinct ones when fewer
   were evaluated, e.g. when most energies are NaN).
2. Refinement: each of those sequences starts one restart of the gradient planner's descent
   (`ami.actor.gradient.make_descent`: L-BFGS by default, Adam with `optimizer="adam"` and
   `learning_rate`), `refine_iterations` steps, side by side (`vmap`).

The result is the best sequence of both phases: the proposer's best unless a refined iterate
is strictly better. `energy_trace` has `proposer_iterations + refine_iterations` entries: the
proposer's trace, then the best energy of both phases after each refinement step
(non-increasing). A call spends exactly
`proposer_iterations * population + refine_top_k * (refine_iterations + 1)` evaluations (the
refinement evaluates energy and gradient at its starting points once, then after each step).

Options (defaults): `proposer="cem"`, `proposer_iterations=5`, `refine_iterations=30`,
`refine_top_k=4` (at most the proposer's `population`), `optimizer="lbfgs"`, `memory_size=10`,
`learning_rate=0.05` (Adam only; unit
coordinates: a fraction of the half-range), `parameterization="clip"` (proposals often lie on
the bounds, where `"tanh"` has no gradient), `grad_clip=None`, `init="zeros"` (the proposer's
`init`). The proposer's own options, `None` by default (the proposer's default): `population`,
`elites`, `momentum`, `init_std`, `min_std` (cem, icem), `noise_beta`, `keep_elites` (icem),
`temperature`, `noise_std` (mppi); setting one the proposer does not have raises `ValueError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ami.actor import base, gradient, sampling
from ami.actor.base import ActionSpace, Array, EnergyFn, PlanResult

PROPOSERS = ("cem", "icem", "mppi")
PROPOSER_OPTIONS = (
    "population",
    "elites",
    "momentum",
    "init_std",
    "min_std",
    "noise_beta",
    "keep_elites",
    "temperature",
    "noise_std",
)
DEFAULTS: Mapping[str, Any] = {
    "proposer": "cem",
    "proposer_iterations": 5,
    "refine_iterations": 30,
    "refine_top_k": 4,
    "optimizer": "lbfgs",
    "learning_rate": 0.05,
    "parameterization": "clip",
    "grad_clip": None,
    "memory_size": 10,
    "init": "zeros",
    **dict.fromkeys(PROPOSER_OPTIONS),
}


def proposer_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of the proposer's sampling planner, its defaults filled in.

    Raises `ValueError` naming an option set (not `None`) that the proposer does not have.
    """
    defaults = sampling.KINDS[options["proposer"]][0]
    resolved = {**defaults, "iterations": options["proposer_iterations"], "init": options["init"]}
    for option in PROPOSER_OPTIONS:
        if options[option] is None:
            continue
        if option not in defaults:
            raise ValueError(f"{option} is not an option of proposer {options['proposer']!r}")
        resolved[option] = options[option]
    return resolved


def check_options(options: Mapping[str, Any]) -> None:
    """Raises `ValueError` naming the first impossible option."""
    base.check_choice("proposer", options["proposer"], PROPOSERS)
    base.check_int("proposer_iterations", options["proposer_iterations"], minimum=1)
    base.check_int("refine_iterations", options["refine_iterations"], minimum=1)
    base.check_int("refine_top_k", options["refine_top_k"], minimum=1)
    gradient.check_descent_options(options)
    proposer = proposer_options(options)
    sampling.KINDS[options["proposer"]][1](proposer)
    top_k, population = options["refine_top_k"], proposer["population"]
    if top_k > population:
        raise ValueError(f"refine_top_k must be <= population = {population}, got {top_k}")


def build(space: ActionSpace, options: Mapping[str, Any]) -> base.OptimizeFn:
    """The `optimize(energy_fn, key, init=None, prior=None) -> PlanResult` of a hybrid planner."""
    proposer = proposer_options(options)
    search = sampling.make_search(options["proposer"], space, proposer, keep=options["refine_top_k"])
    param = gradient.PARAMETERIZATION_BY_NAME[options["parameterization"]]
    top_k, refine_iterations = options["refine_top_k"], options["refine_iterations"]
    evaluations = np.int32(proposer["iterations"] * proposer["population"] + top_k * (refine_iterations + 1))

    def optimize(energy_fn: EnergyFn, key: Array, init: Array | None = None, prior: Array | None = None) -> PlanResult:
        """Minimises `energy_fn: [H, A] -> []`; `init` `[H, A]` warm start, `prior` `[P, H, A]` proposals."""
        proposed, proposer_trace = search(energy_fn, key, init, prior)
        descent = gradient.make_descent(options, gradient.make_evaluate(energy_fn, space, param.squash))
        carry = jax.vmap(descent.init)(param.unsquash(proposed.y))
        step = jax.vmap(descent.step)

        def body(carry: Any, _: None) -> tuple[Any, Array]:
            carry = step(carry)
            return carry, jnp.minimum(proposed.energy[0], jnp.min(carry.best_energy))

        carry, refine_trace = jax.lax.scan(body, carry, None, length=refine_iterations)
        best = jnp.argmin(carry.best_energy)
        refined = carry.best_energy[best] < proposed.energy[0]
        actions = jnp.where(
            refined,
            base.from_unit(space, param.squash(carry.best_u[best])),
            base.from_unit(space, proposed.y[0]),
        )
        energy = jnp.where(refined, carry.best_energy[best], proposed.energy[0])
        trace = jnp.concatenate([proposer_trace, refine_trace])
        return PlanResult(actions, energy, trace, jnp.asarray(evaluations))

    return optimize


base.register_planner(
    "hybrid",
    defaults=DEFAULTS,
    check=check_options,
    build=build,
    description="a sampling planner proposes, L-BFGS (or Adam) refines its best proposals",
)
