"""Energy landscapes (`ami.diagnostics.landscape`): slices through a plan, learned-vs-true gradient cosines,
detection of non-finite and exploding true gradients with the fallback planner, and `ami plan`
end to end on a tiny trained run."""

from __future__ import annotations

import json
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ami import cli
from ami.actor import PlanResult, make_planner, planner_names
from ami.actor.base import ActionSpace, Planner, from_unit, safe_energy
from ami.diagnostics import landscape as ls
from tests.test_train_e2e import QUICKSTART, TINY  # the tiny training settings of the e2e tests

H, A = 4, 2
TARGET = jnp.linspace(-0.6, 0.6, H * A).reshape(H, A)


def smooth_energy(actions):
    """A non-quadratic energy `[H, A] -> []` with its minimum at `TARGET`."""
    diff = actions - TARGET
    return jnp.sum(diff**2) + 0.3 * jnp.sum(jnp.tanh(diff) ** 2) + 0.1 * jnp.sum(diff[1:] * diff[:-1])


def nan_gradient_energy(actions):
    """`smooth_energy` plus `sqrt(0)`: the value is finite, the gradient is NaN everywhere (inf * 0)."""
    return smooth_energy(actions) + jnp.sqrt(jnp.sum((0.0 * actions) ** 2))


def exploding_energy(actions):
    return 1e9 * smooth_energy(actions)


PLAN = jax.random.uniform(jax.random.key(0), (H, A), minval=-1.0, maxval=1.0)


# ----- slices -----


def test_slices_pass_through_the_plan_at_alpha_zero():
    alphas = jnp.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    d1, d2 = ls.coordinate_direction((H, A), 0, 0), ls.random_directions(jax.random.key(1), (H, A), 1)[0]
    at_plan = jax.jit(smooth_energy)(PLAN)
    for d in (d1, d2):
        line = jax.jit(ls.slice_1d, static_argnums=0)(smooth_energy, PLAN, d, alphas)
        assert line.shape == (5,) and line[2] == at_plan
        np.testing.assert_allclose(line[4], smooth_energy(PLAN + d), rtol=1e-6)
    plane = jax.jit(ls.slice_2d, static_argnums=0)(smooth_energy, PLAN, d1, d2, alphas)
    assert plane.shape == (5, 5)
    assert plane[2, 2] == ls.slice_1d(smooth_energy, PLAN, d1, alphas)[2] == at_plan
    np.testing.assert_allclose(plane[:, 2], ls.slice_1d(smooth_energy, PLAN, d1, alphas), rtol=1e-6)
    np.testing.assert_allclose(plane[2, :], ls.slice_1d(smooth_energy, PLAN, d2, alphas), rtol=1e-6)
    np.testing.assert_allclose(plane[0, 4], smooth_energy(PLAN - d1 + d2), rtol=1e-6)


def test_directions():
    np.testing.assert_array_equal(ls.coordinate_direction((H, A), 0, 1), np.eye(H * A)[1].reshape(H, A))
    dirs = ls.random_directions(jax.random.key(2), (H, A), 3)
    assert dirs.shape == (3, H, A)
    np.testing.assert_allclose(jnp.sqrt(jnp.mean(dirs**2, axis=(1, 2))), 1.0, rtol=1e-6)
    toward = ls.toward_first_action(PLAN, jnp.array([0.25, -0.5]))
    np.testing.assert_allclose((PLAN + toward)[0], [0.25, -0.5], rtol=1e-6)
    np.testing.assert_array_equal((PLAN + toward)[1:], PLAN[1:])
    boxed = ls.boxed(smooth_energy)
    assert boxed(PLAN) == smooth_energy(PLAN) and boxed(PLAN + 5.0) == smooth_energy(jnp.ones((H, A)))


def test_best_first_action_on_two_rooms_moves_along_the_geodesic():
    import envs

    env = envs.make("two_rooms", auto_reset=False)
    state = env.reset(jax.random.key(0))
    state = state.replace(obs=jnp.array([-0.5, 0.0]), info={**state.info, "goal_obs": jnp.array([-0.5, 0.5])})
    state = state.replace(pipeline_state=state.obs)
    np.testing.assert_allclose(ls.best_first_action(env, state), [0.0, 1.0], atol=1e-6)  # straight up
    assert ls.best_first_action(envs.make("pendulum"), envs.make("pendulum").reset(jax.random.key(0))) is None


# ----- gradients -----


