"""Planners (`ami.actor`): the gradient planner against a closed-form optimum, bounds, jit/vmap
equivalences, warm starts, non-finite energies, option checks, and `shift_plan`."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ami.actor import base, gradient, make_planner, planner_names, shift_plan

# ----- a linear-quadratic problem with a closed-form optimum -----

H, N, M, R = 10, 3, 2, 0.1  # horizon, state size, action size, action cost
A_DYN = np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.0, 0.0, 0.9]])
B_DYN = np.array([[0.5, 0.0], [0.2, -0.4], [0.0, 0.6]])
X0 = np.array([1.0, -2.0, 0.5])


def stacked_dynamics():
    """`gain [H*N, H*M]`, `free [H*N, N]`: the states x_1..x_H, stacked, are `gain @ vec(a) + free @ x0`."""
    gain, free = np.zeros((H * N, H * M)), np.zeros((H * N, N))
    for t in range(H):
        free[t * N : (t + 1) * N] = np.linalg.matrix_power(A_DYN, t + 1)
        for s in range(t + 1):
            gain[t * N : (t + 1) * N, s * M : (s + 1) * M] = np.linalg.matrix_power(A_DYN, t - s) @ B_DYN
    return gain, free


GAIN, FREE = stacked_dynamics()


def lq_energy(x0, actions):
    """sum_t ||x_{t+1}||^2 + R ||a_t||^2 with x_{t+1} = A x_t + B a_t, stepped by `lax.scan`; actions [H, M]."""

    def step(x, a):
        x = A_DYN @ x + B_DYN @ a
        return x, jnp.sum(x**2) + R * jnp.sum(a**2)

    _, costs = jax.lax.scan(step, jnp.asarray(x0, jnp.float32), actions)
    return jnp.sum(costs)


def lq_energy_stacked(x0, actions):
    """The same energy through the stacked matrices (compiles faster than the scan)."""
    states = GAIN.astype(np.float32) @ actions.reshape(-1) + FREE.astype(np.float32) @ x0
    return jnp.sum(states**2) + R * jnp.sum(actions**2)


def lq_optimum(x0):
    """The unconstrained minimiser [H, M] and its energy, from the normal equations (float64)."""
    offset = FREE @ x0
    a = -np.linalg.solve(GAIN.T @ GAIN + R * np.eye(H * M), GAIN.T @ offset)
    return a.reshape(H, M), float(np.sum((GAIN @ a + offset) ** 2) + R * np.sum(a**2))


def test_the_two_lq_energies_agree():
    actions = jax.random.normal(jax.random.key(0), (H, M))
    for x0 in (X0, -2 * X0):
        np.testing.assert_allclose(lq_energy(x0, actions), lq_energy_stacked(x0, actions), rtol=1e-5)


def lq_planner(**options):
    settings = dict(horizon=H, action_size=M, action_low=-10.0, action_high=10.0, restarts=2)
    return make_planner("gradient", **{**settings, **options})


def energy_of(x0):
    return lambda a: lq_energy_stacked(jnp.asarray(x0, jnp.float32), a)


def plan(planner, energy_fn, key, init=None):
    """`planner.optimize(energy_fn, key, init)`, compiled (eager dispatch is slow on CPU)."""
    return jax.jit(lambda k, i: planner.optimize(energy_fn, k, i))(key, init)


@pytest.mark.parametrize(
    "options",
    [
        dict(parameterization="tanh", grad_clip=10.0),
        dict(parameterization="clip", grad_clip=10.0),
        dict(parameterization="tanh", grad_clip=10.0, init="constant"),
        dict(parameterization="tanh", init="zeros"),
        dict(parameterization="clip", init="zeros"),
    ],
)
def test_gradient_planner_finds_the_closed_form_lq_optimum(options):
    # Starts far out in the +-10 box meet gradients ~100x those near the optimum; without
    # `grad_clip` Adam's second-moment memory of them then slows the last approach.
    a_star, e_star = lq_optimum(X0)
    assert 1.0 < np.abs(a_star).max() < 5.0  # interior to the +-10 box, and not trivial
    planner = lq_planner(iterations=400, learning_rate=0.01, **options)
    result = plan(planner, lambda a: lq_energy(X0, a), jax.random.key(0))
    assert result.energy >= e_star * (1 - 1e-5)  # nothing beats the true optimum (float32 slack)
    np.testing.assert_allclose(result.energy, e_star, rtol=1e-4)
    np.testing.assert_allclose(result.actions, a_star, atol=1e-2)
    np.testing.assert_allclose(result.energy, lq_energy(X0, result.actions), rtol=1e-6)


# ----- bounds -----


def target_energy(target):
    return lambda a: jnp.sum((a - target) ** 2)


@pytest.mark.parametrize("parameterization, gap", [("clip", 1e-6), ("tanh", 1e-2)])
def test_result_stays_inside_per_dimension_bounds_and_reaches_them(parameterization, gap):
    # tanh only approaches a bound: its gradient vanishes there (gap: fraction of the half-range).
    low, high = np.array([-1.0, -0.5]), np.array([0.5, 2.0])
    target = jnp.array([5.0, -5.0])  # outside the box in both dimensions
    planner = make_planner(
        "gradient", horizon=4, action_size=2, action_low=low, action_high=high, iterations=200, restarts=3,
        parameterization=parameterization,
    )  # fmt: skip
    actions = plan(planner, target_energy(target), jax.random.key(1)).actions
    assert np.all(actions >= low) and np.all(actions <= high)
    np.testing.assert_allclose(actions, np.broadcast_to([0.5, -0.5], (4, 2)), atol=gap * 1.25)


@pytest.mark.parametrize("parameterization", ["clip", "tanh"])
def test_scalar_bounds_hold_for_every_key(parameterization):
    planner = make_planner(
        "gradient", horizon=3, action_size=2, action_low=-0.2, action_high=0.3, iterations=20,
        parameterization=parameterization,
    )  # fmt: skip
    results = jax.jit(jax.vmap(lambda k: planner.optimize(target_energy(jnp.array([-3.0, 3.0])), k)))(
        jax.random.split(jax.random.key(2), 5)
    )
    assert np.all(results.actions >= -0.2) and np.all(results.actions <= 0.3)
    if parameterization == "clip":  # projection lands exactly on the bound
        np.testing.assert_array_equal(results.actions, np.broadcast_to(np.float32([-0.2, 0.3]), (5, 3, 2)))


# ----- jit, vmap, determinism -----

SMALL = dict(iterations=15, restarts=3, learning_rate=0.05)
# L-BFGS's line search turns float rounding (jit vs eager, batched vs single matmuls) into
# slightly different accepted steps; the results still agree to these tolerances.
TOLERANCES = {"adam": dict(rtol=1e-5, atol=1e-6), "lbfgs": dict(rtol=1e-3, atol=1e-4)}
OPTIMIZERS = pytest.mark.parametrize("optimizer", sorted(TOLERANCES))


def assert_results_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@OPTIMIZERS
def test_jit_equals_no_jit(optimizer):
    planner = lq_planner(**SMALL, optimizer=optimizer)
    key = jax.random.key(3)
    eager = planner.optimize(energy_of(X0), key)
    jitted = jax.jit(lambda k: planner.optimize(energy_of(X0), k))(key)
    assert_results_close(eager, jitted, **TOLERANCES[optimizer])


@OPTIMIZERS
def test_vmap_over_keys_equals_a_loop(optimizer):
    planner = lq_planner(**SMALL, optimizer=optimizer)
    keys = jax.random.split(jax.random.key(4), 3)
    single = jax.jit(lambda k: planner.optimize(energy_of(X0), k))
    batched = jax.jit(jax.vmap(single))(keys)
    looped = [single(k) for k in keys]
    assert batched.actions.shape == (3, H, M) and batched.energy_trace.shape == (3, SMALL["iterations"])
    assert_results_close(batched, jax.tree.map(lambda *x: np.stack(x), *looped), **TOLERANCES[optimizer])
    assert not np.allclose(batched.actions[0], batched.actions[1])  # the key matters


@OPTIMIZERS
def test_vmap_over_energy_data_equals_a_loop(optimizer):
    planner = lq_planner(**SMALL, optimizer=optimizer)
    x0s = jnp.array([X0, -X0, 2 * X0], jnp.float32)
    key = jax.random.key(5)
    single = jax.jit(lambda x0: planner.optimize(energy_of(x0), key))
    batched = jax.jit(jax.vmap(single))(x0s)
    looped = [single(x0) for x0 in x0s]
    assert_results_close(batched, jax.tree.map(lambda *x: np.stack(x), *looped), **TOLERANCES[optimizer])
    assert not np.allclose(batched.energy[0], batched.energy[2])  # the data matters


def test_same_key_gives_identical_results_and_optimize_traces_once():
    planner = lq_planner(**SMALL)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def plan(k):
        return planner.optimize(energy_of(X0), k)

    first, second = plan(jax.random.key(6)), plan(jax.random.key(6))
    for x, y in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        np.testing.assert_array_equal(x, y)
    plan(jax.random.key(7))  # a new key does not retrace


# ----- warm starts -----


def test_warm_start_at_the_optimum_is_kept_after_one_iteration():
    a_star, _ = lq_optimum(X0)
    for parameterization in ("tanh", "clip"):
        planner = lq_planner(iterations=1, restarts=4, parameterization=parameterization)
        result = plan(planner, energy_of(X0), jax.random.key(8), init=a_star)
        init_energy = float(energy_of(X0)(jnp.asarray(a_star, jnp.float32)))
        assert result.energy <= init_energy * (1 + 1e-6), parameterization


def test_warm_start_beats_cold_start_on_a_small_budget():
    a_star, _ = lq_optimum(X0)
    near = a_star + 0.3 * np.random.default_rng(0).normal(size=a_star.shape)
    planner = lq_planner(iterations=5, restarts=4, learning_rate=0.02)
    key = jax.random.key(9)
    warm = plan(planner, energy_of(X0), key, init=near)
    cold = plan(planner, energy_of(X0), key)
    assert warm.energy < cold.energy
    assert warm.energy <= energy_of(X0)(jnp.asarray(near, jnp.float32))


def test_start_sequences_mix_the_warm_start_noise_and_fresh_samples():
    space = base.make_action_space(5, 2, -2.0, 2.0)
    init = jnp.linspace(-2.0, 2.0, 10).reshape(5, 2)
    starts = jax.jit(lambda k: base.start_unit_sequences(k, space, 9, "uniform", init, noise=0.01))(jax.random.key(10))
    unit_init = init / 2.0
    noisy = base.num_noisy_starts(9)
    assert noisy == 2
    np.testing.assert_array_equal(starts[0], unit_init)
    np.testing.assert_allclose(starts[1 : 1 + noisy], np.broadcast_to(unit_init, (noisy, 5, 2)), atol=0.06)
    assert not np.allclose(starts[1], unit_init)
    assert np.all(np.abs(starts[1 + noisy :] - unit_init).max(axis=(1, 2)) > 0.1)  # fresh draws
    assert np.all(np.abs(starts) <= 1.0)


def test_initial_sequence_schemes():
    space = base.make_action_space(6, 3, -1.0, 1.0)
    key = jax.random.key(11)
    uniform, constant, zeros = jax.jit(
        lambda k: [base.sample_unit_sequences(k, space, 4, scheme) for scheme in ("uniform", "constant", "zeros")]
    )(key)
    assert uniform.shape == constant.shape == zeros.shape == (4, 6, 3)
    assert np.all(np.abs(uniform) <= 1.0) and np.std(uniform[:, 0] - uniform[:, 1]) > 0.1
    np.testing.assert_array_equal(constant, np.broadcast_to(constant[:, :1], constant.shape))
    np.testing.assert_array_equal(zeros, 0.0)


def test_tanh_warm_start_on_the_bounds_stays_finite():
    planner = make_planner("gradient", horizon=3, action_size=1, iterations=5, restarts=2)
    init = jnp.array([[-1.0], [1.0], [1.0]])
    result = plan(planner, lambda a: jnp.sum((a - 0.2) ** 2), jax.random.key(12), init=init)
    assert np.all(np.isfinite(result.actions)) and np.isfinite(result.energy)
    assert result.energy <= jnp.sum((init - 0.2) ** 2)


# ----- non-finite energies -----


def log_barrier_energy(a):
    """Finite only where every a[t, 0] < 0.5 (NaN energy and gradient elsewhere); minimum near the barrier."""
    return jnp.sum((a - 0.8) ** 2) - 0.01 * jnp.sum(jnp.log(0.5 - a[:, 0]))


@pytest.mark.parametrize("parameterization", ["tanh", "clip"])
def test_nan_energies_are_never_the_result(parameterization):
    planner = make_planner(
        "gradient", horizon=3, action_size=2, iterations=40, restarts=8, init="constant",
        parameterization=parameterization,
    )  # fmt: skip
    keys = jax.random.split(jax.random.key(13), 4)
    results = jax.jit(jax.vmap(lambda k: planner.optimize(log_barrier_energy, k)))(keys)
    assert np.all(np.isfinite(results.energy)) and np.all(np.isfinite(results.energy_trace))
    assert np.all(results.actions[..., 0] < 0.5)
    np.testing.assert_allclose(results.energy, jax.vmap(log_barrier_energy)(results.actions), rtol=1e-5)


def test_all_nan_energy_gives_inf_and_actions_in_bounds():
    planner = make_planner("gradient", horizon=3, action_size=2, iterations=3, restarts=2)
    result = plan(planner, lambda a: jnp.sum(a) * jnp.nan, jax.random.key(14))
    assert result.energy == np.inf and np.all(result.energy_trace == np.inf)
    assert np.all(np.abs(result.actions) <= 1.0)


def test_nan_gradient_step_is_skipped():
    def energy(a):  # finite energy everywhere; NaN gradient where a[0, 0] <= 0.9
        kink = jnp.where(a[0, 0] > 0.9, jnp.sqrt(a[0, 0] - 0.9), 0.0)
        return jnp.sum((a - 0.3) ** 2) + kink

    init = jnp.full((2, 2), -0.5)
    planner = make_planner("gradient", horizon=2, action_size=2, iterations=5, restarts=1, parameterization="clip")
    result = plan(planner, energy, jax.random.key(15), init=init)
    assert np.isfinite(result.energy)
    np.testing.assert_allclose(result.actions, init, atol=1e-6)


def test_a_non_finite_start_stays_put():
    def evaluate(u):  # a quadratic whose gradient is NaN where u[0, 0] > 0.5
        energy, grad = jax.value_and_grad(lambda v: jnp.sum((v - 2.0) ** 2))(u)
        return energy, jnp.where(u[0, 0] > 0.5, jnp.nan, grad)

    optimizer = gradient.make_optimizer(dict(learning_rate=0.1, grad_clip=None))
    step = jax.jit(lambda r: gradient.step_restart(evaluate, optimizer, lambda u: u, r))
    inside = step(gradient.init_restart(evaluate, optimizer, jnp.zeros((2, 2))))
    np.testing.assert_allclose(inside.u, 0.1, rtol=1e-5)  # a finite step: Adam moves every entry by lr
    stuck = gradient.init_restart(evaluate, optimizer, jnp.ones((2, 2)))
    after = step(stuck)
    for x, y in zip(
        jax.tree.leaves((after.u, after.opt_state)), jax.tree.leaves((stuck.u, stuck.opt_state)), strict=True
    ):
        np.testing.assert_array_equal(x, y)
    assert np.all(np.isfinite(after.u)) and after.scale == 0.5


def test_a_restart_returns_from_a_nan_region_and_keeps_descending():
    def evaluate(u):  # minimum at 2.0, but energy and gradient are NaN where u[0, 0] > 0.5
        energy, grad = jax.value_and_grad(lambda v: jnp.sum((v - 2.0) ** 2))(u)
        bad = u[0, 0] > 0.5
        return base.safe_energy(jnp.where(bad, jnp.nan, energy)), jnp.where(bad, jnp.nan, grad)

    optimizer = gradient.make_optimizer(dict(learning_rate=0.3, grad_clip=None))
    step = jax.jit(lambda r: gradient.step_restart(evaluate, optimizer, lambda u: u, r))
    r = gradient.init_restart(evaluate, optimizer, jnp.zeros((2, 2)))
    r = step(step(r))  # 0 -> 0.3 -> 0.6: into the NaN region
    assert r.energy == np.inf and r.best_u[0, 0] == pytest.approx(0.3, rel=1e-5)
    back = step(r)
    np.testing.assert_allclose(back.u, r.best_u)  # back at the best iterate, half the step size
    assert back.scale == 0.5 and np.isfinite(back.energy)
    for _ in range(40):
        r = step(r)
    # Adam moves every entry alike; all creep up to the edge of the NaN region (a restart that
    # stayed where the energy is undefined would keep its best at 0.3)
    assert np.all((r.best_u > 0.49) & (r.best_u <= 0.5)) and np.isfinite(r.best_energy)


# ----- trace and evaluation count -----


@pytest.mark.parametrize("restarts, iterations", [(1, 7), (5, 12)])
def test_energy_trace_is_non_increasing_and_evaluations_are_exact(restarts, iterations):
    planner = lq_planner(restarts=restarts, iterations=iterations, learning_rate=0.05)
    result = plan(planner, energy_of(X0), jax.random.key(16))
    trace = np.asarray(result.energy_trace)
    assert trace.shape == (iterations,)
    assert np.all(np.diff(trace) <= 0.0)
    assert trace[0] > trace[-1]
    assert trace[-1] == result.energy
    assert result.evaluations.dtype == jnp.int32 and int(result.evaluations) == restarts * (iterations + 1)


def test_evaluations_count_every_energy_call():
    calls = []

    def counting_energy(a):
        jax.debug.callback(lambda x: calls.append(np.asarray(x).reshape(-1, 2).shape[0]), a)
        return jnp.sum(a**2)

    planner = make_planner("gradient", horizon=2, action_size=1, iterations=4, restarts=3)
    result = plan(planner, counting_energy, jax.random.key(17))
    jax.effects_barrier()
    assert sum(calls) == int(result.evaluations) == 15


# ----- options -----


@pytest.mark.parametrize(
    "options, option",
    [
        (dict(horizon=0), "horizon"),
        (dict(action_size=0), "action_size"),
        (dict(iterations=0), "iterations"),
        (dict(iterations=2.5), "iterations"),
        (dict(restarts=0), "restarts"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=-0.1), "learning_rate"),
        (dict(action_low=1.0, action_high=1.0), "action_low"),
        (dict(action_low=np.array([-1.0, 2.0]), action_high=1.0), "action_low"),
        (dict(action_high=np.ones(3)), "action_high"),
        (dict(parameterization="sigmoid"), "parameterization"),
        (dict(init="gaussian"), "init"),
        (dict(init_noise=-0.1), "init_noise"),
        (dict(grad_clip=0.0), "grad_clip"),
        (dict(lr=0.1), "lr"),
    ],
)
def test_bad_options_raise_naming_the_option(options, option):
    settings = {**dict(horizon=4, action_size=2), **options}
    with pytest.raises(ValueError, match=option):
        make_planner("gradient", **settings)


def test_unknown_planner_lists_the_known_ones():
    assert "gradient" in planner_names()
    with pytest.raises(ValueError, match="gradient"):
        make_planner("gradiant", horizon=4, action_size=2)


def test_planner_record_holds_the_settings():
    planner = make_planner("gradient", horizon=4, action_size=2, action_low=[-1.0, 0.0], restarts=3)
    assert (planner.name, planner.horizon, planner.action_size) == ("gradient", 4, 2)
    assert planner.space.low == (-1.0, 0.0) and planner.space.high == (1.0, 1.0)
    assert dict(planner.options)["restarts"] == 3 and dict(planner.options)["iterations"] == 50
    hash(planner)  # static settings: usable as a jit static argument


def test_bad_energy_or_init_shapes_raise():
    planner = make_planner("gradient", horizon=4, action_size=2, iterations=2, restarts=2)
    with pytest.raises(ValueError, match="scalar"):
        plan(planner, lambda a: jnp.sum(a, axis=0), jax.random.key(0))
    with pytest.raises(ValueError, match="init"):
        plan(planner, lambda a: jnp.sum(a), jax.random.key(0), init=jnp.zeros((3, 2)))


# ----- shift_plan -----

PLAN = jnp.arange(8.0).reshape(4, 2)  # rows [0, 1], [2, 3], [4, 5], [6, 7]


@pytest.mark.parametrize(
    "k, fill, expected",
    [
        (0, "last", [[0, 1], [2, 3], [4, 5], [6, 7]]),
        (1, "last", [[2, 3], [4, 5], [6, 7], [6, 7]]),
        (3, "last", [[6, 7], [6, 7], [6, 7], [6, 7]]),
        (9, "last", [[6, 7], [6, 7], [6, 7], [6, 7]]),
        (2, "zeros", [[4, 5], [6, 7], [0, 0], [0, 0]]),
        (4, "zeros", [[0, 0], [0, 0], [0, 0], [0, 0]]),
        (1, np.array([-1.0, 9.0]), [[2, 3], [4, 5], [6, 7], [-1, 9]]),
    ],
)
def test_shift_plan_exact_values(k, fill, expected):
    np.testing.assert_array_equal(shift_plan(PLAN, k, fill), np.array(expected, np.float32))
    traced = jax.jit(lambda k: shift_plan(PLAN, k, fill))(jnp.int32(k))
    np.testing.assert_array_equal(traced, np.array(expected, np.float32))


def test_shift_plan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k"):
        shift_plan(PLAN, -1)
    with pytest.raises(ValueError, match="fill"):
        shift_plan(PLAN, 1, "first")
    with pytest.raises(ValueError, match="shape"):
        shift_plan(PLAN[0], 1)
