"""Checks at the boundary: an env's output shapes, dtypes and finiteness.

`check_env(env, name)` traces `reset` and `step` abstractly (`jax.eval_shape`, nothing
compiles) and raises a `ValueError` naming the field, what was expected and what came.
`SpecCheck` does the same for every state an env returns while it runs: shapes and
dtypes at trace time, and non-finite values at run time (a host callback that raises
`FloatingPointError` naming the fields).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import GOAL_OBS, Env, State, Wrapper, is_goal_conditioned


def _describe(x) -> str:
    weak = " (weak)" if getattr(x, "weak_type", False) else ""
    return f"{getattr(x, 'dtype', type(x).__name__)}{list(getattr(x, 'shape', ()))}{weak}"


def _expect(name: str, field: str, x, shape: tuple, floating: bool = True) -> None:
    if not hasattr(x, "shape"):
        raise ValueError(f"env {name!r}: {field} should be an array of shape {list(shape)}, got {type(x).__name__}")
    if tuple(x.shape) != shape:
        raise ValueError(f"env {name!r}: {field} has shape {list(x.shape)}, expected {list(shape)}")
    if floating and not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"env {name!r}: {field} has dtype {x.dtype}, expected a floating dtype")


def check_state(state: State, env: Env, name: str) -> None:
    """Raises `ValueError` unless one unbatched `state` matches `env`'s declared sizes."""
    if not isinstance(state, State):
        raise ValueError(f"env {name!r}: reset/step must return a brax State, got {type(state).__name__}")
    size = env.observation_size
    if isinstance(size, int):
        _expect(name, "obs", state.obs, (size,))
    elif isinstance(size, tuple) and all(isinstance(s, int) for s in size):
        _expect(name, "obs", state.obs, size)
    _expect(name, "reward", state.reward, ())
    _expect(name, "done", state.done, ())
    if is_goal_conditioned(env):
        if GOAL_OBS not in state.info:
            raise ValueError(f"env {name!r} is goal-conditioned but its state.info has no {GOAL_OBS!r}")
        _expect(name, f"info[{GOAL_OBS!r}]", state.info[GOAL_OBS], tuple(np.shape(state.obs)))


def _avals(tree):
    return jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False))), tree)


def check_env(env: Env, name: str = "env") -> None:
    """Abstractly traces `reset` and `step` of `env` and checks the contract.

    Raises `TypeError` when `env` lacks the API and `ValueError` when shapes or dtypes are
    wrong, or when `step` returns a state whose structure, dtypes or weak types differ
    from `reset`'s (a jitted step would then recompile on its second call).
    """
    missing = [a for a in ("reset", "step", "observation_size", "action_size") if not hasattr(env, a)]
    if missing:
        raise TypeError(f"env {name!r} ({type(env).__name__}) lacks the Brax Env API: missing {missing}")
    if not isinstance(env.action_size, int) or env.action_size < 1:
        raise ValueError(f"env {name!r}: action_size must be a positive int, got {env.action_size!r}")
    state = jax.eval_shape(env.reset, jax.random.key(0))
    check_state(state, env, name)
    action = jax.ShapeDtypeStruct((env.action_size,), jnp.float32)
    nxt = jax.eval_shape(env.step, state, action)
    check_state(nxt, env, name)
    if jax.tree.structure(nxt) != jax.tree.structure(state):
        raise ValueError(
            f"env {name!r}: step returns a state of another structure than reset:\n"
            f"  reset: {jax.tree.structure(state)}\n  step:  {jax.tree.structure(nxt)}"
        )
    for path, a, b in zip(
        jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(state), jax.tree.leaves(nxt), strict=True
    ):
        if _avals(a) != _avals(b):
            where = jax.tree_util.keystr(path[0])
            raise ValueError(f"env {name!r}: state{where} is {_describe(a)} after reset but {_describe(b)} after step")


def _raise_if_nonfinite(name: str, finite: dict) -> None:
    bad = [field for field, ok in finite.items() if not np.all(ok)]
    if bad:
        raise FloatingPointError(f"env {name!r} returned non-finite values in {', '.join(bad)}")


class SpecCheck(Wrapper):
    """Checks every state the env returns; raises naming the field on a mismatch.

    Shapes and dtypes are checked while tracing (free at run time). With
    `check_finite=True`, obs, reward and the goal observation are checked for NaN/inf on
    every call through a host callback (slower; meant for debugging and user envs).
    """

    def __init__(self, env: Env, name: str = "env", check_finite: bool = True):
        super().__init__(env)
        self.name = name
        self.check_finite = bool(check_finite)

    def _check(self, state: State) -> State:
        check_state(state, self.env, self.name)
        if self.check_finite:
            fields = {"obs": state.obs, "reward": state.reward}
            if GOAL_OBS in state.info:
                fields[f"info[{GOAL_OBS!r}]"] = state.info[GOAL_OBS]
            finite = {k: jnp.all(jnp.isfinite(v)) for k, v in fields.items()}
            jax.debug.callback(partial(_raise_if_nonfinite, self.name), finite)
        return state

    def reset(self, rng: jax.Array) -> State:
        return self._check(self.env.reset(rng))

    def step(self, state: State, action: jax.Array) -> State:
        if tuple(jnp.shape(action)) != (self.env.action_size,):
            raise ValueError(
                f"env {self.name!r}: action has shape {list(jnp.shape(action))}, expected [{self.env.action_size}]"
            )
        return self._check(self.env.step(state, action))
