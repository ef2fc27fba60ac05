"""Checks at the boundary: an env's output shapes, dtypes and finiteness.

`check_env(env, name)` traces `reset` and `step` abstractly (`jax.eval_shape`, nothing
compiles) and raises a `ValueError` naming the field, what was expected and what came.
`SpecCheck` does the same for every state an env returns while it runs, at trace time
only: its `step` and `reset` add no work to the compiled program (no host callback, no
finiteness reduction), so a planner that rolls the true env out pays nothing for it.

Finiteness is checked at the boundary, once per chunk of a rollout and outside any
planner's energy: `finite_flags(tree)` (pure, jittable) reduces a state or trajectory to
one "all finite" flag per field, and `check_finite(tree, name)` (host side) raises
`FloatingPointError` naming every field that holds a NaN or inf. `SpecCheck.check_finite`
records whether the env asked for that check (on for user envs from `envs.make`).

`check_step_spec(before, after, name)` (trace time, used by `envs.Canonical` on every step)
raises a `ValueError` naming both shapes and dtypes when a step returns an obs, reward or done
unlike the state it stepped, i.e. unlike what `reset` gave.
"""

from __future__ import annotations

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


def _path_name(path) -> str:
    """`("info", "goal_obs")`-style key path as `"info.goal_obs"`; `"value"` for the root."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(jax.tree_util.keystr((key,)))
    return ".".join(parts) or "value"


def _checked_part(tree):
    """`tree` with every `State` in it cut down to obs, reward and the goal observation."""

    def cut(node):
        if not isinstance(node, State):
            return node
        part = {"obs": node.obs, "reward": node.reward}
        if isinstance(node.info, dict) and GOAL_OBS in node.info:
            part["info"] = {GOAL_OBS: node.info[GOAL_OBS]}
        return part

    return jax.tree.map(cut, tree, is_leaf=lambda node: isinstance(node, State))


def _is_floating(x) -> bool:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return False
    return bool(jnp.issubdtype(dtype, jnp.floating))


def _checked_fields(tree) -> dict:
    """`{field path: floating leaf}` of what `finite_flags` checks in `tree`."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(_checked_part(tree))
    return {_path_name(path): x for path, x in leaves if _is_floating(x)}


def _all_finite(fields: dict) -> dict:
    return {field: jnp.all(jnp.isfinite(x)) for field, x in fields.items()}


_all_finite_jit = jax.jit(_all_finite)


def finite_flags(tree) -> dict[str, jax.Array]:
    """One "all finite" flag per checked field of `tree`: `{field path: bool []}`.

    Pure and jittable. For a brax `State` (of any batch shape, e.g. `[N]` or `[T, N]`) the
    fields are `obs`, `reward` and, for goal-conditioned envs, `info.goal_obs`; any other
    pytree (a `Trajectory` `[T, N, ...]`, a tuple of states, a dict) contributes every
    floating leaf, with states inside it cut down as above. Non-floating leaves and PRNG
    keys are skipped. Field paths join the pytree keys with dots: `"obs"`, `"next_obs"`,
    `"info.goal_obs"`, `"0.reward"`; a bare array is `"value"`.
    """
    return _all_finite(_checked_fields(tree))


def check_finite(tree, name: str = "env", where: str | None = None) -> None:
    """Raises `FloatingPointError` naming every field of `tree` holding a NaN or inf.

    Host side: call it on concrete arrays outside `jit` (once per rollout chunk), never
    inside a step or a planner's energy; inside traced code use `finite_flags`. `tree` is
    what `finite_flags` takes; `name` is the env's name for the message, `where` (optional)
    says where in the run the values came from (the step and the key). Only the scalar
    flags leave the device.
    """
    fields = _checked_fields(tree)
    if any(isinstance(x, jax.core.Tracer) for x in fields.values()):
        raise TypeError(
            f"check_finite(env {name!r}) needs concrete arrays; it was called inside jit/vmap/scan. "
            "Use finite_flags there, or call check_finite on the returned arrays."
        )
    flags = jax.device_get(_all_finite_jit(fields))
    bad = [field for field, ok in flags.items() if not bool(ok)]
    if bad:
        context = f"{where}; " if where else ""
        raise FloatingPointError(
            f"env {name!r} produced non-finite values in {', '.join(bad)} ({context}checked once per rollout chunk)"
        )


def _spec(x) -> str:
    return f"shape {list(getattr(x, 'shape', ()))} dtype {getattr(x, 'dtype', type(x).__name__)}"


def _contract_fields(state: State) -> dict:
    fields = {"obs": state.obs, "reward": state.reward, "done": state.done}
    if isinstance(state.info, dict) and GOAL_OBS in state.info:
        fields[f"info[{GOAL_OBS!r}]"] = state.info[GOAL_OBS]
    return fields


def check_step_spec(before: State, after: State, name: str = "env") -> None:
    """Raises `ValueError` when `step` returned a state whose obs, reward, done (or goal) differ
    in shape or dtype from those of the state it stepped (the one `reset` started, under jit).

    A jitted loop traces the step once, with reset's shapes, so this is checked while tracing
    (no run-time work), naming the field and both shapes and dtypes; weak types are ignored.
    """
    if not (isinstance(before, State) and isinstance(after, State)):
        return
    later = _contract_fields(after)
    for field, x in _contract_fields(before).items():
        if field not in later:
            continue
        y = later[field]
        same = jax.tree.structure(x) == jax.tree.structure(y) and all(
            jnp.shape(a) == jnp.shape(b) and jnp.asarray(a).dtype == jnp.asarray(b).dtype
            for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True)
        )
        if not same:
            raise ValueError(
                f"env {name!r}: step returned {field} of {_spec(y)}, but reset gave {_spec(x)} "
                "(a jitted loop needs the same shapes and dtypes at every step)"
            )


class SpecCheck(Wrapper):
    """Checks every state the env returns at trace time; raises naming the field on a mismatch.

    Shapes and dtypes of states and actions are checked while tracing, so a compiled
    `step` or `reset` carries no check at all. `check_finite` is only recorded, as the
    attribute `env.check_finite` (readable through outer wrappers): it asks the runner to
    check states for NaN/inf once per rollout chunk with `envs.check_finite`, outside any
    step or planner's energy.
    """

    def __init__(self, env: Env, name: str = "env", check_finite: bool = True):
        super().__init__(env)
        self.name = name
        self.check_finite = bool(check_finite)

    def _check(self, state: State) -> State:
        check_state(state, self.env, self.name)
        return state

    def reset(self, rng: jax.Array) -> State:
        return self._check(self.env.reset(rng))

    def step(self, state: State, action: jax.Array) -> State:
        if tuple(jnp.shape(action)) != (self.env.action_size,):
            raise ValueError(
                f"env {self.name!r}: action has shape {list(jnp.shape(action))}, expected [{self.env.action_size}]"
            )
        return self._check(self.env.step(state, action))
