"""L-BFGS descent for one restart of the gradient planner: one energy evaluation per iteration.

The direction is optax's L-BFGS (`optax.scale_by_lbfgs`, the two-loop recursion of
`optax.lbfgs` over the last `memory_size` steps and gradient changes; its first step is the
gradient scaled to norm at most 1). The step size comes from a backtracking line search
spread over iterations, so that every iteration evaluates energy and gradient exactly once
at one trial point `u_trial = project(u + step * direction)`:

* accepted when its energy and gradient are finite and it decreases the energy enough
  (Armijo: `E(u_trial) <= E(u) + c1 grad(u) . (u_trial - u)` with `c1 = 1e-4`, and
  strictly below `E(u)`): the iterate moves there, L-BFGS takes the new pair into its memory
  and proposes the next direction, and the step returns to 1;
* rejected otherwise: the iterate, its memory and its direction stay, and the step shrinks
  to the minimiser of the quadratic through `E(u)`, the slope and `E(u_trial)`, kept in
  `[0.1, 0.5]` of the step (half when the trial's energy is not finite).

So the iterate only ever moves to a lower finite energy: it is always the restart's best.
A direction that is not a descent direction (curvature pairs of a non-convex energy can give
one) or not finite is replaced by the first, scaled-gradient direction of an empty memory;
a non-finite gradient gives no direction, and the restart stays where it is.

Why not `optax.lbfgs()` with its zoom line search: that search runs a `lax.while_loop` whose
body picks one of two branches with `lax.cond`, each evaluating the energy. Under `vmap` over
restarts (and the caller's batch) the `cond` becomes a `select` that runs both branches, and
the loop runs every restart until the slowest one's search ends; on the LQ problems of
`benchmarks/planner_convergence.py` that computed about 8x the evaluations the searches
asked for. The scheme here computes exactly what it counts.

Bounds (`bounded=True`, the `"clip"` parameterization, iterates in `[-1, 1]`): a coordinate
on its bound whose gradient pushes outward is held (its gradient and direction are zeroed),
so the search runs in the free coordinates and the Armijo test uses the projected step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
ARMIJO = 1e-4  # c1, the fraction of the predicted decrease a step must achieve
SHRINK = (0.1, 0.5)  # a rejected step shrinks to within these fractions of itself


class Restart(NamedTuple):
    """The scan carry of one L-BFGS restart (`[R, ...]` for all of them).

    `u [H, A]` the iterate (always the best evaluated so far), `energy []` and `grad [H, A]`
    there (energy made safe: `+inf` if not finite), `direction [H, A]` the search direction
    from `u`, `step []` the trial step along it, `memory` L-BFGS's state
    (`optax.ScaleByLBFGSState`).
    """

    u: Array
    energy: Array
    grad: Array
    direction: Array
    step: Array
    memory: optax.OptState

    @property
    def best_u(self) -> Array:
        """The best iterate: the current one (`[..., H, A]`)."""
        return self.u

    @property
    def best_energy(self) -> Array:
        """Its energy (`[...]`)."""
        return self.energy


def held(bounded: bool, u: Array, grad: Array) -> Array:
    """`[H, A]` bool: coordinates on a bound of `[-1, 1]` whose descent would leave the box."""
    if not bounded:
        return jnp.zeros(u.shape, bool)
    return (jnp.abs(u) >= 1.0) & (u * grad < 0.0)


def propose(lbfgs: optax.GradientTransformation, bounded: bool, u: Array, grad: Array, memory) -> tuple[Array, object]:
    """The descent direction `[H, A]` at `u` and the memory with `(u, grad)` taken in.

    Falls back to an empty memory's direction when L-BFGS's is not a finite descent
    direction; zero where `grad` is not finite or a coordinate is `held`.
    """
    free = ~held(bounded, u, grad)
    grad = jnp.where(free & jnp.all(jnp.isfinite(grad)), grad, 0.0)
    scaled, updated = lbfgs.update(grad, memory, u)
    fresh_scaled, fresh = lbfgs.update(grad, lbfgs.init(u), u)
    direction, fresh_direction = -jnp.where(free, scaled, 0.0), -jnp.where(free, fresh_scaled, 0.0)
    descent = (jnp.vdot(grad, direction) < 0.0) & jnp.all(jnp.isfinite(direction))
    direction = jnp.where(descent, direction, jnp.where(jnp.all(jnp.isfinite(fresh_direction)), fresh_direction, 0.0))
    memory = jax.tree.map(lambda a, b: jnp.where(descent, a, b), updated, fresh)
    return direction, memory


def init_restart(evaluate: Callable, lbfgs: optax.GradientTransformation, bounded: bool, u: Array) -> Restart:
    """One restart at its starting point `u [H, A]`, evaluated (one evaluation), with its first direction.

    `evaluate(u [H, A]) -> (energy [], grad [H, A])` returns safe energies.
    """
    energy, grad = evaluate(u)
    direction, memory = propose(lbfgs, bounded, u, grad, lbfgs.init(u))
    return Restart(u, energy, grad, direction, jnp.ones((), u.dtype), memory)


def shrunk(r: Restart, energy: Array, slope: Array) -> Array:
    """The next trial step `[]` after `r.step` was rejected with trial energy `energy`.

    The minimiser of the quadratic with value `r.energy` and slope `slope` (per unit step) at
    0 and value `energy` at `r.step`, clipped into `SHRINK` times `r.step`.
    """
    curvature = energy - r.energy - slope * r.step
    quadratic = -slope * r.step**2 / (2.0 * curvature)
    low, high = SHRINK[0] * r.step, SHRINK[1] * r.step
    return jnp.where(jnp.isfinite(quadratic) & (curvature > 0.0), jnp.clip(quadratic, low, high), high)


def step_restart(
    evaluate: Callable, lbfgs: optax.GradientTransformation, bounded: bool, project: Callable, r: Restart
) -> Restart:
    """One iteration of one restart: evaluate the trial point, then accept it or shrink the step.

    `evaluate` as in `init_restart`; `project(u [H, A]) -> [H, A]` maps a step into the
    parameterisation's domain.
    """
    trial = project(r.u + r.step * r.direction)
    energy, grad = evaluate(trial)
    sufficient = energy <= r.energy + ARMIJO * jnp.vdot(r.grad, trial - r.u)
    accept = jnp.isfinite(energy) & jnp.all(jnp.isfinite(grad)) & (energy < r.energy) & sufficient
    direction, memory = propose(lbfgs, bounded, trial, grad, r.memory)
    moved = Restart(trial, energy, grad, direction, jnp.ones_like(r.step), memory)
    stayed = r._replace(step=shrunk(r, energy, jnp.vdot(r.grad, r.direction)))
    return jax.tree.map(lambda a, b: jnp.where(accept, a, b), moved, stayed)
