"""Planners on the LQ yardstick (`ami.diagnostics.lq`): the closed-form optima, and the gradient
and hybrid planners within 1e-3 of them at their default options (L-BFGS), where Adam is not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ami.actor import make_planner
from ami.diagnostics import lq

SIZES = ((8, 3), (16, 6))  # 24 and 96 action coordinates
SEEDS = (0, 1, 2)


def plan_gaps(name: str, horizon: int, action_size: int, optimum_scale: float = 0.5, **options) -> list[float]:
    """Exact gaps of `name`'s plans (default options updated by `options`) on the seeds' problems."""
    planner = make_planner(name, horizon=horizon, action_size=action_size, **options)
    gaps = []
    for seed in SEEDS:
        problem = lq.make_problem(seed, horizon, action_size, optimum_scale=optimum_scale)
        result = jax.jit(lambda k, p=problem: planner.optimize(lq.energy_fn(p), k))(jax.random.key(seed))
        gaps.append(lq.exact_gap(problem, np.asarray(result.actions)))
    return gaps


def test_interior_optimum_solves_the_normal_equations():
    problem = lq.make_problem(0, 8, 3)
    a = problem.optimum.reshape(-1)
    hessian = problem.gain.T @ problem.gain + problem.r * np.eye(a.size)
    np.testing.assert_allclose(hessian @ a, -problem.gain.T @ problem.free_x0, atol=1e-10)
    assert np.abs(problem.optimum).max() == pytest.approx(0.5)
    assert lq.exact_gap(problem, problem.optimum) == pytest.approx(0.0, abs=1e-12)
    assert lq.exact_gap(problem, np.zeros(problem.shape)) == pytest.approx(1.0)
    assert 1.0 < problem.condition < 1e3  # well conditioned, not trivial
    rounded = float(lq.energy(problem, jnp.asarray(problem.optimum, jnp.float32)))
    assert rounded == pytest.approx(problem.optimal_energy, rel=1e-5)


def test_box_optimum_meets_the_kkt_conditions():
    problem = lq.make_problem(1, 8, 3, optimum_scale=3.0)
    a = problem.optimum.reshape(-1)
    grad = 2.0 * ((problem.gain.T @ problem.gain + problem.r * np.eye(a.size)) @ a + problem.gain.T @ problem.free_x0)
    on_bound = np.abs(a) == 1.0
    assert on_bound.any() and not on_bound.all()
    assert np.all(a[on_bound] * grad[on_bound] <= 1e-9)  # the gradient pushes outward on the bounds
    np.testing.assert_allclose(grad[~on_bound], 0.0, atol=1e-8)
    # every feasible perturbation raises the energy
    rng = np.random.default_rng(0)
    for _ in range(20):
        b = np.clip(a + 0.05 * rng.normal(size=a.size), -1.0, 1.0).reshape(problem.shape)
        assert lq.exact_gap(problem, b) > 0.0


def test_box_minimiser_rejects_an_unconverged_result():
    quadratic, linear = np.array([[1.0, 0.9], [0.9, 1.0]]), np.array([2.0, 0.5])
    with pytest.raises(ValueError, match="KKT"):
        lq.box_minimiser(quadratic, linear, iterations=0)  # the clipped Newton point: wrong active set
    np.testing.assert_allclose(lq.box_minimiser(quadratic, linear), [-1.0, 0.4])


@pytest.mark.parametrize("name", ["gradient", "hybrid"])
@pytest.mark.parametrize("horizon, action_size", SIZES)
def test_defaults_reach_the_lq_optimum(name, horizon, action_size):
    assert max(plan_gaps(name, horizon, action_size)) <= 1e-3


def test_adam_at_the_same_budget_does_not():
    """What the default replaced: 50 Adam steps stop well short on the 96-coordinate problems."""
    assert min(plan_gaps("gradient", 16, 6, optimizer="adam", parameterization="tanh")) > 1e-2


def test_lbfgs_lands_on_the_box_optimum():
    assert max(plan_gaps("gradient", 8, 3, optimum_scale=3.0)) <= 1e-3


def test_lbfgs_descends_a_non_convex_valley():
    """Rosenbrock's valley (minimum 0 at (1, 1)): curvature pairs of a non-convex energy."""
    planner = make_planner("gradient", horizon=1, action_size=2, action_low=-2.0, action_high=2.0, iterations=100)

    def rosenbrock(a):
        x, y = a[0, 0], a[0, 1]
        return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2

    result = jax.jit(lambda k: planner.optimize(rosenbrock, k))(jax.random.key(0))
    assert np.all(np.diff(np.asarray(result.energy_trace)) <= 0.0)
    assert float(result.energy) < 1e-6
    np.testing.assert_allclose(result.actions[0], [1.0, 1.0], atol=1e-2)
