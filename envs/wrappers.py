"""Wrappers over Brax's `Env`: dtypes, action rescaling and repeat, time limit, auto-reset.

Each wrapper is a `brax.envs.base.Wrapper`, so it forwards unknown attributes to the env it
wraps and keeps the `reset` / `step` contract. `make` stacks them, innermost first:

    Canonical -> RescaleActions -> ActionRepeat -> TimeLimit -> AutoReset -> SpecCheck

Keys the wrappers add to `state.info`:

* `steps` (int32): agent steps since the episode began (`TimeLimit`).
* `truncation` (float32 0/1): the episode ended by the time limit, not by the task.
* `final_obs`: the observation the last step reached, before an auto-reset replaced it;
  use it as the transition's next observation (`AutoReset`).
* `reset_key`: the key the next auto-reset draws its fresh initial state from.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import Env, State, Wrapper
from envs.checks import check_step_spec

STEPS = "steps"
TRUNCATION = "truncation"
FINAL_OBS = "final_obs"
RESET_KEY = "reset_key"


def canonicalize(tree):
    """Every array leaf as a strongly typed array of its own dtype (float64 -> float32).

    Brax and MJX return some leaves weakly typed on `reset` and strongly typed on `step`
    (or the reverse); jitted code then traces twice. Normalising both removes the retrace.
    """

    def fix(x):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            return x
        x = jnp.asarray(x)
        dtype = jnp.float32 if x.dtype == jnp.float64 else x.dtype
        return jnp.asarray(x, dtype)

    return jax.tree.map(fix, tree)


class Canonical(Wrapper):
    """Normalises dtypes and weak types of every `State` leaf; caches the sizes.

    Brax's `PipelineEnv.observation_size` runs a full reset each time it is read; here it
    is computed once, abstractly (`jax.eval_shape`), and kept. Each `step` is checked while
    tracing (`envs.checks.check_step_spec`): an obs, reward or done whose shape or dtype differs
    from the stepped state's (reset's) raises a `ValueError` naming env `name` and both specs,
    here where the env's own output enters, before an outer wrapper broadcasts it.
    """

    def __init__(self, env: Env, name: str = "env"):
        super().__init__(env)
        self._obs_size = None
        self.name = name

    def reset(self, rng: jax.Array) -> State:
        return canonicalize(self.env.reset(rng))

    def step(self, state: State, action: jax.Array) -> State:
        nxt = canonicalize(self.env.step(state, action))
        check_step_spec(state, nxt, self.name)
        return nxt

    @property
    def observation_size(self):
        if self._obs_size is None:
            obs = jax.eval_shape(self.env.reset, jax.random.key(0)).obs
            self._obs_size = _obs_size(obs)
        return self._obs_size


def _obs_size(obs):
    """`observation_size` from an abstract observation: `O` for a vector `[O]`, the shape tuple
    (e.g. `(H, W, C)`) for an image, a tree of shapes for a dict of observations."""
    if not hasattr(obs, "shape"):
        return jax.tree.map(lambda x: x.shape, obs)
    return obs.shape[-1] if len(obs.shape) == 1 else tuple(obs.shape)


class RescaleActions(Wrapper):
    """Agent actions in [-1, 1] mapped affinely onto the env's own bounds `[low, high]`."""

    def __init__(self, env: Env, low, high):
        super().__init__(env)
        low, high = np.broadcast_arrays(np.asarray(low, np.float32), np.asarray(high, np.float32))
        if low.shape not in ((), (env.action_size,)) or not np.all(high > low):
            raise ValueError(f"RescaleActions: need low < high with shape [{env.action_size}], got {low} and {high}")
        self.low, self.high = low, high

    def step(self, state: State, action: jax.Array) -> State:
        action = jnp.clip(action, -1.0, 1.0)
        return self.env.step(state, self.low + 0.5 * (action + 1.0) * (self.high - self.low))


