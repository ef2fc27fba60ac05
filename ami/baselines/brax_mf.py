"""Brax's model-free agents (PPO, SAC) on ami's environments, writing ami's run directory.

`train_brax("ppo" | "sac", env_name, run_dir, ...)` calls Brax's own trainers
(`brax.training.agents.ppo.train.train`, `brax.training.agents.sac.train.train`) on the env
`envs.make` builds, logs Brax's evaluations to `run_dir/metrics.jsonl`, then evaluates the
trained policy and a uniform random policy on the same episodes and writes `summary.json`.

Wrapping. Brax's trainers are given ami's fully wrapped env (`envs.make(..., auto_reset=True)`:
action repeat, time limit, auto-reset to freshly drawn states) and `wrap_env=True` with a
`wrap_env_fn` that only vmaps it (`brax.envs.wrappers.training.VmapWrapper`) and adds the
`state.info` entries Brax reads (`_BraxEpisodeInfo`). Brax's own `EpisodeWrapper` and
`AutoResetWrapper` are never applied, so nothing is wrapped twice:

* both would clash with ami's `TimeLimit`: each keeps its step counter in `info["steps"]`,
  and stacked they count every step twice;
* `wrap_env=False` is no way out: SAC's `train` draws its key `rng = jax.random.PRNGKey(seed)`
  only inside `if wrap_env:` and later reads it (`global_key, local_key =
  jax.random.split(rng)`), so SAC cannot run without `wrap_env=True` in brax 0.14.2;
* Brax's `AutoResetWrapper` restores each env's first state (`info["first_pipeline_state"]`);
  ami's `AutoReset` draws a fresh initial state for every episode, as ami's own agents see.

Step counting. Brax counts `num_timesteps` and the step its `progress_fn` receives in env
steps, each decision adding `action_repeat` (PPO's `env_step_per_training_step = batch_size *
unroll_length * num_minibatches * action_repeat`; SAC's `env_steps_per_actor_step =
action_repeat * num_envs`). Its own `EpisodeWrapper` counts `episode_length` in env steps too
(`steps = info["steps"] + action_repeat`; `done = steps >= episode_length`), and so does its
evaluator (`generate_unroll(..., unroll_length=episode_length // action_repeat)`). So
train_brax passes Brax `action_repeat` and `episode_length * action_repeat`: Brax's step count
is then ami's `env_steps` as it is (control steps including the repeat: with `action_repeat=2`
one decision is 2 env steps), and Brax's evaluation episodes are `episode_length` decisions,
the length ami's `TimeLimit` gives every episode. Brax's `action_repeat` does nothing else
here: the repeat itself is ami's `ActionRepeat`. One count differs: PPO's
`EpisodeMetricsLogger` (option `log_training_metrics`) reports decisions
(`self._num_steps += np.prod(dones.shape)`); its rows are logged at `step * action_repeat`.

Each trainer overshoots `env_steps` to a whole number of its training steps (Brax rounds up);
`summary.json` reports the steps actually taken (`schedule` computes them beforehand).

jax. Brax 0.14.2's PPO and SAC call `jax.device_put_replicated`, which jax 0.10 removed;
`train_brax` provides it from public APIs for the length of the call (`_brax_on_this_jax`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.wrappers.training import VmapWrapper
from brax.training.agents.ppo import train as ppo_train
from brax.training.agents.sac import networks as sac_networks
from brax.training.agents.sac import train as sac_train

import envs
from envs.base import Env, State, Wrapper

ALGORITHMS = ("ppo", "sac")

_TRAIN_FNS: dict[str, Callable[..., Any]] = {"ppo": ppo_train.train, "sac": sac_train.train}

# Keyword arguments of Brax's train functions that train_brax sets from its own arguments.
_RESERVED = (
    "environment",
    "num_timesteps",
    "episode_length",
    "action_repeat",
    "seed",
    "wrap_env",
    "wrap_env_fn",
    "eval_env",
    "progress_fn",
    "randomization_fn",
)

# Defaults for DMC proprio tasks at about 100k env steps on a small CPU. Each starts from
# MuJoCo Playground's tuned DMC settings (`mujoco_playground/config/dm_control_suite_params.py`,
# `brax_ppo_config` / `brax_sac_config`, made for 60M / 5M steps on accelerators); the
# comment says what was scaled down and why.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {
        "normalize_observations": True,  # Playground
        "reward_scaling": 10.0,  # Playground
        "discounting": 0.995,  # Playground
        "learning_rate": 1e-3,  # Playground
        "entropy_cost": 1e-2,  # Playground
        "unroll_length": 25,  # Playground: 30; 25 makes a training step 6400 decisions, so 100k
        # env steps (action repeat 1, 2 or 4) overshoot by 2.4 % rather than 23 %
        "num_envs": 32,  # Playground: 2048 (one training step would be ~1M env steps)
        "batch_size": 32,  # Playground: 1024
        "num_minibatches": 8,  # Playground: 32
        "num_updates_per_batch": 8,  # Playground: 16 (4 on PendulumSwingUp)
        "num_resets_per_eval": 0,  # Playground: 10, to leave Brax's cached first states; ami's
        # AutoReset already draws a fresh initial state for every episode
        "num_evals": 5,  # Playground: 10
        "deterministic_eval": True,  # Brax: False; True matches the final evaluation here
    },
    "sac": {
        "normalize_observations": True,  # Playground
        "reward_scaling": 1.0,  # Playground
        "discounting": 0.99,  # Playground
        "learning_rate": 1e-3,  # Playground
        "grad_updates_per_step": 8,  # Playground
        "min_replay_size": 8192,  # Playground (transitions, i.e. decisions of all envs)
        "network_factory": functools.partial(sac_networks.make_sac_networks, q_network_layer_norm=True),  # Playground
        "num_envs": 16,  # Playground: 128; 16 gives 0.5 updates per decision (50k at 100k steps)
        "batch_size": 256,  # Playground: 512; Brax's default, half the CPU time per update
        "num_evals": 5,  # Playground: 10
        "deterministic_eval": True,  # Brax: False; True matches the final evaluation here
    },
}

EVAL_KEY = 12345  # the fixed evaluation seed (ami's `eval.seed` default)

# `state.info` entries `_BraxEpisodeInfo` owns.
_EPISODE_DONE, _EPISODE_METRICS, _TIME_OUT = "episode_done", "episode_metrics", "time_out"
_BRAX_INFO = (_EPISODE_DONE, _EPISODE_METRICS, _TIME_OUT)


class _BraxEpisodeInfo(Wrapper):
    """A batch `[N]` of ami envs carrying the `state.info` entries Brax's trainers read.

    ami's wrappers already repeat actions, end episodes and auto-reset; this adds what Brax's
    `EpisodeWrapper` would: `episode_done [N]` (the step ended an episode), `episode_metrics`
    (`sum_reward`, `length` in env steps, and each of the env's metrics, summed since the
    episode began; PPO reads them as extras and logs them with `log_training_metrics`) and
    `time_out [N]` (ami's `truncation`, for PPO's `bootstrap_on_timeout`). They are removed
    before the inner env steps, so ami's auto-reset sees the info structure it made.
    """

    def __init__(self, env: Env, action_repeat: int):
        super().__init__(env)
        self.action_repeat = int(action_repeat)

    def reset(self, rng: jax.Array) -> State:
        state = self.env.reset(rng)
        zeros = jnp.zeros_like(state.reward)
        metrics = {name: zeros for name in state.metrics}
        metrics.update(sum_reward=zeros, length=zeros)
        info = {**state.info, _EPISODE_DONE: zeros, _EPISODE_METRICS: metrics, _TIME_OUT: zeros}
        return state.replace(info=info)

    def step(self, state: State, action: jax.Array) -> State:
        inner = {k: v for k, v in state.info.items() if k not in _BRAX_INFO}
        nxt = self.env.step(state.replace(info=inner), action)
        keep = 1.0 - state.info[_EPISODE_DONE]
        prev = state.info[_EPISODE_METRICS]
        metrics = {}
        for name, total in prev.items():
            if name == "sum_reward":
                metrics[name] = total * keep + nxt.reward
            elif name == "length":
                metrics[name] = total * keep + self.action_repeat
            elif name == "reward" or name not in nxt.metrics:
                metrics[name] = total
            else:
                metrics[name] = total * keep + nxt.metrics[name]
        done = nxt.done.astype(state.info[_EPISODE_DONE].dtype)
        truncation = nxt.info.get(envs.TRUNCATION, jnp.zeros_like(done)).astype(done.dtype)
        info = {**nxt.info, _EPISODE_DONE: done, _EPISODE_METRICS: metrics, _TIME_OUT: truncation}
        return nxt.replace(info=info)


def _wrap_for_brax(env: Env, episode_length: int, action_repeat: int, randomization_fn: Callable | None = None) -> Env:
    """Brax's `wrap_env_fn` for an env `envs.make` already wrapped: vmapped, with Brax's info
    entries; `episode_length` is unused (ami's `TimeLimit` ends episodes)."""
    del episode_length
    if randomization_fn is not None:
        raise ValueError("train_brax: randomization_fn is not supported on ami envs")
    return _BraxEpisodeInfo(VmapWrapper(env), action_repeat)


def _device_put_replicated(tree: Any, devices: Any) -> Any:
    """`jax.device_put_replicated` from public APIs: each leaf `[...]` becomes `[D, ...]`, slice d on
    `devices[d]`."""
    devices = list(devices)
    mesh = jax.sharding.Mesh(np.array(devices), ("replica",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("replica"))
    return jax.tree.map(lambda x: jax.device_put(jnp.stack([jnp.asarray(x)] * len(devices)), sharding), tree)


@contextlib.contextmanager
def _brax_on_this_jax():
    """Brax 0.14.2's PPO and SAC call `jax.device_put_replicated`, which jax removed in 0.10 (an
    `AttributeError` since); it is provided for the length of the call, then removed again."""
    if hasattr(jax, "device_put_replicated"):
        yield
        return
    jax.device_put_replicated = _device_put_replicated
    try:
        yield
    finally:
        del jax.device_put_replicated


def _brax_defaults(algorithm: str) -> dict[str, Any]:
    """Every keyword argument of Brax's train function that has a default, with its default."""
    params = inspect.signature(_TRAIN_FNS[algorithm]).parameters
    return {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}


def accepted_options(algorithm: str) -> tuple[str, ...]:
    """The `options` keys `train_brax` passes on to Brax's train function of `algorithm`."""
    _check_algorithm(algorithm)
    params = inspect.signature(_TRAIN_FNS[algorithm]).parameters
    return tuple(sorted(name for name in params if name not in _RESERVED))


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")


def resolve_options(algorithm: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Brax's defaults, then this module's (`_DEFAULTS`), then `options`: every keyword argument
    of the train function except those train_brax sets (`_RESERVED`).

    Raises `ValueError` for an unknown algorithm, an unknown option key (naming it and listing the
    accepted ones) or a key train_brax sets from its own arguments.
    """
    _check_algorithm(algorithm)
    accepted = accepted_options(algorithm)
    for key in options or {}:
        if key in _RESERVED:
            raise ValueError(
                f"{algorithm} option {key!r} is set by train_brax from its own arguments "
                f"(env_name, env_steps, seed, episode_length, action_repeat); accepted options: {', '.join(accepted)}"
            )
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"unknown {algorithm} option {key!r}.{hint} Accepted options: {', '.join(accepted)}")
    kw = {k: v for k, v in _brax_defaults(algorithm).items() if k not in _RESERVED}
    kw.update(_DEFAULTS[algorithm])
    kw.update(options or {})
    return kw


def schedule(algorithm: str, kw: Mapping[str, Any], env_steps: int, action_repeat: int) -> tuple[int, int]:
    """`(env steps, gradient updates)` Brax's trainer runs for `num_timesteps=env_steps`, by its
    own arithmetic (`kw`: resolved options, see `resolve_options`).

    PPO: `num_evals - 1` (at least 1) epochs of `ceil(env_steps / (epochs * per_step * resets))`
    training steps, each `per_step = batch_size * unroll_length * num_minibatches *
    action_repeat` env steps and `num_updates_per_batch * num_minibatches` updates, `resets =
    max(num_resets_per_eval, 1)` times per epoch. SAC: a prefill of `ceil(min_replay_size /
    num_envs)` actor steps, then epochs of `ceil((env_steps - prefill) / (epochs * per_step))`
    actor steps, each `per_step = action_repeat * num_envs` env steps and
    `grad_updates_per_step` updates.
    """
    epochs = max(int(kw["num_evals"]) - 1, 1)
    if algorithm == "ppo":
        per_step = int(kw["batch_size"]) * int(kw["unroll_length"]) * int(kw["num_minibatches"]) * action_repeat
        resets = max(int(kw["num_resets_per_eval"]), 1)
        steps = epochs * resets * math.ceil(env_steps / (epochs * per_step * resets))
        return steps * per_step, steps * int(kw["num_updates_per_batch"]) * int(kw["num_minibatches"])
    per_step = action_repeat * int(kw["num_envs"])
    prefill = math.ceil(int(kw["min_replay_size"]) / int(kw["num_envs"])) * per_step
    steps = epochs * math.ceil(max(env_steps - prefill, 0) / (epochs * per_step))
    return prefill + steps * per_step, steps * int(kw["grad_updates_per_step"])


def _check_options(algorithm: str, kw: Mapping[str, Any], env_steps: int, action_repeat: int) -> None:
    """Raises `ValueError` for settings Brax would reject with a bare assertion."""
    num_envs = int(kw["num_envs"])
    if num_envs < 1:
        raise ValueError(f"{algorithm}: num_envs must be >= 1, got {num_envs}")
    if algorithm == "ppo":
        rows = int(kw["batch_size"]) * int(kw["num_minibatches"])
        if rows % num_envs:
            raise ValueError(
                f"ppo: batch_size * num_minibatches ({kw['batch_size']} * {kw['num_minibatches']} = {rows}) "
                f"must be divisible by num_envs ({num_envs})"
            )
        return
    prefill = math.ceil(int(kw["min_replay_size"]) / num_envs) * num_envs * action_repeat
    if prefill >= env_steps:
        raise ValueError(
            f"sac: the replay prefill (min_replay_size={kw['min_replay_size']} transitions, {prefill} env steps "
            f"with num_envs={num_envs} and action_repeat={action_repeat}) must be below env_steps={env_steps}"
        )


def episode_returns(
    env: Env, act: Callable[[jax.Array, jax.Array], jax.Array], key: jax.Array, num_episodes: int, num_steps: int
) -> jax.Array:
    """Returns `[num_episodes]` of `num_steps` decisions each, batched (an env without auto-reset).

    `act(obs [E, O], key) -> actions [E, A]`. Rewards are summed until an episode ends (`done`).
    Keys as in `ami.evaluate.run_episodes`: `k_reset, k_run = split(key)`; the episodes start
    from `split(k_reset, E)` and decision t uses `split(k_run, T)[t]`, so two policies given the
    same `key` play the same episodes. Pure; jit it with `env` and `act` closed over.
    """
    k_reset, k_run = jax.random.split(key)
    states = jax.vmap(env.reset)(jax.random.split(k_reset, num_episodes))
    zeros = jnp.zeros((num_episodes,), jnp.float32)

    def body(carry, key_t):
        states, ret, alive = carry
        states = jax.vmap(env.step)(states, act(states.obs, key_t))
        ret = ret + alive * states.reward
        alive = alive * (states.done == 0)
        return (states, ret, alive), None

    (_, ret, _), _ = jax.lax.scan(body, (states, zeros, jnp.ones_like(zeros)), jax.random.split(k_run, num_steps))
    return ret


def uniform_actions(action_size: int) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`act(obs [E, O], key) -> [E, A]` uniform in [-1, 1]: the random controller."""

    def act(obs: jax.Array, key: jax.Array) -> jax.Array:
        return jax.random.uniform(key, (obs.shape[0], action_size), minval=-1.0, maxval=1.0)

    return act


def _stats(returns: jax.Array) -> dict[str, float]:
    return {"return": float(jnp.mean(returns)), "return_std": float(jnp.std(returns))}


def _jsonable(value: Any) -> Any:
    """`value` as JSON: containers element-wise, a callable (or `partial`) by name, else `repr`."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, functools.partial):
        args = ", ".join(f"{k}={v!r}" for k, v in value.keywords.items())
        return f"{_jsonable(value.func)}({args})"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return repr(value)


def _scalar(value: Any) -> float | None:
    arr = np.asarray(value)
    return float(arr) if arr.ndim == 0 and np.issubdtype(arr.dtype, np.number) else None


def _progress_record(step: int, metrics: Mapping[str, Any], action_repeat: int) -> dict[str, Any]:
    """One `metrics.jsonl` row from a Brax progress callback: `phase: eval` with the evaluation's
    return, else `phase: train` with its scalars (`episode/` rows count decisions: scaled to env steps)."""
    scalars = {k: v for k, v in ((k, _scalar(v)) for k, v in metrics.items()) if v is not None}
    if any(name.startswith("episode/") for name in metrics):  # Brax's EpisodeMetricsLogger
        return {"phase": "train", "env_steps": step * action_repeat, **scalars}
    if "eval/episode_reward" not in metrics:
        return {"phase": "train", "env_steps": step, **scalars}
    record = {"phase": "eval", "env_steps": step, "return": _scalar(metrics["eval/episode_reward"])}
    if "eval/episode_reward_std" in metrics:
        record["return_std"] = _scalar(metrics["eval/episode_reward_std"])
    if "eval/avg_episode_length" in metrics:
        record["episode_length"] = _scalar(metrics["eval/avg_episode_length"])
    return record


def _final_returns(make_policy, params, eval_env: Env, episodes: int, length: int, seed: int) -> dict:
    """`{"learned": stats, "random": stats}` on the same `episodes` episodes from `jax.random.key(seed)`:
    Brax's deterministic policy and uniform actions in [-1, 1]."""

    def learned_returns(params, key):
        policy = make_policy(params, deterministic=True)  # (obs, key) -> (actions, extras)
        return episode_returns(eval_env, lambda obs, k: policy(obs, k)[0], key, episodes, length)

    def random_returns(key):
        return episode_returns(eval_env, uniform_actions(eval_env.action_size), key, episodes, length)

    key = jax.random.key(seed)
    return {"learned": _stats(jax.jit(learned_returns)(params, key)), "random": _stats(jax.jit(random_returns)(key))}


def train_brax(
    algorithm: str,
    env_name: str,
    run_dir: Path,
    *,
    env_steps: int,
    seed: int,
    episode_length: int,
    action_repeat: int,
    eval_episodes: int,
    options: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    quiet: bool = False,
    eval_seed: int = EVAL_KEY,
) -> dict:
    """Trains Brax's `algorithm` (`"ppo"` or `"sac"`) on `envs.make(env_name, ...)`; writes `run_dir`.

    Args:
      algorithm: one of `ALGORITHMS`.
      env_name: any name `envs.make` accepts.
      run_dir: created if missing; `metrics.jsonl` is started afresh, `summary.json` written.
      env_steps: env steps to train for (Brax's `num_timesteps`; control steps including the
        action repeat); Brax rounds up to whole training steps.
      seed: Brax's `seed` (network initialisation, exploration, training episodes).
      episode_length: decisions per episode, in training and in every evaluation.
      action_repeat: env steps per decision (ami's `ActionRepeat`).
      eval_episodes: episodes of the final evaluation (and, unless `options` says otherwise,
        Brax's `num_eval_envs` for its evaluations during training).
      options: keyword arguments for Brax's train function, over this module's defaults
        (`_DEFAULTS`, from MuJoCo Playground's DMC settings); see `accepted_options`.
      env_kwargs: passed to `envs.make`.
      quiet: print nothing.
      eval_seed: the key of the final evaluation's episodes (`ami`'s `eval.seed`).

    `metrics.jsonl` has one line per Brax progress callback, `{"wall_time_s", "phase": "eval",
    "env_steps", "return", "return_std", "episode_length"}` (Brax's evaluation; `phase: "train"`
    with its scalar metrics when a callback has no evaluation), and a last `phase: "summary"`
    line. `summary.json` holds `mean_return` (the trained policy, deterministic, on
    `eval_episodes` episodes from the fixed key `EVAL_KEY`), `random_return` (uniform actions in
    [-1, 1] on the same episodes), `env_steps`, `wall_time_s`, `updates` (gradient updates;
    None when Brax's step count differs from `schedule`'s), `algorithm` and `controllers`
    (`{"learned": {"return", "return_std"}, "random": {...}}`), plus the run's settings.

    Returns the summary. Raises `ValueError` for an unknown algorithm or option (see
    `resolve_options`) and for settings out of range.
    """
    start = time.perf_counter()
    kw = resolve_options(algorithm, options)
    for name, value in (
        ("env_steps", env_steps),
        ("episode_length", episode_length),
        ("action_repeat", action_repeat),
        ("eval_episodes", eval_episodes),
    ):
        if int(value) < 1:
            raise ValueError(f"train_brax: {name} must be >= 1, got {value}")
    env_steps, episode_length, action_repeat = int(env_steps), int(episode_length), int(action_repeat)
    eval_episodes = int(eval_episodes)
    if options is None or "num_eval_envs" not in options:
        kw["num_eval_envs"] = eval_episodes
    _check_options(algorithm, kw, env_steps, action_repeat)
    planned_steps, planned_updates = schedule(algorithm, kw, env_steps, action_repeat)

    env_kwargs = dict(env_kwargs or {})
    make = functools.partial(envs.make, env_name, episode_length=episode_length, action_repeat=action_repeat)
    train_env, eval_env = make(auto_reset=True, **env_kwargs), make(auto_reset=False, **env_kwargs)

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.write_text("")

    def log(record: dict[str, Any]) -> None:
        record = {"wall_time_s": round(time.perf_counter() - start, 2), **record}
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    reported: list[int] = []

    def progress(step: int, metrics: Mapping[str, Any]) -> None:
        record = _progress_record(int(step), metrics, action_repeat)
        log(record)
        if not any(name.startswith("episode/") for name in metrics):
            reported.append(int(step))
        if record["phase"] != "eval":
            return
        std = f" ± {record['return_std']:.1f}" if "return_std" in record else ""
        say(
            f"brax {algorithm} {env_name}: {step}/{planned_steps} env steps, "
            f"eval return {record['return']:.1f}{std} ({time.perf_counter() - start:.0f} s)"
        )

    say(
        f"brax {algorithm} {env_name}: {env_steps} env steps requested ({planned_steps} planned, "
        f"{planned_updates} updates), episode {episode_length} x repeat {action_repeat}, seed {seed}"
    )
    with _brax_on_this_jax():
        make_policy, params, _ = _TRAIN_FNS[algorithm](
            environment=train_env,
            num_timesteps=env_steps,
            episode_length=episode_length * action_repeat,
            action_repeat=action_repeat,
            seed=int(seed),
            wrap_env=True,
            wrap_env_fn=_wrap_for_brax,
            eval_env=eval_env,
            progress_fn=progress,
            **kw,
        )
    steps_taken = reported[-1] if reported else planned_steps
    results = _final_returns(make_policy, params, eval_env, eval_episodes, episode_length, eval_seed)
    summary = {
        "mean_return": results["learned"]["return"],
        "random_return": results["random"]["return"],
        "env_steps": steps_taken,
        "wall_time_s": round(time.perf_counter() - start, 2),
        "updates": planned_updates if steps_taken == planned_steps else None,
        "algorithm": algorithm,
        "env": env_name,
        "seed": int(seed),
        "episode_length": episode_length,
        "action_repeat": action_repeat,
        "eval_episodes": eval_episodes,
        "options": _jsonable(kw),
        "controllers": results,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log({"phase": "summary", **{k: v for k, v in summary.items() if k not in ("controllers", "options")}})
    say(
        f"brax {algorithm} {env_name}: return {summary['mean_return']:.1f} "
        f"(random {summary['random_return']:.1f}) after {steps_taken} env steps, {summary['wall_time_s']:.0f} s"
    )
    return summary


def train_from_config(cfg: Any, run_dir: Path, quiet: bool = False) -> dict:
    """`ami train` for `agent.name: ppo | sac`: `train_brax` with the budget `online.env_steps`, the
    run's `seed`, `env.*` (episode length and action repeat: the env's defaults when unset),
    `eval.episodes` and `eval.seed`, and `brax.options`; the config goes to `run_dir/config.yaml`.

    Brax's trainers keep their state to themselves: a stopped run starts again from scratch."""
    from ami import configlib

    e = cfg.env
    probe = envs.make(e.name, episode_length=e.episode_length, action_repeat=e.action_repeat, **e.kwargs)
    episode_length, action_repeat = int(probe.episode_length), envs.action_repeat(probe)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    configlib.dump(cfg, run_dir / "config.yaml")
    return train_brax(
        cfg.agent.name,
        e.name,
        run_dir,
        env_steps=cfg.online.env_steps,
        seed=cfg.seed,
        episode_length=episode_length,
        action_repeat=action_repeat,
        eval_episodes=cfg.eval.episodes,
        options=cfg.brax.options,
        env_kwargs=e.kwargs,
        quiet=quiet,
        eval_seed=cfg.eval.seed,
    )
