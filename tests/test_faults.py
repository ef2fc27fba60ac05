"""Fault injection: NaN and inf in observations, rewards, gradients and planner energies leave the
parameters finite and the actions finite and in bounds, are counted in the metrics, and stop a
run in strict mode (`train.strict_finite`) with an error naming the env, the step and the key;
envs whose step changes shapes or dtypes, checkpoints of another action size, a replay that
outgrows nothing, and invalid configs get clear errors at the boundary."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import envs
from ami import checkpoint, configlib, learner, online, replay, run, train
from ami.actor import make_planner
from ami.config import ConfigError, load_experiment
from envs.native import Pendulum, TwoRooms
from envs.registry import _REGISTRY

TINY = (
    "perception.hidden=[32]",
    "world_model.hidden=[32,32]",
    "world_model.reward_hidden=[32]",
    "value.hidden=[32,32]",
    "policy.hidden=[32,32]",
    "train.batch_size=32",
    "world_model.prediction_horizon=3",
    "eval.budget=small",
    "eval.episodes=4",
    "perception.activation=elu",
    "world_model.activation=elu",
)
FAULT_T = "fault_t"
NAN_OBS_AT, INF_REWARD_AT = 5, 7


class Faults(envs.Wrapper):
    """The observation after step `NAN_OBS_AT` of every episode is NaN, the reward of step
    `INF_REWARD_AT` is +inf (the step count lives in `info`, so auto-resets restart it)."""

    def reset(self, rng):
        state = self.env.reset(rng)
        return state.replace(info={**state.info, FAULT_T: jnp.zeros((), jnp.int32)})

    def step(self, state, action):
        t = state.info[FAULT_T] + 1
        inner = {k: v for k, v in state.info.items() if k != FAULT_T}
        nxt = self.env.step(state.replace(info=inner), action)
        obs = jnp.where(t == NAN_OBS_AT, jnp.nan, nxt.obs)
        reward = jnp.where(t == INF_REWARD_AT, jnp.inf, nxt.reward)
        return nxt.replace(obs=obs, reward=reward, info={**nxt.info, FAULT_T: t})


class ShapeShift(envs.Wrapper):
    """Reset is fine; step returns an observation of another shape (`grow`) or dtype (`cast`)."""

    def __init__(self, env, grow: bool = True):
        super().__init__(env)
        self.grow = grow

    def step(self, state, action):
        nxt = self.env.step(state, action)
        obs = jnp.concatenate([nxt.obs, nxt.obs[:1]]) if self.grow else nxt.obs.astype(jnp.int32)
        return nxt.replace(obs=obs)


@pytest.fixture
def registered():
    """Registers the fault-injecting envs for one test (and removes them after it)."""
    names = {
        "faulty_pendulum": (lambda **kw: Faults(Pendulum(**kw)), 50),
        "faulty_two_rooms": (lambda **kw: Faults(TwoRooms(**kw)), 100),
        "growing_obs": (lambda **kw: ShapeShift(Pendulum(**kw), grow=True), 50),
        "int_obs": (lambda **kw: ShapeShift(Pendulum(**kw), grow=False), 50),
    }
    for name, (factory, length) in names.items():
        envs.register(name, factory, episode_length=length, overwrite=True)
    yield
    for name in names:
        _REGISTRY.pop(name, None)


def pendulum(*overrides: str, env: str = "pendulum"):
    return load_experiment({"env": {"name": env}}, [*TINY, "data.num_envs=2", *overrides])


def _arrays(tree):
    return [np.array(x) for x in jax.tree.leaves(tree)]  # copies: the chunks donate their inputs


def _equal(a, b) -> bool:
    return all(np.array_equal(x, y, equal_nan=True) for x, y in zip(_arrays(a), _arrays(b), strict=True))


def _finite(tree) -> bool:
    return all(np.all(np.isfinite(x)) for x in _arrays(tree) if np.issubdtype(x.dtype, np.inexact))


# ----- skipped updates -----


def test_finite_step_skips_a_nonfinite_gradient_and_equals_optax_otherwise():
    tx = optax.adam(0.1)
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    state = tx.init(params)
    grads = {"w": jnp.array([0.3, jnp.nan]), "b": jnp.array(1.0)}
    new, new_state, finite = learner.finite_step(tx, grads, state, params)
    assert not bool(finite) and _equal(new, params) and _equal(new_state, state)
    inf = {"w": jnp.array([0.3, 0.1]), "b": jnp.array(jnp.inf)}
    assert not bool(learner.finite_step(tx, inf, state, params)[2])
    good = {"w": jnp.array([0.3, 0.1]), "b": jnp.array(1.0)}
    new, new_state, finite = learner.finite_step(tx, good, state, params)
    updates, expected_state = tx.update(good, state, params)
    assert bool(finite) and _equal(new, optax.apply_updates(params, updates)) and _equal(new_state, expected_state)


@pytest.mark.parametrize("family", ["ami", pytest.param("dreamer", marks=pytest.mark.slow)])
def test_an_update_on_a_nan_batch_is_skipped_and_counted(family):
    """A NaN in one observation of the batch: every parameter and optimiser state comes back
    unchanged and `nonfinite_updates` is 1; a NaN reward skips the world model's step (its
    loss sees rewards), here too counted once; on the clean batch it is 0 and they move."""
    extra = ("agent.name=dreamer", "dreamer.deter=16", "dreamer.hidden=16", "dreamer.stoch=4", "dreamer.classes=4")
    extra += ("dreamer.horizon=3", "dreamer.batch_size=4", "dreamer.length=4")
    _, env, agent = run.build(pendulum(*(extra if family == "dreamer" else ())))
    state = agent.init(jax.random.key(0), 1)
    buffer = train.to_replay(jax.jit(train.collect, static_argnums=(0, 2, 3, 4))(env, jax.random.key(1), 2, 16, 0.8))
    batch = jax.jit(agent.sample)(buffer, jax.random.key(2))
    update = jax.jit(agent.update)

    def model(s):
        params = s.learner.params
        return (params.model if family == "dreamer" else learner.model_part(params)), s.learner.model_opt

    new, metrics = update(state, batch._replace(obs=batch.obs.at[0, 1, 0].set(jnp.nan)))
    assert float(metrics["nonfinite_updates"]) == 1.0
    assert _equal(new.learner.params, state.learner.params) and _equal(model(new), model(state))
    new, metrics = update(state, batch._replace(reward=batch.reward.at[0, 1].set(jnp.nan)))
    assert float(metrics["nonfinite_updates"]) == 1.0
    assert _equal(model(new), model(state)) and _finite(new.learner.params)
    new, metrics = update(state, batch)
    assert float(metrics["nonfinite_updates"]) == 0.0 and _finite(new.learner.params)
    assert not _equal(model(new)[0], model(state)[0])


def test_chunk_metrics_sum_the_counts_and_average_the_rest():
    metrics = {"loss": jnp.array([1.0, 2.0, 6.0]), "nonfinite_updates": jnp.array([1.0, 0.0, 1.0])}
    assert {k: float(v) for k, v in train.reduce_chunk(metrics).items()} == {"loss": 3.0, "nonfinite_updates": 2.0}


@pytest.mark.slow
def test_a_train_chunk_sums_the_skipped_updates():
    """Offline, every batch of an all-NaN replay is skipped: the chunk's `nonfinite_updates` is
    the number of updates (a count, not a mean) and the parameters are those it started from."""
    _, env, agent = run.build(pendulum("online.enabled=false", "data.steps_per_env=16", "critic.max_goal_offset=10"))
    state = agent.init(jax.random.key(0), 1)
    buffer = train.to_replay(jax.jit(train.collect, static_argnums=(0, 2, 3, 4))(env, jax.random.key(1), 2, 16, 0.8))
    poisoned = buffer._replace(data=buffer.data._replace(obs=buffer.data.obs * jnp.nan))
    before = _arrays(state.learner.params)
    state, metrics = train.make_train_chunk(agent, 3)(state, poisoned, jax.random.key(2))
    assert float(metrics["nonfinite_updates"]) == 3.0
    assert all(np.array_equal(a, b) for a, b in zip(before, _arrays(state.learner.params), strict=True))


# ----- planners -----

PLANNERS = {
    "gradient": {"iterations": 8, "restarts": 4},
    "cem": {"iterations": 4, "population": 32, "elites": 4},
    "icem": {"iterations": 4, "population": 32, "elites": 4},
    "mppi": {"iterations": 4, "population": 32},
    "hybrid": {"proposer_iterations": 2, "population": 32, "elites": 4, "refine_iterations": 4, "refine_top_k": 2},
}
H, A, LOW, HIGH = 4, 2, -2.0, 1.0
TARGET = jnp.full((H, A), -0.5)


def quadratic(a):
    return jnp.sum((a - TARGET) ** 2)


def half_nan(a):
    """NaN (with a NaN gradient) wherever the first action's first component is positive."""
    return jnp.where(a[0, 0] > 0.0, jnp.nan, quadratic(a))


