"""Devices: the same runs on 1 and on 8 emulated CPU devices (`--xla_force_host_platform_device_count`,
in a subprocess: the flag must be set before JAX starts) give the same parameters and actions
for the same global batch, online and offline; checkpoints move between device counts; per-env
state is split along the mesh's data axis; counts that do not divide are refused up front."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from ami import configlib, distributed, run
from ami.config import DistributedConfig, load_experiment

ONLINE = [
    "env.name=pendulum",
    "perception.hidden=[32]",
    "world_model.hidden=[32,32]",
    "world_model.reward_hidden=[32]",
    "value.hidden=[32,32]",
    "policy.hidden=[32,32]",
    "train.batch_size=32",
    "world_model.prediction_horizon=3",
    "eval.budget=small",
    "eval.episodes=8",
    "data.num_envs=8",
    "online.seed_steps=200",
    "online.chunk=25",
    "online.env_steps=600",
    "online.checkpoint_every=400",
]  # 8 envs x 25 decisions: chunks of 200 env steps, the first of seed steps
OFFLINE = [
    "perception.hidden=[32,32]",
    "world_model.hidden=[32,32]",
    "critic.hidden=[32,32]",
    "train.batch_size=32",
    "critic.batch_size=32",
    "data.num_envs=32",
    "data.steps_per_env=100",
    "train.updates=100",
    "train.chunk=50",
    "env.episode_length=50",  # evaluation episodes of 50 steps: the placement, not the task, is tested
    "eval.episodes=8",
    "eval.controllers=[learned]",
    "eval.budget=small",
    "planner.iterations=5",
    "planner.restarts=2",
]

# Runs in a process with 8 CPU devices; prints one JSON line of what the tests compare.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from ami import checkpoint, distributed, online, run
    from ami.config import DistributedConfig, load_experiment
    from ami.evaluate import observe
    from ami.replan import load_run
    ONLINE, OFFLINE, QUICKSTART, out = json.loads(sys.argv[1])

    def params(run_dir):
        state = checkpoint.restore(f"{run_dir}/checkpoints")[0]
        learner = state["agent"]["learner"]
        return [np.asarray(x) for x in jax.tree.leaves(learner["params"])]

    def gap(a, b):
        return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))

    res = {"devices": jax.device_count()}
    on = lambda d: load_experiment({}, ONLINE + [f"distributed.data={d}"])
    for d in (1, 8):
        run.train(on(d), f"{out}/online{d}", quiet=True)
    res["online_gap"] = gap(params(f"{out}/online1"), params(f"{out}/online8"))
    res["param_scale"] = max(float(np.max(np.abs(x))) for x in params(f"{out}/online1"))

    # actions of act on the same steps, from the trained state, on 1 and 8 devices
    cfg, agent, state = load_run(f"{out}/online1")
    env = run.make_env(cfg)
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(3), 8))
    step = observe(states, jnp.ones((8,), bool), False)
    state = agent.reset(state, 8)
    act = jax.jit(lambda s, st, k: agent.act(s, st, k)[1])
    mesh = distributed.make_mesh(DistributedConfig(data=8))
    with jax.set_mesh(mesh):
        placed = distributed.place(state, distributed.agent_shardings(state, mesh))
        step8 = distributed.place(step, distributed.split(step, mesh))
        a8 = act(placed, step8, jax.random.key(5))
    a1 = act(state, step, jax.random.key(5))
    res["action_gap"] = float(np.max(np.abs(np.asarray(a1) - np.asarray(a8))))
    res["action_sharding"] = str(a8.sharding.spec)

    # where the online carry lives on 8 devices
    cfg8, env8, agent8 = run.build(on(8))
    target = run.online_target(cfg8, env8, agent8)
    placement = distributed.online_shardings(target, mesh)
    s = online.settings(cfg8, 1)
    carry = jax.jit(lambda k: online.init(agent8, env8, s, k), out_shardings=placement)(jax.random.key(0))
    obs = carry.replay.data.obs
    res["replay_spec"] = str(obs.sharding.spec)
    res["replay_shard"] = list(obs.addressable_shards[0].data.shape)
    res["replay_shape"] = list(obs.shape)
    res["params_replicated"] = all(
        x.sharding.is_fully_replicated for x in jax.tree.leaves(carry.agent.learner.params)
    )

    # checkpoints between device counts: 8 -> 1 and 1 -> 8, each against the uninterrupted run
    for first, then in ((8, 1), (1, 8)):
        d = f"{out}/moved{first}{then}"
        run.train(on(first), d, quiet=True, max_chunks=2)
        run.train(on(then), d, quiet=True)
        res[f"moved_{first}_{then}_gap"] = gap(params(f"{out}/online{then}"), params(d))

    off = lambda d: load_experiment(QUICKSTART, OFFLINE + [f"distributed.data={d}"])
    for d in (1, 8):
        run.train(off(d), f"{out}/offline{d}", quiet=True)
    res["offline_gap"] = gap(params(f"{out}/offline1"), params(f"{out}/offline8"))
    print(json.dumps(res))
    """
)

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "experiments", "quickstart.yaml")


