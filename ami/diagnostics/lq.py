"""Linear-quadratic planning problems with a closed-form optimum: a yardstick for planners.

A problem is a linear system `x_{t+1} = F x_t + G a_t` from `x_0`, `N` states and `A` actions
over `H` steps, with the energy of an action sequence `a [H, A]`

    E(a) = sum_{t=1..H} ||x_t||^2 + r sum_{t=0..H-1} ||a_t||^2.

The states stacked, `x_{1..H} = gain @ vec(a) + free @ x_0`, make `E` a quadratic in
`vec(a)` with Hessian `2 (gain^T gain + r I)` and minimiser
`a* = -(gain^T gain + r I)^{-1} gain^T free x_0` (the normal equations, solved in float64).

`make_problem(seed, horizon, action_size)` draws a random, well-conditioned system (`F` a
random orthogonal matrix times `rho`, `G` Gaussian scaled by `1 / sqrt(N)`) and scales `x_0`
so that the unconstrained minimiser has `max |a*| = optimum_scale`. With `optimum_scale < 1`
it lies inside the box `[-1, 1]` and is the problem's optimum; with `optimum_scale > 1` the
optimum is the box-constrained minimiser, with actions on their bounds (bang-bang control),
found by `box_minimiser` (projected gradient, then the active set solved exactly, checked by
its KKT conditions). A planner is judged by its gap `(E(a) - E*) / (E(0) - E*)`: 1 at the
centre of the box, 0 at the optimum.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class LQProblem(NamedTuple):
    """One problem, in float64 numpy (`energy` casts to float32 when traced).

    `gain [H*N, H*A]`, `free_x0 [H*N]` (`free @ x_0`), `r` the action cost, `optimum [H, A]`
    the minimiser `a*`, `optimal_energy` `E*`, `zero_energy` `E(0)`, `condition` the condition
    number of the Hessian.
    """

    gain: np.ndarray
    free_x0: np.ndarray
    r: float
    optimum: np.ndarray
    optimal_energy: float
    zero_energy: float
    condition: float

    @property
    def shape(self) -> tuple[int, int]:
        """`(H, A)` of an action sequence."""
        return self.optimum.shape


def stacked_dynamics(dynamics: np.ndarray, control: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """`gain [H*N, H*A]`, `free [H*N, N]`: `x_{1..H}` stacked is `gain @ vec(a) + free @ x_0`.

    `dynamics` is `F [N, N]`, `control` is `G [N, A]`.
    """
    n, a = control.shape
    gain, free = np.zeros((horizon * n, horizon * a)), np.zeros((horizon * n, n))
    powers = [np.linalg.matrix_power(dynamics, k) for k in range(horizon + 1)]
    for t in range(horizon):
        free[t * n : (t + 1) * n] = powers[t + 1]
        for s in range(t + 1):
            gain[t * n : (t + 1) * n, s * a : (s + 1) * a] = powers[t - s] @ control
    return gain, free


def make_problem(
    seed: int,
    horizon: int,
    action_size: int,
    state_size: int | None = None,
    rho: float = 0.95,
    r: float = 0.3,
    optimum_scale: float = 0.5,
) -> LQProblem:
    """A random LQ problem over `[horizon, action_size]` sequences (`state_size` N defaults to `2 A`).

    `F = rho * Q` with `Q` a random orthogonal `[N, N]` matrix, `G [N, A]` standard normal over
    `sqrt(N)`, `x_0` random, rescaled so that the unconstrained minimiser has
    `max |a| = optimum_scale`; all from `seed`.
    """
    n = state_size or 2 * action_size
    rng = np.random.default_rng(seed)
    q, upper = np.linalg.qr(rng.normal(size=(n, n)))
    dynamics = rho * q * np.sign(np.diag(upper))
    control = rng.normal(size=(n, action_size)) / np.sqrt(n)
    gain, free = stacked_dynamics(dynamics, control, horizon)
    hessian = gain.T @ gain + r * np.eye(gain.shape[1])
    x0 = rng.normal(size=n)
    unit = -np.linalg.solve(hessian, gain.T @ (free @ x0))  # a* is linear in x_0
    free_x0 = optimum_scale / np.abs(unit).max() * (free @ x0)
    optimum = box_minimiser(2.0 * hessian, 2.0 * gain.T @ free_x0)
    eigenvalues = np.linalg.eigvalsh(hessian)
    return LQProblem(
        gain=gain,
        free_x0=free_x0,
        r=float(r),
        optimum=optimum.reshape(horizon, action_size),
        optimal_energy=float(np.sum((gain @ optimum + free_x0) ** 2) + r * np.sum(optimum**2)),
        zero_energy=float(np.sum(free_x0**2)),
        condition=float(eigenvalues[-1] / eigenvalues[0]),
    )


def box_minimiser(quadratic: np.ndarray, linear: np.ndarray, iterations: int = 5000) -> np.ndarray:
    """`[n]` minimiser of `a^T Q a / 2 + b^T a` over `[-1, 1]^n` (`Q [n, n]` positive definite, float64).

    Accelerated projected gradient (FISTA), then the free coordinates solved exactly with the
    others on their bounds; raises `ValueError` unless the result meets the KKT conditions.
    """
    unconstrained = -np.linalg.solve(quadratic, linear)
    if np.abs(unconstrained).max() < 1.0:
        return unconstrained
    step = 1.0 / np.linalg.eigvalsh(quadratic)[-1]
    a = previous = np.clip(unconstrained, -1.0, 1.0)
    momentum = 1.0
    for _ in range(iterations):
        next_momentum = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * momentum**2))
        look = a + (momentum - 1.0) / next_momentum * (a - previous)
        previous, a = a, np.clip(look - step * (quadratic @ look + linear), -1.0, 1.0)
        momentum = next_momentum
    bound = np.abs(a) >= 1.0 - 1e-9
    a = np.where(bound, np.sign(a), a)
    if not np.all(bound):
        free = ~bound
        rhs = -(linear[free] + quadratic[np.ix_(free, bound)] @ a[bound])
        a[free] = np.linalg.solve(quadratic[np.ix_(free, free)], rhs)
    grad = quadratic @ a + linear
    violation = np.where(np.abs(a) >= 1.0, np.maximum(a * grad, 0.0), np.abs(grad))
    if np.abs(a).max() > 1.0 + 1e-9 or violation.max() > 1e-8 * max(1.0, np.abs(linear).max()):
        raise ValueError(f"box_minimiser did not converge (KKT violation {violation.max():.2e})")
    return a


def stacked_energy(gain: Array, free_x0: Array, r: float, actions: Array) -> Array:
    """`E(a)` of `actions [H, A]` from the stacked arrays `gain [H*N, H*A]`, `free_x0 [H*N]` (traceable:
    `vmap` over problems of one size)."""
    states = gain @ actions.reshape(-1) + free_x0
    return jnp.sum(states**2) + r * jnp.sum(actions**2)


def energy(problem: LQProblem, actions: Array) -> Array:
    """`[H, A] -> []` float32: the energy `E(a)` through the stacked matrices."""
    gain, free_x0 = jnp.asarray(problem.gain, jnp.float32), jnp.asarray(problem.free_x0, jnp.float32)
    return stacked_energy(gain, free_x0, problem.r, actions)


def energy_fn(problem: LQProblem):
    """`energy_fn: [H, A] -> []` of `problem`, for a planner."""
    return lambda actions: energy(problem, actions)


def gap(problem: LQProblem, value: float | np.ndarray) -> np.ndarray:
    """`(E - E*) / (E(0) - E*)` of energies `value` (any shape), float64."""
    excess = np.asarray(value, np.float64) - problem.optimal_energy
    return excess / (problem.zero_energy - problem.optimal_energy)


def exact_gap(problem: LQProblem, actions: np.ndarray) -> float:
    """The gap of `actions [H, A]` with the energy computed in float64 (no float32 rounding)."""
    a = np.asarray(actions, np.float64).reshape(-1)
    value = np.sum((problem.gain @ a + problem.free_x0) ** 2) + problem.r * np.sum(a**2)
    return float(gap(problem, value))