@jax.custom_jvp
def _nan_tangent(x):
    return x


@_nan_tangent.defjvp
def _nan_tangent_jvp(primals, tangents):
    return primals[0], tangents[0] * jnp.nan


def nan_gradient(a):
    """A finite energy whose gradient is NaN everywhere."""
    return quadratic(_nan_tangent(a))


def _plan(name, energy_fn, init=None):
    planner = make_planner(name, horizon=H, action_size=A, action_low=LOW, action_high=HIGH, **PLANNERS[name])
    return jax.jit(lambda key: planner.optimize(energy_fn, key, init))(jax.random.key(3))


def _in_bounds(actions) -> bool:
    return bool(np.all(np.isfinite(actions)) and np.all(actions >= LOW) and np.all(actions <= HIGH))


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_planners_stay_finite_and_in_bounds_under_nan_energies_and_gradients(name):
    some = _plan(name, half_nan)  # NaN for some candidates: the best finite one wins
    assert _in_bounds(some.actions) and float(some.actions[0, 0]) <= 0.0
    np.testing.assert_allclose(float(some.energy), float(quadratic(some.actions)), rtol=1e-5)
    assert np.isfinite(float(some.energy))
    every = _plan(name, lambda a: quadratic(a) * jnp.nan)  # no finite energy anywhere
    assert _in_bounds(every.actions) and float(every.energy) == np.inf
    grad = _plan(name, nan_gradient)  # finite energies, NaN gradients
    assert _in_bounds(grad.actions) and np.isfinite(float(grad.energy))
    np.testing.assert_allclose(float(grad.energy), float(quadratic(grad.actions)), rtol=1e-5)
    warm = _plan(name, quadratic, init=jnp.full((H, A), jnp.nan))  # a NaN warm start
    assert _in_bounds(warm.actions) and np.isfinite(float(warm.energy))


