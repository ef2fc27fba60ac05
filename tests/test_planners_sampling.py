"""Sampling planners (`"cem"`, `"icem"`, `"mppi"`) and the `"hybrid"` planner: the closed-form LQ
optimum, bounds, jit/vmap equivalences, determinism, warm starts, traces and evaluation counts,
non-finite energies, the policy prior (also of `"gradient"`), and option checks.

Compiling a planner dominates the cost of these tests, so each planner is compiled a few times
only: one energy function covers every problem (chosen by the data it closes over), and the
compiled functions and their results are cached and shared between tests.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ami.actor import base, make_planner, planner_names, sampling
from tests.test_planner import FREE, GAIN, X0, H, M, R, lq_energy_stacked, lq_optimum

KINDS = ("cem", "icem", "mppi", "hybrid")

# ----- one family of problems over [H, M] = [10, 2] sequences in a per-dimension box -----

LOW, HIGH = np.float32([-1.0, -2.0]), np.float32([0.5, 1.0])
A_STAR, E_STAR = lq_optimum(X0)  # the linear-quadratic problem of tests/test_planner.py, in closed form
FAR = np.float32([5.0, -5.0])  # a target outside the box in both dimensions
CLIPPED = np.broadcast_to(np.float32([0.5, -2.0]), (H, M))  # its constrained optimum (the problem is separable)
E_CLIPPED = float(H * (4.5**2 + 3.0**2))  # 292.5, exact in float32
INSIDE = np.float32([0.3, 0.4])  # a target inside the box: the optimum, of energy 0
BARRIER = 0.2  # with mode BARRIER_MODE the energy is NaN where any a[t, 0] > BARRIER
# With target [0.8, 0.8] the barrier problem is separable: 2 (a - 0.8) + 0.01 / (0.2 - a) = 0 at a = 0.2 - u,
# 2 u**2 + 1.2 u - 0.01 = 0, per step and first action dimension.
U_BARRIER = (-1.2 + np.sqrt(1.2**2 + 8 * 0.01)) / 4
E_BARRIER = float(H * ((0.2 - U_BARRIER - 0.8) ** 2 - 0.01 * np.log(U_BARRIER)))
PLAIN_MODE, BARRIER_MODE, NAN_MODE = 0, 1, 2


Array = jax.Array


class Problem(NamedTuple):
    """`lq` (1: the LQ energy from `x0`, 0: `sum (a - target)**2`), `target [M]`, `mode` (a `*_MODE`)."""

    lq: Array
    x0: Array
    target: Array
    mode: Array


def problem(lq=0, x0=X0, target=FAR, mode=PLAIN_MODE):
    return Problem(jnp.int32(lq), jnp.float32(x0), jnp.float32(target), jnp.int32(mode))


def lq_energy_elementwise(x0, actions):
    """`lq_energy_stacked` with products and sums in place of matrix products, which XLA rounds
    differently with and without a batch axis; the search would amplify those differences."""
    states = jnp.sum(GAIN.astype(np.float32) * actions.reshape(-1), axis=1) + jnp.sum(
        FREE.astype(np.float32) * x0, axis=1
    )
    return jnp.sum(states**2) + R * jnp.sum(actions**2)


def family_energy(p: Problem, a):
    """The energy of `[H, M]` actions `a` in problem `p`."""
    energy = jnp.where(p.lq == 1, lq_energy_elementwise(p.x0, a), jnp.sum((a - p.target) ** 2))
    room = jnp.where(p.mode == BARRIER_MODE, BARRIER - a[:, 0], 1.0)  # log(negative) = NaN past the barrier
    energy = energy - 0.01 * jnp.sum(jnp.log(room))
    return jnp.where(p.mode == NAN_MODE, jnp.nan, energy)


def stack(items):
    return jax.tree.map(lambda *x: jnp.stack(x), *items)


def unstack(tree):
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(len(jax.tree.leaves(tree)[0]))]


# Rows solved by every planner in one vmapped call: (name, key seed, problem).
ROWS = [
    ("lq", 0, problem(lq=1)),
    ("lq_other_key", 1, problem(lq=1)),
    ("far", 0, problem()),
    ("far_other_key", 2, problem()),
    ("inside", 0, problem(target=INSIDE)),
    ("barrier", 0, problem(target=[0.8, 0.8], mode=BARRIER_MODE)),
    ("barrier_other_key", 1, problem(target=[0.8, 0.8], mode=BARRIER_MODE)),
    ("all_nan", 0, problem(mode=NAN_MODE)),
]
ROW = {name: i for i, (name, _, _) in enumerate(ROWS)}
KEYS = jnp.stack([jax.random.key(seed) for _, seed, _ in ROWS])
PROBLEMS = stack([p for _, _, p in ROWS])

OPTIONS = {  # enough search for the LQ optimum; the sampling planners are precise to a fraction of min_std
    "cem": dict(iterations=30, min_std=0.002),
    "icem": dict(iterations=30, min_std=0.002, noise_beta=1.0),
    "mppi": dict(iterations=30, noise_std=0.1),
    "hybrid": dict(population=64, elites=8, refine_iterations=200, learning_rate=0.01),
}
ITERATIONS = {"cem": 30, "icem": 30, "mppi": 30, "hybrid": 5 + 200}
EVALUATIONS = {"cem": 30 * 256, "icem": 30 * 256, "mppi": 30 * 256, "hybrid": 5 * 64 + 4 * (200 + 1)}
LQ_TOLERANCE = {  # relative energy gap, max action error
    # The LQ problem is ill-conditioned (action cost 0.1): sampling pins the energy far more
    # tightly than the actions, so the energy gap is the sharp check here.
    "cem": (5e-3, 0.5),
    "icem": (2e-2, 0.8),
    "mppi": (5e-3, 0.5),
    "hybrid": (1e-5, 5e-2),
}


@functools.cache
def planner(kind):
    return make_planner(kind, horizon=H, action_size=M, action_low=LOW, action_high=HIGH, **OPTIONS[kind])


@functools.cache
def single(kind):
    """`plan(key, problem)`, jitted."""
    optimize = planner(kind).optimize
    return jax.jit(lambda key, p: optimize(functools.partial(family_energy, p), key))


@functools.cache
def batched(kind):
    """The results of every row of `ROWS`, solved in one vmapped call."""
    return jax.jit(jax.vmap(single(kind)))(KEYS, PROBLEMS)


def row(results, name):
    return jax.tree.map(lambda x: x[ROW[name]], results)


def assert_results_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def in_box(actions):
    return bool(np.all(actions >= LOW) and np.all(actions <= HIGH))


# ----- optimum and bounds -----


@pytest.mark.parametrize("kind", KINDS)
def test_reaches_the_closed_form_lq_optimum(kind):
    assert np.all(A_STAR > LOW) and np.all(A_STAR < HIGH)  # the optimum is inside the box
    energy_tol, action_tol = LQ_TOLERANCE[kind]
    results = batched(kind)
    for name in ("lq", "lq_other_key"):
        result = row(results, name)
        assert E_STAR * (1 - 1e-5) <= result.energy <= E_STAR * (1 + energy_tol), (name, result.energy / E_STAR - 1)
        assert np.abs(result.actions - A_STAR).max() <= action_tol, name
        np.testing.assert_allclose(result.energy, lq_energy_stacked(jnp.float32(X0), result.actions), rtol=1e-5)
    inside = row(results, "inside")  # well conditioned: the actions themselves are pinned
    np.testing.assert_allclose(inside.actions, np.broadcast_to(INSIDE, (H, M)), atol=0.05 if kind != "hybrid" else 1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_actions_stay_in_bounds_and_approach_the_clipped_optimum(kind):
    results = batched(kind)
    assert in_box(results.actions)
    for name in ("far", "far_other_key"):
        result = row(results, name)
        np.testing.assert_allclose(result.actions, CLIPPED, atol=0.1)
        assert E_CLIPPED <= result.energy <= 1.01 * E_CLIPPED
        if kind == "hybrid":  # projected Adam lands exactly on the bounds
            np.testing.assert_array_equal(result.actions, CLIPPED)
            assert result.energy == E_CLIPPED


# ----- jit, vmap, keys -----


@pytest.mark.parametrize("kind", KINDS)
def test_jit_equals_no_jit(kind):
    key, p = jax.random.key(3), problem(target=INSIDE)
    eager = planner(kind).optimize(functools.partial(family_energy, p), key)
    assert_results_close(eager, single(kind)(key, p))


@pytest.mark.parametrize("kind", KINDS)
def test_vmap_over_keys_and_data_equals_a_loop(kind):
    results = batched(kind)
    looped = stack([single(kind)(key, p) for key, p in zip(KEYS, unstack(PROBLEMS), strict=True)])
    assert results.actions.shape == (len(ROWS), H, M)
    lq = np.array([ROW["lq"], ROW["lq_other_key"]])
    others = np.array([i for i in range(len(ROWS)) if i not in lq])
    assert_results_close(*(jax.tree.map(lambda x: x[others], r) for r in (results, looped)), atol=1e-5)
    # The batched energy sums round differently in the last bit; in the flat directions of the
    # ill-conditioned LQ problem the search carries such differences into the actions.
    np.testing.assert_allclose(results.energy[lq], looped.energy[lq], rtol=1e-4)
    np.testing.assert_allclose(results.actions[lq], looped.actions[lq], atol=5e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_same_key_gives_identical_results_and_different_keys_differ(kind):
    first = single(kind)(KEYS[ROW["far"]], problem())
    again = single(kind)(KEYS[ROW["far"]], problem())
    for x, y in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(x, y)
    results = batched(kind)
    for a, b in (("far", "far_other_key"), ("lq", "lq_other_key"), ("barrier", "barrier_other_key")):
        assert not np.array_equal(row(results, a).energy_trace, row(results, b).energy_trace)
    assert not np.array_equal(row(results, "lq").actions, row(results, "lq_other_key").actions)


# ----- trace and evaluations -----


@pytest.mark.parametrize("kind", KINDS)
def test_energy_trace_is_non_increasing_ends_at_the_result_and_evaluations_are_exact(kind):
    results = batched(kind)
    trace = np.asarray(results.energy_trace)
    assert trace.shape == (len(ROWS), ITERATIONS[kind])
    finite = np.array([ROW[name] for name, _, _ in ROWS if name != "all_nan"])
    assert np.all(np.diff(trace[finite], axis=1) <= 0.0)
    assert np.all(trace[finite, 0] > trace[finite, -1])
    np.testing.assert_array_equal(trace[:, -1], results.energy)
    recomputed = jax.vmap(family_energy)(PROBLEMS, results.actions)
    np.testing.assert_allclose(results.energy[finite], recomputed[finite], rtol=1e-5)
    assert results.evaluations.dtype == jnp.int32
    np.testing.assert_array_equal(results.evaluations, EVALUATIONS[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_evaluations_count_every_energy_call(kind):
    calls = []

    def counting_energy(a):
        jax.debug.callback(lambda x: calls.append(np.asarray(x).size // 3), a)  # sequences of [3, 1]
        return jnp.sum(a**2)

    options = dict(population=5, elites=2) if kind != "mppi" else dict(population=5)
    iterations = dict(proposer_iterations=2, refine_iterations=3) if kind == "hybrid" else dict(iterations=2)
    tiny = make_planner(kind, horizon=3, action_size=1, **options, **iterations)
    result = jax.jit(lambda k: tiny.optimize(counting_energy, k))(jax.random.key(4))
    jax.effects_barrier()
    expected = 2 * 5 + (4 * (3 + 1) if kind == "hybrid" else 0)  # refine_top_k = 4 by default
    assert sum(calls) == int(result.evaluations) == expected


# ----- non-finite energies -----


@pytest.mark.parametrize("kind", KINDS)
def test_nan_energies_are_never_the_result(kind):
    results = batched(kind)
    for name in ("barrier", "barrier_other_key"):
        result = row(results, name)
        assert np.isfinite(result.energy) and np.all(np.isfinite(result.energy_trace))
        assert np.all(result.actions[:, 0] < BARRIER)
        assert result.energy < 2 * E_BARRIER  # it did approach the barrier
        if kind != "hybrid":  # (Adam steps into the NaN region stall a refinement restart for good)
            assert np.all(result.actions[:, 0] > BARRIER - 0.1)
    nan = row(results, "all_nan")
    assert nan.energy == np.inf and np.all(nan.energy_trace == np.inf)
    assert np.all(np.isfinite(nan.actions)) and in_box(nan.actions)


# ----- warm starts and the policy prior -----

WORST = np.broadcast_to(np.float32([-1.0, 1.0]), (H, M))  # the corner farthest from CLIPPED
E_WORST = float(H * (6.0**2 + 6.0**2))
JUNK = np.stack([np.zeros((H, M), np.float32), np.zeros((H, M), np.float32)])
# Rows with a warm start and a prior of P = 2 sequences: (name, init, prior, problem).
WARM_ROWS = [
    ("init_at_optimum", CLIPPED, JUNK, problem()),
    ("prior_holds_optimum", WORST, np.stack([JUNK[0], CLIPPED]), problem()),
    ("neither", WORST, JUNK, problem()),
    ("prior_outside_box", WORST, np.stack([np.full((H, M), 9.0, np.float32), JUNK[0]]), problem()),
    ("init_at_lq_optimum", A_STAR.astype(np.float32), JUNK, problem(lq=1)),
]
WARM = {name: i for i, (name, _, _, _) in enumerate(WARM_ROWS)}


@functools.cache
def warm_batched(kind):
    """Every row of `WARM_ROWS` solved in one vmapped call, all with the key of seed 5."""
    if kind == "gradient":
        plan = make_planner(
            kind, horizon=H, action_size=M, action_low=LOW, action_high=HIGH, iterations=3, restarts=3,
            parameterization="clip",
        )  # fmt: skip
    else:
        plan = planner(kind)
    inits, priors = (jnp.stack([jnp.asarray(r[i]) for r in WARM_ROWS]) for i in (1, 2))
    problems = stack([r[3] for r in WARM_ROWS])

    def solve(init, prior, p):
        return plan.optimize(functools.partial(family_energy, p), jax.random.key(5), init, prior)

    return jax.jit(jax.vmap(solve))(inits, priors, problems)


def warm_row(kind, name):
    return jax.tree.map(lambda x: x[WARM[name]], warm_batched(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_warm_start_at_the_optimum_is_kept(kind):
    result = warm_row(kind, "init_at_optimum")
    assert result.energy <= E_CLIPPED
    np.testing.assert_array_equal(result.actions, CLIPPED)  # the unique minimiser, evaluated exactly
    assert result.energy_trace[0] == E_CLIPPED  # evaluated in the first iteration
    lq = warm_row(kind, "init_at_lq_optimum")
    e_init = family_energy(problem(lq=1), jnp.asarray(A_STAR, jnp.float32))  # (rounded differently under vmap)
    assert lq.energy <= lq.energy_trace[0] <= e_init * (1 + 1e-6)


@pytest.mark.parametrize("kind", (*KINDS, "gradient"))
def test_a_prior_holding_the_optimum_wins_within_one_iteration(kind):
    found = warm_row(kind, "prior_holds_optimum")
    assert found.energy_trace[0] <= E_CLIPPED  # the best after the first iteration
    np.testing.assert_array_equal(found.actions, CLIPPED)
    assert found.energy == E_CLIPPED
    neither = warm_row(kind, "neither")  # the same search without the optimum in the prior
    assert neither.energy_trace[0] > E_CLIPPED + 1.0
    assert neither.energy <= E_WORST  # no worse than the warm start
    np.testing.assert_array_equal(found.evaluations, neither.evaluations)  # the prior costs nothing extra


@pytest.mark.parametrize("kind", (*KINDS, "gradient"))
def test_warm_start_and_prior_results_stay_in_bounds(kind):
    results = warm_batched(kind)
    assert in_box(results.actions) and np.all(np.isfinite(results.energy))
    assert warm_row(kind, "prior_outside_box").energy <= E_WORST


@pytest.mark.parametrize("kind", (*KINDS, "gradient"))
def test_bad_priors_raise_naming_prior(kind):
    capacity = 8 if kind == "gradient" else (64 if kind == "hybrid" else 256)  # restarts or population
    plan = make_planner(kind, horizon=4, action_size=2, **({"population": 64} if kind == "hybrid" else {}))
    for prior in (jnp.zeros((4, 2)), jnp.zeros((2, 4, 3)), jnp.zeros((0, 4, 2)), jnp.zeros((capacity + 1, 4, 2))):
        with pytest.raises(ValueError, match="prior"):
            plan.optimize(jnp.sum, jax.random.key(0), prior=prior)


def test_population_members_mean_fresh_samples_and_prior():
    space = base.make_action_space(3, 2, -1.0, 1.0)
    rule = sampling.make_rule("cem", space, dict(sampling.CEM_DEFAULTS, elites=2))
    sampler = rule.start(jnp.full((3, 2), 0.5))._replace(std=jnp.full((3, 2), 0.1))
    prior = jnp.stack([jnp.full((3, 2), -0.8), jnp.full((3, 2), 0.9)])  # P = 2, unit coordinates
    fresh = jnp.full((6, 3, 2), -0.3)
    draw = jax.jit(
        lambda first, fresh: sampling.draw_population(rule, sampler, jax.random.key(9), first, 6, fresh, prior)
    )
    first, later = draw(jnp.bool_(True), fresh), draw(jnp.bool_(False), fresh)
    for y in (first, later):
        np.testing.assert_array_equal(y[0], sampler.mean)  # member 0: the mean itself
    np.testing.assert_array_equal(first[1:4], fresh[1:4])  # first iteration: the fresh samples ...
    np.testing.assert_array_equal(first[4:], prior)  # ... and the prior exactly
    np.testing.assert_array_equal(later[4:], jnp.clip(later[4:], -1.0, 1.0))
    assert 0.0 < np.abs(later[4:] - prior).max() < 0.5  # later: prior + std * noise (std 0.1), clipped
    assert 0.0 < np.abs(later[1:4] - sampler.mean).max() < 0.5  # and the others around the mean
    np.testing.assert_array_equal(draw(jnp.bool_(False), None)[1:], later[1:])  # fresh matters only first


# ----- pieces: noise, MPPI weights, the iCEM update -----


@pytest.mark.parametrize("horizon", [1, 2, 10])
def test_coloured_noise_has_unit_variance_and_the_asked_correlation(horizon):
    white, red = jax.jit(lambda k: [sampling.coloured_noise(k, (20000, horizon), b) for b in (0.0, 2.0)])(
        jax.random.key(12)
    )
    assert white.shape == red.shape == (20000, horizon)
    np.testing.assert_allclose(np.var(white, axis=0), 1.0, atol=0.05)
    np.testing.assert_allclose(np.var(red, axis=0), 1.0, atol=0.05)
    if horizon >= 7:
        assert abs(np.corrcoef(white[:, 0], white[:, 1])[0, 1]) < 0.05
        assert np.corrcoef(red[:, 0], red[:, 1])[0, 1] > 0.5


def test_mppi_weights_are_scale_free_and_ignore_non_finite_energies():
    energies = jnp.array([3.0, 1.0, 2.0, 5.0, 4.0])
    weights = sampling.mppi_weights(energies, 0.5)
    np.testing.assert_allclose(weights, sampling.mppi_weights(7.0 * energies - 100.0, 0.5), rtol=1e-5)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
    # scale = median - min = 3 - 1 = 2: w_i / w_best = exp(-(E_i - 1) / (0.5 * 2))
    np.testing.assert_allclose(weights / weights[1], np.exp(-(np.asarray(energies) - 1.0)), rtol=1e-5)
    masked = sampling.mppi_weights(jnp.array([jnp.inf, 1.0, 2.0, 3.0, jnp.inf]), 0.5)
    assert masked[0] == 0.0 and masked[4] == 0.0 and masked[1] > masked[2] > masked[3] > 0.0
    np.testing.assert_array_equal(sampling.mppi_weights(jnp.full((4,), jnp.inf), 0.5), 0.0)
    np.testing.assert_allclose(sampling.mppi_weights(jnp.full((4,), 2.0), 0.5), 0.25)


def test_icem_update_selects_elites_from_the_population_and_the_kept_ones():
    options = dict(elites=2, momentum=0.0, min_std=0.0)
    kept = jnp.full((1, 1, 1), 0.9)
    sampler = sampling.Sampler(jnp.zeros((1, 1)), jnp.ones((1, 1)), kept, jnp.array([-1.0]))
    y = jnp.array([0.1, 0.3, -0.5, 0.7]).reshape(4, 1, 1)
    updated = sampling.cem_update(options, 1, sampler, y, jnp.array([2.0, 0.0, 1.0, 3.0]))
    # elites: the kept one (energy -1) and y[1] (energy 0)
    np.testing.assert_allclose(updated.mean, [[0.6]], rtol=1e-6)
    np.testing.assert_allclose(updated.std, [[0.3]], rtol=1e-6)
    np.testing.assert_array_equal(updated.kept, kept)
    np.testing.assert_array_equal(updated.kept_energy, [-1.0])


# ----- options -----


@pytest.mark.parametrize(
    "kind, options, option",
    [
        ("cem", dict(iterations=0), "iterations"),
        ("cem", dict(population=0), "population"),
        ("cem", dict(elites=0), "elites"),
        ("cem", dict(population=8, elites=9), "elites"),
        ("cem", dict(momentum=1.0), "momentum"),
        ("cem", dict(momentum=-0.1), "momentum"),
        ("cem", dict(init_std=0.0), "init_std"),
        ("cem", dict(min_std=-0.1), "min_std"),
        ("cem", dict(init="gaussian"), "init"),
        ("cem", dict(temperature=0.1), "temperature"),
        ("icem", dict(noise_beta=-1.0), "noise_beta"),
        ("icem", dict(keep_elites=1.5), "keep_elites"),
        ("icem", dict(iterations=2.5), "iterations"),
        ("mppi", dict(temperature=0.0), "temperature"),
        ("mppi", dict(noise_std=0.0), "noise_std"),
        ("mppi", dict(momentum=1.0), "momentum"),
        ("mppi", dict(elites=4), "elites"),
        ("hybrid", dict(proposer="random"), "proposer"),
        ("hybrid", dict(proposer_iterations=0), "proposer_iterations"),
        ("hybrid", dict(refine_iterations=0), "refine_iterations"),
        ("hybrid", dict(refine_top_k=0), "refine_top_k"),
        ("hybrid", dict(population=8, elites=4, refine_top_k=9), "refine_top_k"),
        ("hybrid", dict(learning_rate=0.0), "learning_rate"),
        ("hybrid", dict(parameterization="sigmoid"), "parameterization"),
        ("hybrid", dict(proposer="mppi", elites=4), "elites"),
        ("hybrid", dict(proposer="cem", noise_beta=2.0), "noise_beta"),
        ("hybrid", dict(proposer="icem", keep_elites=2.0), "keep_elites"),
        ("hybrid", dict(population=16, elites=32), "elites"),
        ("hybrid", dict(iterations=10), "iterations"),
    ],
)
def test_bad_options_raise_naming_the_option(kind, options, option):
    with pytest.raises(ValueError, match=option):
        make_planner(kind, horizon=4, action_size=2, **options)


def test_all_planners_are_registered_with_their_defaults():
    assert {"cem", "icem", "mppi", "hybrid", "gradient"} <= set(planner_names())
    cem = dict(make_planner("cem", horizon=2, action_size=1).options)
    assert cem == dict(iterations=10, population=256, elites=32, momentum=0.1, init_std=0.5, min_std=0.05, init="zeros")
    icem = dict(make_planner("icem", horizon=2, action_size=1).options)
    assert icem == {**cem, "noise_beta": 2.0, "keep_elites": 0.3}
    mppi = dict(make_planner("mppi", horizon=2, action_size=1).options)
    assert mppi == dict(iterations=10, population=256, temperature=0.1, noise_std=0.5, momentum=0.0, init="zeros")
    hybrid = dict(make_planner("hybrid", horizon=2, action_size=1, proposer="icem").options)
    assert hybrid["refine_top_k"] == 4 and hybrid["population"] is None
    hash(make_planner("hybrid", horizon=2, action_size=1, proposer="icem"))  # static settings are hashable
