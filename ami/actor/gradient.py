"""The `"gradient"` planner: L-BFGS (or Adam) on the action sequence, several restarts in parallel.

Each restart optimises its own `[H, A]` sequence in unit coordinates `u` (the box mapped to
`[-1, 1]`, see `ami.actor.base`):

* `parameterization="clip"`: `a = mid + half_range * u`, `u` kept in `[-1, 1]` (projected
  descent; L-BFGS holds coordinates on their bounds, see `ami.actor.quasi_newton`);
* `parameterization="tanh"`: `a = mid + half_range * tanh(u)`, `u` unconstrained.

`optimizer="lbfgs"` (default) descends along L-BFGS directions with a backtracking line search
spread over iterations (`ami.actor.quasi_newton`): it needs no learning rate and converges on
smooth energies in a few dozen iterations. `optimizer="adam"` takes Adam steps of
`learning_rate` (in half-ranges of the bounds). On the LQ problems of
`benchmarks/planner_convergence.py` (horizons 3-16, 1-6 action dimensions) the defaults end
within 1e-5 of the optimum's gap where 50 Adam steps stop 3e-4 to 1.4 away; with `"tanh"`
L-BFGS stalls on starts near the bounds (tanh saturates), hence `"clip"` by default.

Restarts run side by side (`vmap`), iterations in `lax.scan`. Every restart keeps the best
iterate it has evaluated, and the best restart wins. Iteration `i` takes one step from
the current iterate and evaluates energy and gradient at the new one; the starting points
are evaluated once before the first step, so a call spends exactly
`restarts * (iterations + 1)` evaluations.

Non-finite values: a NaN or infinite energy counts as `+inf` and never wins. A restart whose
iterate has a non-finite energy or gradient (a step into a NaN region, e.g. through contact
physics) never moves there: Adam goes back to its best iterate, restarts there and halves its
step size; L-BFGS rejects the trial point and shrinks its step (`ami.actor.quasi_newton`).
Either way it keeps descending instead of staying stuck where the energy is undefined.

Options (defaults): `optimizer="lbfgs"`, `iterations=50`, `restarts=8`, `memory_size=10`
(L-BFGS's curvature pairs), `learning_rate=0.1` (Adam only), `parameterization="clip"`,
`init="uniform"` (or `"constant"`, `"zeros"`; see
`base.sample_unit_sequences`; with `"zeros"` and no warm start every restart runs the same
descent), `init_noise=0.1` (see `base.start_unit_sequences`), `grad_clip=None` (Adam only: global-norm
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

from ami.actor import base, quasi_newton
from ami.actor.base import ActionSpace, Array, EnergyFn, PlanResult

DEFAULTS: Mapping[str, Any] = {
    "optimizer": "lbfgs",
    "iterations": 50,
    "restarts": 8,
    "learning_rate": 0.1,
    "parameterization": "clip",
    "init": "uniform",
    "init_noise": 0.1,
    "grad_clip": None,
    "memory_size": 10,
}
OPTIMIZERS = ("adam", "lbfgs")
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


def check_descent_options(options: Mapping[str, Any]) -> None:
    """Raises `ValueError` naming the first impossible option of the descent (`make_descent`)."""
    base.check_choice("optimizer", options["optimizer"], OPTIMIZERS)
    base.check_float("learning_rate", options["learning_rate"], positive=True)
    base.check_choice("parameterization", options["parameterization"], PARAMETERIZATIONS)
    base.check_float("grad_clip", options["grad_clip"], positive=True, allow_none=True)
    base.check_int("memory_size", options["memory_size"], minimum=1)


def check_options(options: Mapping[str, Any]) -> None:
    """Raises `ValueError` naming the first impossible option."""
    base.check_int("iterations", options["iterations"], minimum=1)
    base.check_int("restarts", options["restarts"], minimum=1)
    base.check_choice("init", options["init"], base.INIT_SCHEMES)
    base.check_float("init_noise", options["init_noise"])
    check_descent_options(options)


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


class Descent(NamedTuple):
    """How one restart descends: `init(u [H, A]) -> carry` evaluates a start, `step(carry) -> carry`
    is one iteration (one evaluation each). Every carry has `best_u [H, A]` and `best_energy []`."""

    init: Callable[[Array], Any]
    step: Callable[[Any], Any]


def make_evaluate(energy_fn: EnergyFn, space: ActionSpace, squash: Callable) -> Callable:
    """`evaluate(u [H, A]) -> (energy [], grad [H, A])`: the safe energy of `u` and its gradient."""
    energy_and_grad = jax.value_and_grad(functools.partial(energy_of_u, energy_fn, space, squash))
    return functools.partial(evaluate_safely, energy_and_grad)


def make_descent(options: Mapping[str, Any], evaluate: Callable) -> Descent:
    """The `Descent` of `options["optimizer"]`: Adam (`init_restart`, `step_restart`) or L-BFGS
    (`ami.actor.quasi_newton`), in the parameterisation `options["parameterization"]`."""
    param = PARAMETERIZATION_BY_NAME[options["parameterization"]]
    if options["optimizer"] == "adam":
        optimizer = make_optimizer(options)
        init = functools.partial(init_restart, evaluate, optimizer)
        return Descent(init, functools.partial(step_restart, evaluate, optimizer, param.project))
    lbfgs = optax.scale_by_lbfgs(memory_size=options["memory_size"])
    bounded = options["parameterization"] == "clip"
    init = functools.partial(quasi_newton.init_restart, evaluate, lbfgs, bounded)
    return Descent(init, functools.partial(quasi_newton.step_restart, evaluate, lbfgs, bounded, param.project))


def build(space: ActionSpace, options: Mapping[str, Any]) -> base.OptimizeFn:
    """The `optimize(energy_fn, key, init=None, prior=None) -> PlanResult` of a gradient planner."""
    param = PARAMETERIZATION_BY_NAME[options["parameterization"]]
    iterations, restarts = options["iterations"], options["restarts"]
    evaluations = np.int32(restarts * (iterations + 1))

    def optimize(energy_fn: EnergyFn, key: Array, init: Array | None = None, prior: Array | None = None) -> PlanResult:
        """Minimises `energy_fn: [H, A] -> []` from `restarts` starts.

        `init` is an `[H, A]` warm start; `prior` `[P, H, A]` replaces the last `P` starts.
        """
        descent = make_descent(options, make_evaluate(energy_fn, space, param.squash))
        y0 = base.start_unit_sequences(key, space, restarts, options["init"], init, options["init_noise"])
        if prior is not None:
            y0 = base.replace_last(y0, base.prior_unit_sequences(prior, space, restarts, "restarts"))
        carry = jax.vmap(descent.init)(param.unsquash(y0))
        step = jax.vmap(descent.step)

        def body(carry: Any, _: None) -> tuple[Any, Array]:
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
    description="L-BFGS (or Adam) on the action sequence, restarts in parallel, best iterate kept",
)