# ----- the online loop: NaN observations and rewards, NaN plans, counters, strict mode -----


def test_the_online_loop_zeroes_counts_and_stops_on_nan_env_data_and_nan_plans(registered):
    """`faulty_pendulum` (episodes of 50 steps, 2 envs): each episode has one NaN observation
    (in 2 transitions: as next_obs, then as obs) and one inf reward. A chunk of 60 decisions
    holds 2 episode starts per env: 8 and 4 of them. Then, with NaN parameters, every decision
    re-plans without a finite energy (60 x 2 plans) and every update is skipped (60 x 1)."""
    cfg, env, agent = run.build(
        pendulum(
            "online.chunk=60",
            "online.env_steps=240",
            "online.seed_steps=20",
            "online.updates_per_step=0.5",
            "planner.replan_every=1",
            env="faulty_pendulum",
        )
    )
    s = online.settings(cfg, envs.action_repeat(env))
    chunk = online.make_chunk(agent, env, s)
    loop = jax.jit(lambda k: online.init(agent, env, s, k))(jax.random.key(0))
    loop, stats = chunk(loop, jax.random.key(1))
    m = stats["metrics"]
    assert (float(m["nonfinite_obs"]), float(m["nonfinite_rewards"])) == (8.0, 4.0)
    assert (float(m["nonfinite_plans"]), float(m["nonfinite_updates"])) == (0.0, 0.0)
    assert float(stats["updates"]) == 51.0  # decisions 10..60 update (env steps 20..120)
    assert _finite(loop.agent.learner.params) and _finite(loop.replay.data)
    assert not bool(stats["finite"]["next_obs"]) and not bool(stats["finite"]["reward"])
    assert int(stats["first_nonfinite"]) == 2 * NAN_OBS_AT  # after the 5th decision of 2 envs
    online.check_chunk(stats, "faulty_pendulum", s, 0, jax.random.key(1), strict=False, check_env=False)
    with pytest.raises(FloatingPointError) as info:
        online.check_chunk(stats, "faulty_pendulum", s, 0, jax.random.key(1), strict=True, check_env=False)
    key = str(np.asarray(jax.random.key_data(jax.random.key(1))).tolist())
    fields = "next_obs, obs, reward"  # sorted
    message = f"env 'faulty_pendulum' produced non-finite values in {fields} (at env step 10, chunk 0, key {key}; "
    assert str(info.value).startswith(message), str(info.value)

    nan_params = loop.agent.learner.params._replace(
        predictor=jax.tree.map(lambda x: x * jnp.nan, loop.agent.learner.params.predictor)
    )
    loop = loop._replace(agent=loop.agent._replace(learner=loop.agent.learner._replace(params=nan_params)))
    loop, stats = chunk(loop, jax.random.key(2))
    m = stats["metrics"]
    assert (float(m["nonfinite_plans"]), float(m["nonfinite_updates"])) == (120.0, 60.0)
    assert (float(m["nonfinite_obs"]), float(m["nonfinite_rewards"])) == (4.0, 2.0)
    actions = np.asarray(loop.replay.data.action)
    assert np.all(np.isfinite(actions)) and np.all(np.abs(actions) <= 1.0)
    counts = "nonfinite_obs 4, nonfinite_plans 120, nonfinite_rewards 2, nonfinite_updates 60"
    with pytest.raises(FloatingPointError, match=re.escape(f"({counts}) in env steps 120-240, chunk 1, key [")):
        train.check_chunk(m, "faulty_pendulum", True, steps="env steps 120-240", index=1, key=jax.random.key(2))