def test_cosine_of_identical_energies_is_one_and_of_negated_ones_minus_one():
    same = ls.compare_gradients(smooth_energy, smooth_energy, PLAN)
    opposite = ls.compare_gradients(smooth_energy, lambda a: -smooth_energy(a), PLAN)
    np.testing.assert_allclose(same.cosine, 1.0, rtol=1e-6)
    np.testing.assert_allclose(opposite.cosine, -1.0, rtol=1e-6)
    assert same.learned_norm == same.true_norm > 0
    assert not (same.nonfinite or same.exploding or opposite.nonfinite or opposite.exploding)
    np.testing.assert_allclose(ls.cosine(jnp.array([1.0, 0.0]), jnp.array([1.0, 1.0])), 2**-0.5, rtol=1e-6)


def test_nonfinite_and_exploding_true_gradients_are_detected_and_left_out_of_the_cosine():
    assert jnp.isfinite(nan_gradient_energy(PLAN)) and jnp.all(jnp.isnan(jax.grad(nan_gradient_energy)(PLAN)))
    nan = ls.compare_gradients(smooth_energy, nan_gradient_energy, PLAN)
    assert nan.nonfinite and not nan.exploding and jnp.isnan(nan.cosine)
    big = ls.compare_gradients(smooth_energy, exploding_energy, PLAN)
    assert big.exploding and not big.nonfinite and jnp.isnan(big.cosine) and big.true_norm > ls.MAX_NORM
    relative = ls.compare_gradients(smooth_energy, lambda a: 2e4 * smooth_energy(a), PLAN)
    assert relative.exploding and relative.true_norm < ls.MAX_NORM  # 2e4 > MAX_RATIO times the learned norm
    plans = jnp.stack([PLAN, -PLAN, 0.5 * PLAN, PLAN, PLAN])
    flat = lambda a: 0.0 * jnp.sum(a)  # noqa: E731  (a zero gradient: no direction to compare)
    true_fns = (smooth_energy, nan_gradient_energy, exploding_energy, lambda a: -smooth_energy(a), flat)
    checks = [ls.compare_gradients(smooth_energy, f, p) for f, p in zip(true_fns, plans, strict=True)]
    summary = ls.gradient_summary(jax.tree.map(lambda *x: jnp.stack(x), *checks))
    counts = ("count", "valid", "nonfinite", "exploding", "zero")
    assert tuple(summary[k] for k in counts) == (5, 2, 1, 1, 1)
    assert summary["nonfinite_fraction"] == summary["exploding_fraction"] == 0.2
    np.testing.assert_allclose([summary["cosine_mean"], summary["cosine_median"]], [0.0, 0.0], atol=1e-6)
    assert np.isnan(summary["cosine"][1:3]).all() and np.isnan(summary["cosine"][4])


def shooting_planner(num: int = 512) -> Planner:
    """A gradient-free stand-in for CEM: the best of `num` uniform sequences (one iteration)."""
    space = ActionSpace(H, A, (-1.0,) * A, (1.0,) * A)

    def optimize(energy_fn, key, init=None, prior=None):
        del init, prior
        candidates = from_unit(space, jax.random.uniform(key, (num, H, A), minval=-1.0, maxval=1.0))
        energies = safe_energy(jax.vmap(energy_fn)(candidates))
        best = jnp.argmin(energies)
        return PlanResult(candidates[best], energies[best], energies[best][None], jnp.int32(num))

    return Planner("shooting", space, (), optimize)


def family(theta, actions):
    """`scale * smooth_energy + sqrt(sum((mask * a)^2))` for `theta = (scale, mask)`: one compiled
    planner serves every case. `mask = 0`: the `nan_gradient_energy` (NaN gradient, finite value)."""
    scale, mask = theta
    return scale * smooth_energy(actions) + jnp.sqrt(jnp.sum((mask * actions) ** 2))


HEALTHY, NAN_GRADIENT, EXPLODING = jnp.array([1.0, 1.0]), jnp.array([1.0, 0.0]), jnp.array([1e9, 1.0])


