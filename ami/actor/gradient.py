"""The `"gradient"` planner: Adam on the action sequence, several restarts in parallel.

Each restart optimises its own `[H, A]` sequence in unit coordinates `u` (the box mapped to
`[-1, 1]`, see `ami.actor.base`), so the learning rate is in units of the half-range:

* `parameterization="tanh"`: `a = mid + half_range * tanh(u)`, `u` unconstrained;
* `parameterization="clip"`: `a = mid + half_range * u`, `u` clipped to `[-1, 1]` after each
  Adam step (projected gradient descent).

Restarts run side by side (`vmap`), iterations in `lax.scan`. Every restart keeps the best
iterate it has evaluated, and the best restart wins. Iteration `i` takes one Adam step from
the current iterate and evaluates energy and gradient at the new one; the starting points
are evaluated once before the first step, so a call spends exactly
`restarts * (iterations + 1)` evaluations.

Non-finite values: a NaN or infinite energy counts as `+inf` and never wins. A restart whose
iterate has a non-finite energy or gradient (a step into a NaN region, e.g. through contact
physics) goes back to its best iterate, restarts Adam there and halves its step size, so it
keeps descending instead of staying stuck where the energy is undefined.

Options (defaults): `iterations=50`, `restarts=8`, `learning_rate=0.1`,
`parameterization="tanh"`, `init="uniform"` (or `"constant"`, `"zeros"`; see
`base.sample_unit_sequences`; with `"zeros"` and no warm start every restart runs the same
descent), `init_noise=0.1` (see `base.start_unit_sequences`), `grad_clip=None` (global-norm
clip of each restart's gradient; it keeps Adam's second-moment estimate from being dominated
by the large gradients of far-off starts, which otherwise slows the final approach).

With `"tanh"` an optimum on a bound is approached but not reached (the gradient of tanh
vanishes there); `"clip"` lands on it exactly.

Policy prior: `optimize(..., prior=)` takes a `[P, H, A]` array of candidate sequences (action
units, clipped into the box) with `1 <= P <= restarts`; they replace the starting points of
the last `P` restarts (with `P == restarts` also restart 0, the warm start's). The evaluation
count is unchanged. Without a prior the planner is exactly as above.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ami.actor import base
from ami.actor.base import ActionSpace, Array, EnergyFn, PlanResult

DEFAULTS: Mapping[str, Any] = {
    "iterations": 50,
    "restarts": 8,
    "learning_rate": 0.1,
    "parameterization": "tanh",
    "init": "uniform",
    "init_noise": 0.1,
    "grad_clip": None,
}
PARAMETERIZATIONS = ("tanh", "clip")
TANH_EPS = 1e-6  # unit coordinates are clipped to [-1 + eps, 1 - eps] before arctanh


class Parameterization(NamedTuple):
    """How unit coordinates `y` in `[-1, 1]` relate to the optimised variable `u` (all `[..., H, A]`).

    `squash(u) -> y`, `unsquash(y) -> u` (finite even at `y = +-1`), `project(u) -> u` after a step.
    """

    squash: Callable[[Array], Array]
    unsquash: Callable[[Array], Array]
    project: Callable[[Array], Array]


def _unit_clip(u: Array) -> Array:
    return jnp.clip(u, -1.0, 1.0)


def _arctanh_inside(y: Array) -> Array:
    return jnp.arctanh(jnp.clip(y, -1.0 + TANH_EPS, 1.0 - TANH_EPS))


PARAMETERIZATION_BY_NAME = {
    "tanh": Parameterization(jnp.tanh, _arctanh_inside, lambda u: u),
    "clip": Parameterization(lambda u: u, _unit_clip, _unit_clip),
}


class Restart(NamedTuple):
    """The scan carry of one restart (`[R, ...]` for all of them).

    `u [H, A]` the iterate, `energy []` and `grad [H, A]` evaluated there (energy made safe:
    `+inf` if not finite), `opt_state` Adam's state, `best_u [H, A]` / `best_energy []` the
    best iterate evaluated so far, `scale []` the factor on Adam's steps (halved on each
    return from a non-finite iterate).
    """

    u: Array
    energy: Array
    grad: Array
    opt_state: optax.OptState
    best_u: Array
    best_energy: Array
    scale: Array


def check_options(options: Mapping[str, Any]) -> None:
    """Raises `ValueError` naming the first impossible option."""
    base.check_int("iterations", options["iterations"], minimum=1)
    base.check_int("restarts", options["restarts"], minimum=1)
    base.check_float("learning_rate", options["learning_rate"], positive=True)
    base.check_choice("parameterization", options["parameterization"], PARAMETERIZATIONS)
    base.check_choice("init", options["init"], base.INIT_SCHEMES)
    base.check_float("init_noise", options["init_noise"])
    base.check_float("grad_clip", options["grad_clip"], positive=True, allow_none=True)


def make_optimizer(options: Mapping[str, Any]) -> optax.GradientTransformation:
    """Adam with `learning_rate`, after a global-norm clip when `grad_clip` is set."""
    adam = optax.adam(options["learning_rate"])
    if options["grad_clip"] is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(options["grad_clip"]), adam)


def energy_of_u(energy_fn: EnergyFn, space: ActionSpace, squash: Callable, u: Array) -> Array:
    """`[H, A] -> []`: the energy of the actions `u` stands for.

    The clip into the box passes gradients straight through, so an iterate on the boundary
    of `parameterization="clip"` still gets the gradient that can move it back inside.
    """
    raw = space.mid + space.half_range * squash(u)
    actions = raw + jax.lax.stop_gradient(base.from_unit(space, squash(u)) - raw)
    return base.check_energy(energy_fn(actions))


def evaluate_safely(energy_and_grad: Callable, u: Array) -> tuple[Array, Array]:
    """`[H, A] -> ([], [H, A])`: safe energy and gradient at `u`."""
    energy, grad = energy_and_grad(u)
    return base.safe_energy(energy), grad


def init_restart(evaluate: Callable, optimizer: optax.GradientTransformation, u: Array) -> Restart:
    """One restart at its starting point `u [H, A]`, evaluated.

    `evaluate(u [H, A]) -> (energy [], grad [H, A])` returns safe energies (`evaluate_safely`).
    """
    energy, grad = evaluate(u)
    return Restart(u, energy, grad, optimizer.init(u), u, energy, jnp.ones((), u.dtype))


def step_restart(evaluate: Callable, optimizer: optax.GradientTransformation, project: Callable, r: Restart) -> Restart:
    """One iteration of one restart: an Adam step, then evaluation at the new iterate.

    When the energy or gradient at `r.u` is not finite there is no step: the restart goes
    back to `r.best_u` with a fresh Adam state and half the step scale (at a start that is
    itself non-finite it stays put). `evaluate` as in `init_restart`; `project(u [H, A]) ->
    [H, A]` follows the step.
    """
    finite = jnp.isfinite(r.energy) & jnp.all(jnp.isfinite(r.grad))
    updates, opt_state = optimizer.update(r.grad, r.opt_state, r.u)
    stepped = project(r.u + r.scale * updates)
    u = jnp.where(finite, stepped, r.best_u)
    fresh = optimizer.init(r.best_u)
    opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), opt_state, fresh)
    scale = jnp.where(finite, r.scale, 0.5 * r.scale)
    energy, grad = evaluate(u)
    better = energy < r.best_energy
    best_u = jnp.where(better, u, r.best_u)
    return Restart(u, energy, grad, opt_state, best_u, jnp.where(better, energy, r.best_energy), scale)


def build(space: ActionSpace, options: Mapping[str, Any]) -> base.OptimizeFn:
    """The `optimize(energy_fn, key, init=None, prior=None) -> PlanResult` of a gradient planner."""
    param = PARAMETERIZATION_BY_NAME[options["parameterization"]]
    optimizer = make_optimizer(options)
    iterations, restarts = options["iterations"], options["restarts"]
    evaluations = np.int32(restarts * (iterations + 1))

    def optimize(energy_fn: EnergyFn, key: Array, init: Array | None = None, prior: Array | None = None) -> PlanResult:
        """Minimises `energy_fn: [H, A] -> []` from `restarts` starts.

        `init` is an `[H, A]` warm start; `prior` `[P, H, A]` replaces the last `P` starts.
        """
        energy_and_grad = jax.value_and_grad(functools.partial(energy_of_u, energy_fn, space, param.squash))
        evaluate = functools.partial(evaluate_safely, energy_and_grad)
        y0 = base.start_unit_sequences(key, space, restarts, options["init"], init, options["init_noise"])
        if prior is not None:
            y0 = base.replace_last(y0, base.prior_unit_sequences(prior, space, restarts, "restarts"))
        carry = jax.vmap(functools.partial(init_restart, evaluate, optimizer))(param.unsquash(y0))
        step = jax.vmap(functools.partial(step_restart, evaluate, optimizer, param.project))

        def body(carry: Restart, _: None) -> tuple[Restart, Array]:
            carry = step(carry)
            return carry, jnp.min(carry.best_energy)

        carry, trace = jax.lax.scan(body, carry, None, length=iterations)
        best = jnp.argmin(carry.best_energy)
        actions = base.from_unit(space, param.squash(carry.best_u[best]))
        return PlanResult(actions, carry.best_energy[best], trace, jnp.asarray(evaluations))

    return optimize


base.register_planner(
    "gradient",
    defaults=DEFAULTS,
    check=check_options,
    build=build,
    description="Adam on the action sequence, restarts in parallel, best iterate kept",
)