def test_offline_collection_zeroes_and_counts_nan_data_or_stops_in_strict_mode(registered, tmp_path):
    """`faulty_two_rooms`, 3 envs x 20 steps: 2 transitions with a NaN observation and one with
    an inf reward per env. Strict, the run stops after collecting, before anything trains,
    naming the env, the collect step, the stream and the data key."""
    env = envs.make("faulty_two_rooms")
    buffer = train.to_replay(jax.jit(train.collect, static_argnums=(0, 2, 3, 4))(env, jax.random.key(0), 3, 20, 0.8))
    fixed, counts = train.check_collected(buffer, "faulty_two_rooms", jax.random.key(0), strict=False)
    assert counts == {"nonfinite_obs": 6.0, "nonfinite_rewards": 3.0}
    assert _finite(fixed.data) and float(fixed.data.next_obs[1, NAN_OBS_AT - 1].sum()) == 0.0
    np.testing.assert_array_equal(fixed.data.obs[:, :4], buffer.data.obs[:, :4])  # the rest is kept as it was

    cfg = load_experiment(
        {"env": {"name": "faulty_two_rooms"}},
        [
            *("data.num_envs=4", "data.steps_per_env=20", "train.batch_size=8", "critic.batch_size=8"),
            *("critic.max_goal_offset=10", "train.updates=2", "train.chunk=1", "train.checkpoint_every=2"),
            *("train.strict_finite=true", "world_model.prediction_horizon=3"),
        ],
    )
    k_data = jax.random.split(jax.random.key(cfg.seed), 3)[0]
    key = str(np.asarray(jax.random.key_data(k_data)).tolist())
    message = f"at collect step {NAN_OBS_AT - 1} of env 0, data key {key}"
    with pytest.raises(
        FloatingPointError, match=re.escape(f"env 'faulty_two_rooms' produced non-finite values in next_obs ({message}")
    ):
        run.train(cfg, tmp_path / "run", quiet=True)
    assert not list((tmp_path / "run" / "checkpoints").iterdir())