@pytest.fixture(scope="module")
def eight(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("eight")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    args = json.dumps([ONLINE, OFFLINE, QUICKSTART, str(out)])
    done = subprocess.run([sys.executable, "-c", SCRIPT, args], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "out": out}


# Float tolerance: XLA sums the gradient over 8 shards in another order; 400 online updates of
# O(1) parameters drift by ~1e-6 (measured), far below any change an update makes.
TOL = 1e-4


@pytest.mark.slow
def test_eight_devices_train_online_like_one(eight):
    assert eight["devices"] == 8
    assert eight["online_gap"] < TOL * eight["param_scale"], eight


@pytest.mark.slow
def test_eight_devices_act_like_one(eight):
    assert eight["action_gap"] < TOL, eight
    assert eight["action_sharding"] == "P('data',)"


@pytest.mark.slow
def test_per_env_state_is_split_and_parameters_replicated(eight):
    assert eight["replay_spec"] == "P('data',)"
    assert eight["replay_shard"] == [1, *eight["replay_shape"][1:]] and eight["replay_shape"][0] == 8
    assert eight["params_replicated"]


@pytest.mark.slow
def test_checkpoints_move_between_device_counts(eight):
    assert eight["moved_8_1_gap"] < TOL and eight["moved_1_8_gap"] < TOL, eight


@pytest.mark.slow
def test_eight_devices_train_offline_like_one(eight):
    assert eight["offline_gap"] < TOL, eight


def test_counts_that_do_not_divide_over_the_devices_are_refused(tmp_path):
    cfg = load_experiment({}, [*ONLINE, "data.num_envs=6", "distributed.data=4"])
    with pytest.raises(configlib.ConfigError, match=r"data.num_envs: 6 does not divide over the 4 devices"):
        run.train(cfg, tmp_path, quiet=True)
    cfg = load_experiment({}, [*ONLINE, "eval.episodes=6", "data.num_envs=4", "distributed.data=4"])
    with pytest.raises(configlib.ConfigError, match=r"eval.episodes: 6 does not divide over the 4 devices"):
        run.train(cfg, tmp_path, quiet=True)
    with pytest.raises(ValueError, match=r"distributed.data: 4 x 1 devices asked for, 1 available"):
        distributed.make_mesh(DistributedConfig(data=4))
    with pytest.raises(configlib.ConfigError, match="coordinator"):
        load_experiment({}, ["distributed.num_processes=2"])


# Runs in a process with 8 CPU devices: the quickstart agent's update batch drawn from a replay
# split over the 8 devices, at sample_groups 1 and 8; prints one JSON line.
GROUPED = textwrap.dedent(
    """
    import json, re, sys
    import jax, numpy as np
    from ami import distributed, run
    from ami.config import load_experiment
    from ami.train import collect, to_replay
    QUICKSTART, OFFLINE = json.loads(sys.argv[1])
    res = {}
    for groups in (1, 8):
        cfg, env, agent = run.build(load_experiment(QUICKSTART, OFFLINE + [f"distributed.sample_groups={groups}"]))
        d = cfg.data
        buffer = jax.jit(lambda k: to_replay(collect(env, k, d.num_envs, d.steps_per_env, d.smoothing)))(
            jax.random.key(0)
        )
        mesh = distributed.make_mesh(cfg.distributed)
        placed = distributed.place(buffer, distributed.replay_shardings(buffer, mesh))
        sample, key = jax.jit(agent.sample), jax.random.key(1)
        alone = sample(buffer, key)
        with jax.set_mesh(mesh):
            text = sample.lower(placed, key).compile().as_text()
            split = sample(placed, key)
        ops = r"all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter"
        res[groups] = {
            "gap": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
                       zip(jax.tree.leaves(alone), jax.tree.leaves(split), strict=True)),
            "collectives": len(re.findall(ops, text)),
            "specs": sorted({str(x.sharding.spec) for x in jax.tree.leaves(split)}),
            "leaves": len(jax.tree.leaves(split)),
        }
    print(json.dumps(res))
    """
)


def test_grouped_sampling_draws_each_devices_rows_from_its_own_streams():
    """sample_groups = 8 on 8 devices: the batch is the one drawn on 1 device, it comes out split
    along data, and the compiled sampler moves nothing between devices (at 1 group it does)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    args = json.dumps([QUICKSTART, OFFLINE])
    done = subprocess.run([sys.executable, "-c", GROUPED, args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["8"]["gap"] == 0.0 and res["1"]["gap"] == 0.0, res
    assert res["8"]["collectives"] == 0 and res["1"]["collectives"] > 0, res
    assert res["8"]["specs"] == ["P('data',)"] and res["8"]["leaves"] >= 9, res


def test_sample_groups_that_do_not_divide_are_refused():
    with pytest.raises(configlib.ConfigError, match=r"data.num_envs: 8 does not divide into distributed.sample_groups = 3"):
        load_experiment({}, [*ONLINE, "distributed.sample_groups=3"])
    with pytest.raises(configlib.ConfigError, match=r"critic.batch_size: 256 does not divide into"):
        load_experiment(QUICKSTART, ["distributed.sample_groups=3", "data.num_envs=6", "train.batch_size=6"])
    with pytest.raises(configlib.ConfigError, match=r"ppo does not sample ami's replay"):
        load_experiment({}, ["agent.name=ppo", "distributed.sample_groups=2"])


# One of two `jax.distributed` processes on 127.0.0.1 (one CPU device each, gloo collectives):
# the online and the offline run of the tests above, with a data axis over both processes.
TWO_PROCESSES = textwrap.dedent(
    """
    import json, sys
    from ami import run
    from ami.config import load_experiment
    pid, port, ONLINE, OFFLINE, QUICKSTART, out = json.loads(sys.argv[1])
    hosts = [f"distributed.coordinator=127.0.0.1:{port}", "distributed.num_processes=2"]
    hosts.append(f"distributed.process_id={pid}")
    run.train(load_experiment({}, ONLINE + hosts), f"{out}/online", quiet=True)
    run.train(load_experiment(QUICKSTART, OFFLINE + hosts), f"{out}/offline", quiet=True)
    """
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _learner_params(run_dir) -> list:
    import numpy as np

    from ami import checkpoint

    state = checkpoint.restore(run_dir / "checkpoints")[0]
    return [np.asarray(x) for x in jax.tree.leaves(state["agent"]["learner"]["params"])]


@pytest.mark.slow
def test_two_processes_train_like_one(eight, tmp_path):
    """Against the 1-device runs of the same configs in `eight`'s process."""
    import numpy as np

    online, offline = ONLINE, OFFLINE
    port, out = _free_port(), tmp_path / "two"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_PROCESSES, json.dumps([pid, port, online, offline, QUICKSTART, str(out)])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    errs = [p.communicate(timeout=900)[1] for p in procs]
    for pid, (p, err) in enumerate(zip(procs, errs, strict=True)):  # the first to fail is often the other's cause
        other = errs[1 - pid][-3000:]
        assert p.returncode == 0, f"process {pid} exited {p.returncode}:\n{err[-3000:]}\nthe other:\n{other}"
    single = {"online": eight["out"] / "online1", "offline": eight["out"] / "offline1"}
    for name in ("online", "offline"):
        one, two = _learner_params(single[name]), _learner_params(out / name)
        assert max(float(np.max(np.abs(a - b))) for a, b in zip(one, two, strict=True)) < TOL, name
    rows = [json.loads(line) for line in (out / "online" / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows if r["phase"] == "online"] == [200, 400, 600]  # once, by process 0
    summary = json.loads((out / "online" / "summary.json").read_text())
    assert summary["mean_return"] == pytest.approx(
        json.loads((single["online"] / "summary.json").read_text())["mean_return"], rel=1e-3
    )