def test_a_gradient_planner_falls_back_to_sampling_where_the_gradient_is_unhealthy():
    # Adam: compared bit for bit with the plain planner compiled apart (L-BFGS line search amplifies rounding)
    gradient = make_planner("gradient", horizon=H, action_size=A, iterations=20, restarts=2, optimizer="adam")
    fallback, key = shooting_planner(), jax.random.key(3)
    guarded = jax.jit(lambda theta: ls.guarded_optimize(gradient, fallback, partial(family, theta), key))
    plain = jax.jit(lambda theta: gradient.optimize(partial(family, theta), key))
    backup = jax.jit(lambda theta: fallback.optimize(partial(family, theta), key))(NAN_GRADIENT)
    bad, used = guarded(NAN_GRADIENT)
    stuck = plain(NAN_GRADIENT)  # every step skipped: the best of the starting points
    assert used and jnp.all(jnp.isnan(jax.grad(partial(family, NAN_GRADIENT))(stuck.actions)))
    np.testing.assert_array_equal(bad.actions, backup.actions)
    assert bad.energy == backup.energy < stuck.energy
    assert bad.energy_trace.shape == (20,) and jnp.all(bad.energy_trace == backup.energy)
    assert bad.evaluations == 2 * 21 + 512 + 1
    good, used = guarded(HEALTHY)
    assert not used and good.evaluations == 2 * 21 + 1
    np.testing.assert_array_equal(good.actions, plain(HEALTHY).actions)
    assert guarded(EXPLODING)[1]
    batched = jax.jit(
        jax.vmap(lambda theta, k: ls.guarded_planner(gradient, fallback).optimize(partial(family, theta), k))
    )
    out = batched(jnp.stack([HEALTHY, NAN_GRADIENT, EXPLODING]), jax.random.split(key, 3))
    assert out.actions.shape == (3, H, A) and bool(jnp.all(jnp.isfinite(out.energy)))


def test_the_batched_twin_guard_takes_the_fallback_for_the_unhealthy_decisions_only():
    # Adam: compared bit for bit with the plain planner compiled apart (L-BFGS line search amplifies rounding)
    gradient = make_planner("gradient", horizon=H, action_size=A, iterations=20, restarts=2, optimizer="adam")
    fallback = shooting_planner()

    def twin(planner):  # a twin plan_fn whose env states are the energies' thetas [N, 2]
        def plan_fn(params, z, goal, init, key, thetas, memory=None):
            keys = jax.random.split(key, thetas.shape[0])
            return jax.vmap(lambda theta, k: planner.optimize(partial(family, theta), k))(thetas, keys)

        return plan_fn

    true_energy = lambda params, theta, goal, actions: family(theta, actions)  # noqa: E731
    guarded = jax.jit(ls.guarded_twin_plan_fn(twin(gradient), twin(fallback), true_energy))
    thetas, key, unused = jnp.stack([HEALTHY, NAN_GRADIENT, EXPLODING]), jax.random.key(4), jnp.zeros((3, 1))
    out = guarded(None, unused, unused, None, key, thetas)
    plain, backup = jax.jit(twin(gradient)), jax.jit(twin(fallback))
    primary = plain(None, unused, unused, None, key, thetas)
    np.testing.assert_array_equal(out.actions[0], primary.actions[0])
    np.testing.assert_array_equal(out.actions[1:], backup(None, unused, unused, None, key, thetas).actions[1:])
    np.testing.assert_array_equal(out.evaluations, [43, 43 + 512, 43 + 512])
    healthy = (None, unused, unused, None, key, jnp.stack([HEALTHY, 2 * HEALTHY, HEALTHY]))  # the fallback is not taken
    np.testing.assert_array_equal(guarded(*healthy).actions, plain(*healthy).actions)
    np.testing.assert_array_equal(guarded(*healthy).evaluations, [43, 43, 43])


def test_the_report_counts_and_takes_the_fallback_on_the_pairs():
    from ami.diagnostics import report

    gradient = make_planner("gradient", horizon=H, action_size=A, iterations=20, restarts=2)
    thetas, goals = jnp.stack([HEALTHY, NAN_GRADIENT, HEALTHY]), jnp.zeros((3, 1))
    energies = report.Energies(lambda p, z0, g, a: smooth_energy(a), lambda p, theta, g, a: family(theta, a))
    pairs = report.Pairs(thetas, goals, goals)
    problems = report.make_problems(energies, {}, pairs, ls.MAX_RATIO)
    key = jax.random.key(5)
    result, used, seconds = report.plan_true(gradient, shooting_planner(), problems, key)
    np.testing.assert_array_equal(used, [False, True, False])
    primary, unused, _ = report.plan_true(gradient, None, problems, key)  # unguarded
    backup = jax.jit(partial(ls.plan_pairs, shooting_planner().optimize, energies.true))({}, thetas, goals, key)
    assert not unused.any() and primary.evaluations.tolist() == [42, 42, 42]
    np.testing.assert_array_equal(result.actions[::2], primary.actions[::2])
    np.testing.assert_array_equal(result.actions[1], backup.actions[1])
    assert seconds > 0 and result.evaluations.tolist() == [43, 43 + 512, 43]