@pytest.mark.slow
def test_a_run_on_nan_env_data_finishes_with_finite_parameters_and_counts_in_metrics(registered, tmp_path):
    """`ami train` online on `faulty_pendulum`: 400 env steps (4 episodes of each of 2 envs),
    the counts in `metrics.jsonl` add up to 16 observations and 8 rewards, nothing else is
    non-finite, the checkpoint's parameters and the training returns are finite."""
    cfg = pendulum("online.chunk=100", "online.env_steps=400", "online.seed_steps=100", env="faulty_pendulum")
    summary = run.train(cfg, tmp_path, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["phase"] == "online"]
    assert len(rows) == 2
    assert sum(r["nonfinite_obs"] for r in rows) == 16 and sum(r["nonfinite_rewards"] for r in rows) == 8
    assert sum(r["nonfinite_updates"] + r["nonfinite_plans"] for r in rows) == 0
    assert all(np.isfinite(r["train_return"]) for r in rows if "train_return" in r)  # zeroed rewards
    assert summary["mean_return"] == np.inf  # evaluation reports the env's own returns, inf ones included
    saved = checkpoint.restore(tmp_path / "checkpoints")[0]
    assert _finite(saved["agent"]["learner"]["params"])


# ----- shapes and dtypes at the boundary -----


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("growing_obs", "step returned obs of shape [4] dtype float32, but reset gave shape [3] dtype float32"),
        ("int_obs", "step returned obs of shape [3] dtype int32, but reset gave shape [3] dtype float32"),
    ],
)
def test_a_step_that_changes_the_obs_spec_is_refused_when_traced(registered, name, message):
    env = envs.make(name)
    full = f"env {name!r}: {message} (a jitted loop needs the same shapes and dtypes at every step)"
    state = env.reset(jax.random.key(0))
    with pytest.raises(ValueError, match=re.escape(full)):
        jax.eval_shape(env.step, state, jnp.zeros(1))
    with pytest.raises(ValueError, match=re.escape(full)):
        train.collect(env, jax.random.key(0), 2, 3, 0.8)