class ActionRepeat(Wrapper):
    """Repeats each action `repeat` times, summing rewards; a sub-step after `done` is a no-op."""

    def __init__(self, env: Env, repeat: int):
        super().__init__(env)
        if int(repeat) < 1:
            raise ValueError(f"ActionRepeat: repeat must be >= 1, got {repeat}")
        self.repeat = int(repeat)

    def step(self, state: State, action: jax.Array) -> State:
        def sub_step(carry, _):
            state, total = carry
            nxt = self.env.step(state, action)
            live = state.done == 0
            nxt = jax.tree.map(lambda new, old: jnp.where(live, new, old), nxt, state)
            return (nxt, total + jnp.where(live, nxt.reward, 0.0)), None

        first = self.env.step(state, action)
        (last, total), _ = jax.lax.scan(sub_step, (first, first.reward), None, self.repeat - 1)
        return last.replace(reward=total)


class TimeLimit(Wrapper):
    """Ends an episode after `episode_length` agent steps; marks that as a truncation."""

    def __init__(self, env: Env, episode_length: int):
        super().__init__(env)
        if int(episode_length) < 1:
            raise ValueError(f"TimeLimit: episode_length must be >= 1, got {episode_length}")
        self.episode_length = int(episode_length)

    def reset(self, rng: jax.Array) -> State:
        state = self.env.reset(rng)
        info = {**state.info, STEPS: jnp.zeros((), jnp.int32), TRUNCATION: jnp.zeros((), jnp.float32)}
        return state.replace(info=info)

    def step(self, state: State, action: jax.Array) -> State:
        inner_info = {k: v for k, v in state.info.items() if k not in (STEPS, TRUNCATION)}
        nxt = self.env.step(state.replace(info=inner_info), action)
        steps = state.info[STEPS] + 1
        out_of_time = steps >= self.episode_length
        truncation = (out_of_time & (nxt.done == 0)).astype(jnp.float32)
        done = jnp.maximum(nxt.done, out_of_time.astype(nxt.done.dtype))
        info = {**nxt.info, STEPS: steps, TRUNCATION: truncation}
        return nxt.replace(done=done, info=info)


class AutoReset(Wrapper):
    """After a step that ends an episode, starts a new one from a freshly drawn initial state.

    Unlike Brax's `AutoResetWrapper`, which restores the episode's first state every time,
    each reset draws a new state (and, for goal tasks, a new goal) from `info["reset_key"]`.
    The returned state keeps the finished transition's `reward`, `done`, `metrics` and
    `truncation`; its `obs` and `pipeline_state` are the new episode's, and the observation
    the step actually reached is in `info["final_obs"]`.
    """

    def reset(self, rng: jax.Array) -> State:
        k_env, k_next = jax.random.split(rng)
        state = self.env.reset(k_env)
        return state.replace(info={**state.info, RESET_KEY: k_next, FINAL_OBS: state.obs})

    def step(self, state: State, action: jax.Array) -> State:
        reset_key, k_fresh = jax.random.split(state.info[RESET_KEY])
        inner_info = {k: v for k, v in state.info.items() if k not in (RESET_KEY, FINAL_OBS)}
        nxt = self.env.step(state.replace(done=jnp.zeros_like(state.done), info=inner_info), action)
        fresh = self.env.reset(k_fresh)
        done = nxt.done > 0

        def pick(new, old):
            return jnp.where(done, new, old)

        info = jax.tree.map(pick, fresh.info, nxt.info)
        if TRUNCATION in nxt.info:
            info[TRUNCATION] = nxt.info[TRUNCATION]
        info.update({RESET_KEY: reset_key, FINAL_OBS: nxt.obs})
        return nxt.replace(
            pipeline_state=jax.tree.map(pick, fresh.pipeline_state, nxt.pipeline_state),
            obs=jax.tree.map(pick, fresh.obs, nxt.obs),
            info=info,
        )