# ----- ami plan end to end -----


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A Two-Rooms run trained for 100 updates (stopped after its first chunk: no evaluation)."""
    from ami import run
    from ami.config import load_experiment

    run_dir = tmp_path_factory.mktemp("landscape") / "run"
    smaller = ["critic.enabled=false", "perception.hidden=[16]", "world_model.hidden=[16]"]  # faster to compile
    cfg = load_experiment(QUICKSTART, [*TINY, *smaller, "train.updates=200", "train.checkpoint_every=100"])
    assert run.train(cfg, run_dir, quiet=True, max_chunks=1) == {"status": "unfinished", "updates": 100}
    return run_dir


def test_ami_plan_writes_the_landscape_and_the_figures(tiny_run, tmp_path, capsys):
    out = tmp_path / "plan"
    assert (
        cli.main(
            ["plan", str(tiny_run), "--planners", "gradient", "--pairs", "2", "--episodes", "2", "--out", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "success_learned" in printed and "gradient" in printed
    names = {p.name for p in out.iterdir()}
    assert names == {"landscape.json", "pairs.json", "traces.png", "slice_1d.png", "slice_2d.png", "grad_cosine.png"}
    record = json.loads((out / "landscape.json").read_text())
    assert {"settings", "pairs", "planners", "slices", "table", "wall_time_s"} <= set(record)
    assert set(record["planners"]) == {"gradient"} and record["settings"]["pairs"] == 2
    r = record["planners"]["gradient"]
    assert {"learned", "true_dynamics", "gradients", "success", "fallback_used"} <= set(r)
    keys = {"energy", "energy_trace_mean", "evaluations", "decision_wall_s", "true_energy_of_plan"}
    assert keys <= set(r["learned"]) and len(r["learned"]["energy"]) == 2 and r["learned"]["decision_wall_s"] > 0
    assert len(r["learned"]["energy_trace_mean"]) == 50 and r["learned"]["evaluations"] == 8 * 51  # default options
    assert r["true_dynamics"]["guarded"] == ("cem" in planner_names()) and r["fallback_used"] == 0
    grads = r["gradients"]
    assert {"cosine_mean", "cosine_median", "nonfinite", "exploding", "valid"} <= set(grads["at_learned_plan"])
    assert [p["iterations"] for p in grads["path"]] == [1, 50]
    assert grads["path"][-1]["cosine"] == grads["at_learned_plan"]["cosine"]
    for at in (grads["at_learned_plan"], grads["at_true_plan"]):  # Two-Rooms: finite, zero against a wall
        assert at["nonfinite"] == at["exploding"] == 0 and at["valid"] + at["zero"] == 2
    assert 0.0 <= r["success"]["learned"] <= 1.0 and r["success"]["episodes"] == 2
    one_d, two_d, middle = record["slices"]["one_d"], record["slices"]["two_d"], len(record["slices"]["alphas"]) // 2
    assert set(one_d) == {"step0_dim0", "step0_dim1", "random0", "random1", "best_first_action"}
    for side in ("learned", "true"):  # every 1-D slice passes through the plan at alpha 0
        np.testing.assert_allclose(
            [line[side][middle] for line in one_d.values()], one_d["random0"][side][middle], rtol=1e-5
        )  # float32 batches along different directions need not agree to the last bit
    np.testing.assert_allclose(one_d["step0_dim0"]["learned"][middle], r["learned"]["energy"][0], rtol=1e-5)
    np.testing.assert_allclose(one_d["step0_dim0"]["true"][middle], r["learned"]["true_energy_of_plan"][0], rtol=1e-5)
    assert np.asarray(two_d["learned"]).shape == np.asarray(two_d["true"]).shape == (21, 21)
    assert two_d["x"][0] == two_d["y"][0] == -1.0 and two_d["x"][-1] == two_d["y"][-1] == 1.0  # the whole box
    assert two_d["plan_xy"] == record["slices"]["plan"][0]
    pairs = json.loads((out / "pairs.json").read_text())
    assert pairs == record["pairs"] and np.asarray(pairs["start_obs"]).shape == (2, 2)
    assert [row["planner"] for row in record["table"]] == ["gradient"]


def test_the_run_planner_is_the_run_configured_one():
    from types import SimpleNamespace

    from ami.diagnostics import report

    own = make_planner("gradient", horizon=H, action_size=A, iterations=3)
    chosen = report.resolve_planners(["run", "gradient"], SimpleNamespace(modules=SimpleNamespace(planner=own)), H, A)
    assert chosen["run"] is own and dict(chosen["gradient"].options)["iterations"] == 50
    assert report.path_budgets(own) == [1, 3]


def test_ami_plan_names_the_plot_extra_when_matplotlib_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["plan", str(tmp_path)]) == 2
    assert "ami[plot]" in capsys.readouterr().err