USER_ENV = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    from brax.envs.base import Env, State

    class Cart(Env):
        observation_size = 2
        action_size = {action_size}
        backend = "jax"

        def reset(self, rng):
            return self._state(jnp.zeros(2))

        def step(self, state, action):
            return self._state(state.obs + 0.1 * jnp.sum(action))

        def _state(self, s):
            return State(pipeline_state=s, obs=s, reward=-jnp.abs(s[0]), done=jnp.zeros(()), metrics={{}}, info={{}})

    def make_env():
        return Cart()
    """
)


def test_a_users_env_with_another_action_size_than_the_checkpoint_is_refused(tmp_path, monkeypatch):
    """The run directory's checkpoint was made for 1 action; the user's env now has 2: the
    resumed run stops before restoring anything, naming both sizes."""
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "cart_faults_env.py"
    module.write_text(USER_ENV.format(action_size=2))
    cfg = load_experiment(
        {"env": {"name": "cart_faults_env:make_env", "episode_length": 20}}, [*TINY, "data.num_envs=2"]
    )
    run_dir = tmp_path / "run"
    meta = {"config": configlib.to_dict(cfg), "spec": {"obs_shape": [2], "action_size": 1}}
    checkpoint.save(run_dir / "checkpoints", 200, {"x": np.zeros(1, np.float32)}, meta)
    try:
        message = "1 actions; env 'cart_faults_env:make_env' now gives shape (2,) and 2 actions"
        with pytest.raises(ConfigError, match=re.escape(message)):
            run.train(cfg, run_dir, quiet=True)
    finally:
        sys.modules.pop("cart_faults_env", None)


# ----- the replay's memory -----


def test_the_replay_keeps_its_memory_after_three_times_its_capacity():
    example = envs.Trajectory(
        obs=np.zeros(3, np.float32),
        action=np.zeros(1, np.float32),
        reward=np.float32(0),
        done=np.float32(0),
        truncated=np.float32(0),
        next_obs=np.zeros(3, np.float32),
    )
    num_envs, capacity, step = 2, 10, 4
    buffer = replay.init(example, num_envs, capacity)
    nbytes = [x.nbytes for x in jax.tree.leaves(buffer)]
    add = jax.jit(replay.add)
    for i in range(3 * capacity // step + 1):  # 32 steps of 4: over 3 times the capacity
        t = np.arange(i * step, (i + 1) * step, dtype=np.float32)
        data = jax.tree.map(
            lambda x, t=t: np.broadcast_to(t.reshape(-1, *(1,) * (x.ndim + 1)), (step, num_envs, *x.shape)), example
        )
        buffer = add(buffer, data._replace(done=np.zeros((step, num_envs), np.float32)))
    assert [x.nbytes for x in jax.tree.leaves(buffer)] == nbytes
    assert int(buffer.size) == capacity and replay.memory_bytes(example, num_envs, capacity) == sum(nbytes[:-2])
    newest = np.roll(np.asarray(buffer.data.reward[0]), -int(buffer.position))  # logical order, oldest first
    np.testing.assert_array_equal(newest, np.arange(32 - capacity, 32, dtype=np.float32))


# ----- invalid configs -----

QUICK = {"env": {"name": "two_rooms"}}


@pytest.mark.parametrize("value", ["nan", ".nan", "inf", "-inf", "-.inf", "0"])
def test_a_learning_rate_must_be_finite_and_positive(value):
    shown = {"nan": "nan", ".nan": "nan", "inf": "inf", "-inf": "-inf", "-.inf": "-inf", "0": "0.0"}[value]
    with pytest.raises(
        ConfigError, match=rf"^train\.learning_rate: must be a finite number > 0, got {re.escape(shown)}\n"
    ):
        load_experiment(QUICK, [f"train.learning_rate={value}"])
    with pytest.raises(ConfigError, match=r"^train\.grad_clip: must be a finite number > 0, got inf\n"):
        load_experiment(QUICK, ["train.grad_clip=inf"])


def test_a_replay_smaller_than_a_batch_names_both_keys():
    message = (
        "data.steps_per_env: the replay holds data.num_envs x data.steps_per_env = 2 x 10 = 20 transitions, "
        "fewer than one batch (train.batch_size = 32)"
    )
    small = ["critic.max_goal_offset=8", "world_model.prediction_horizon=4", "data.num_envs=2"]
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_experiment(QUICK, [*small, "data.steps_per_env=10", "train.batch_size=32"])
    load_experiment(QUICK, [*small, "data.steps_per_env=16", "train.batch_size=32"])
    dreamer = ["agent.name=dreamer", "dreamer.batch_size=8", "data.num_envs=1", "data.steps_per_env=4"]
    with pytest.raises(ConfigError, match=re.escape("fewer than one batch (dreamer.batch_size = 8)")):
        load_experiment(QUICK, dreamer)


def test_the_unknown_env_message_lists_every_name_form():
    with pytest.raises(ValueError) as info:
        envs.make("two_room")
    text = str(info.value)
    for part in ("Did you mean 'two_rooms'", "'brax/<name>'", "'dmc/<Name>'", "'package.module:factory'", "ami envs"):
        assert part in text, text


def test_a_run_directory_that_cannot_hold_checkpoints_is_refused_before_training(tmp_path):
    """A run directory under a regular file (unwritable even for root, whom chmod does not stop)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cfg = load_experiment(
        QUICK, ["data.num_envs=4", "data.steps_per_env=20", "train.batch_size=8", "critic.max_goal_offset=10"]
    )
    target = blocker / "run" / "checkpoints"
    with pytest.raises(ConfigError, match=re.escape(f"cannot write checkpoints to {target} (")):
        run.train(cfg, blocker / "run", quiet=True)
    assert blocker.read_text() == "not a directory"
