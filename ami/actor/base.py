"""The planner contract every planner shares, the planner registry, and receding-horizon helpers.

A planner searches over one action sequence `[H, A]` inside a box `[low, high]` (per action
dimension) for the sequence of lowest energy. It never knows what the energy means: the
caller passes `energy_fn: [H, A] -> []` (mctx style), written for one problem and closing
over that problem's data, and `vmap`s `optimize` over keys or data as it likes.

* `make_planner(name, horizon=, action_size=, action_low=, action_high=, **options)` checks
  the settings and returns a `Planner`: a record of static settings and a pure, jittable
  `optimize(energy_fn, key, init=None, prior=None) -> PlanResult`.
* `register_planner` adds a planner kind to the registry `make_planner` reads.
* Shared pieces for planner kinds: option checks, the `ActionSpace` with its unit
  coordinates (`to_unit` / `from_unit`: the box mapped to `[-1, 1]`), initial sequences
  (`sample_unit_sequences`, `start_unit_sequences`), policy priors (`prior_unit_sequences`,
  `replace_last`), `safe_energy`, `check_energy`.
* `shift_plan`: drop the executed steps of a plan and pad it, for warm starts.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
EnergyFn = Callable[[Array], Array]

INIT_SCHEMES = ("uniform", "constant", "zeros")
FILLS = ("last", "zeros")


class PlanResult(NamedTuple):
    """What `Planner.optimize` returns (a pytree: under `vmap` every leaf gains a batch axis).

    Attributes:
      actions: `[H, A]` the best sequence found, inside `[low, high]`.
      energy: `[]` its energy, `energy_fn(actions)` up to rounding; `+inf` when no finite
        energy was found (a NaN energy is never reported as best).
      energy_trace: `[iterations]` the best energy found so far after each iteration
        (non-increasing).
      evaluations: `[]` int32, energy (and gradient) evaluations spent, all restarts counted.
    """

    actions: Array
    energy: Array
    energy_trace: Array
    evaluations: Array


class ActionSpace(NamedTuple):
    """The static search space: `horizon` steps of `action_size` actions in a box.

    `low` and `high` are tuples of `action_size` floats (hashable, so a `Planner` is too).
    """

    horizon: int
    action_size: int
    low: tuple[float, ...]
    high: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """`(H, A)`, the shape of one action sequence."""
        return (self.horizon, self.action_size)

    @property
    def mid(self) -> np.ndarray:
        """`[A]` float32 centre of the box."""
        return (0.5 * (np.asarray(self.low, np.float64) + np.asarray(self.high, np.float64))).astype(np.float32)

    @property
    def half_range(self) -> np.ndarray:
        """`[A]` float32 half-width of the box."""
        return (0.5 * (np.asarray(self.high, np.float64) - np.asarray(self.low, np.float64))).astype(np.float32)


class OptimizeFn(Protocol):
    """`optimize(energy_fn, key, init=None, prior=None) -> PlanResult`.

    `init` is an `[H, A]` warm start (e.g. the shifted previous plan); `prior` is an optional
    `[P, H, A]` array of candidate sequences in action units (e.g. proposed by an amortised
    policy), used as the planner kind documents. Both are arrays and may be traced.
    """

    def __call__(
        self, energy_fn: EnergyFn, key: Array, init: Array | None = None, prior: Array | None = None
    ) -> PlanResult: ...


class Planner(NamedTuple):
    """A configured planner: static settings and the pure function that plans.

    Attributes:
      name: the registered kind (`"gradient"`, ...).
      space: the `ActionSpace` searched.
      options: every option of the kind, defaults filled in, as sorted `(name, value)` pairs
        (`dict(planner.options)` to read them).
      optimize: `optimize(energy_fn, key, init=None, prior=None) -> PlanResult`, jittable and
        vmappable; `energy_fn` maps one `[H, A]` sequence to a scalar energy, `init` is an
        `[H, A]` warm start and `prior` a `[P, H, A]` array of candidate sequences.
    """

    name: str
    space: ActionSpace
    options: tuple[tuple[str, Any], ...]
    optimize: OptimizeFn

    @property
    def horizon(self) -> int:
        """H, steps per action sequence."""
        return self.space.horizon

    @property
    def action_size(self) -> int:
        """A, the size of one action."""
        return self.space.action_size


class PlannerKind(NamedTuple):
    """A registry entry: default options, their check, and the builder of `optimize`.

    `check(options)` raises `ValueError` naming a bad option; `build(space, options)` returns
    the `optimize` function. Both receive every option, defaults filled in.
    """

    defaults: Mapping[str, Any]
    check: Callable[[Mapping[str, Any]], None]
    build: Callable[[ActionSpace, Mapping[str, Any]], OptimizeFn]
    description: str = ""


_REGISTRY: dict[str, PlannerKind] = {}


def register_planner(
    name: str,
    *,
    defaults: Mapping[str, Any],
    check: Callable[[Mapping[str, Any]], None],
    build: Callable[[ActionSpace, Mapping[str, Any]], OptimizeFn],
    description: str = "",
    overwrite: bool = False,
) -> None:
    """Makes `make_planner(name, ...)` build planners with `build(space, options)`."""
    if not name or not isinstance(name, str):
        raise ValueError(f"register_planner: name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"register_planner: {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = PlannerKind(dict(defaults), check, build, description)


def planner_names() -> tuple[str, ...]:
    """The names `make_planner` accepts, sorted."""
    return tuple(sorted(_REGISTRY))


def planner_defaults(name: str) -> dict[str, Any]:
    """The options of planner kind `name` and their defaults."""
    return dict(_kind(name).defaults)


def _kind(name: str) -> PlannerKind:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), planner_names(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown planner {name!r}.{hint} Known planners: {', '.join(planner_names())}")
    return _REGISTRY[name]


def make_planner(
    name: str,
    *,
    horizon: int,
    action_size: int,
    action_low: float | np.ndarray = -1.0,
    action_high: float | np.ndarray = 1.0,
    **options: Any,
) -> Planner:
    """A `Planner` of kind `name` over `[horizon, action_size]` sequences in `[action_low, action_high]`.

    Args:
      name: a registered kind (`planner_names()`).
      horizon: H >= 1, steps per sequence.
      action_size: A >= 1.
      action_low, action_high: floats or `[A]` arrays, finite, `low < high` everywhere.
      **options: the kind's options (`planner_defaults(name)`); others raise `ValueError`.
    """
    kind = _kind(name)
    space = make_action_space(horizon, action_size, action_low, action_high)
    unknown = sorted(set(options) - set(kind.defaults))
    if unknown:
        known = ", ".join(sorted(kind.defaults))
        raise ValueError(f"planner {name!r}: unknown option(s) {', '.join(unknown)}; known options: {known}")
    resolved = {**kind.defaults, **options}
    kind.check(resolved)
    return Planner(name, space, tuple(sorted(resolved.items())), kind.build(space, resolved))


def make_action_space(horizon: int, action_size: int, low: float | np.ndarray, high: float | np.ndarray) -> ActionSpace:
    """Checks the sizes and bounds (`[A]` or scalars) and returns the `ActionSpace`."""
    check_int("horizon", horizon, minimum=1)
    check_int("action_size", action_size, minimum=1)
    bounds = []
    for option, value in (("action_low", low), ("action_high", high)):
        array = np.asarray(value, np.float64)
        if array.ndim > 1 or array.size not in (1, action_size):
            raise ValueError(f"{option} must be a float or an array of shape [{action_size}], got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{option} must be finite, got {value!r}")
        bounds.append(np.broadcast_to(array.reshape(-1), (action_size,)))
    if np.any(bounds[0] >= bounds[1]):
        raise ValueError(f"action_low must be < action_high in every dimension, got {low!r} and {high!r}")
    return ActionSpace(int(horizon), int(action_size), *(tuple(float(x) for x in b) for b in bounds))


# ----- option checks (each raises a ValueError naming the option) -----


def check_int(option: str, value: Any, minimum: int) -> None:
    """`value` is an integer (not a bool) `>= minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{option} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{option} must be >= {minimum}, got {value}")


def check_float(option: str, value: Any, *, positive: bool = False, allow_none: bool = False) -> None:
    """`value` is a finite real number, `> 0` if `positive` else `>= 0` (or None if `allow_none`)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{option} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{option} must be > 0, got {value}")
    if value < 0:
        raise ValueError(f"{option} must be >= 0, got {value}")


def check_choice(option: str, value: Any, choices: tuple[str, ...]) -> None:
    """`value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(map(repr, choices))}, got {value!r}")


# ----- pieces planners share -----


def to_unit(space: ActionSpace, actions: Array) -> Array:
    """`[..., A]` actions -> unit coordinates (`low -> -1`, `high -> 1`), same shape."""
    return (jnp.asarray(actions, jnp.float32) - space.mid) / space.half_range


def from_unit(space: ActionSpace, unit: Array) -> Array:
    """`[..., A]` unit coordinates -> actions, clipped into `[low, high]`, same shape."""
    actions = space.mid + space.half_range * unit
    return jnp.clip(actions, np.asarray(space.low, np.float32), np.asarray(space.high, np.float32))


def sample_unit_sequences(key: Array, space: ActionSpace, num: int, scheme: str) -> Array:
    """`[num, H, A]` initial sequences in unit coordinates.

    `"uniform"`: i.i.d. uniform in `[-1, 1]`; `"constant"`: one uniform action per sequence,
    repeated over the horizon; `"zeros"`: the centre of the box.
    """
    check_choice("init", scheme, INIT_SCHEMES)
    shape = (num, *space.shape)
    if scheme == "uniform":
        return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
    if scheme == "constant":
        per_sequence = jax.random.uniform(key, (num, 1, space.action_size), minval=-1.0, maxval=1.0)
        return jnp.broadcast_to(per_sequence, shape)
    return jnp.zeros(shape, jnp.float32)


def num_noisy_starts(num: int) -> int:
    """How many of `num` warm-started restarts start near the warm start: a quarter (rounded up) of `num - 1`."""
    return (num - 1 + 3) // 4


def start_unit_sequences(
    key: Array, space: ActionSpace, num: int, scheme: str, init: Array | None = None, noise: float = 0.1
) -> Array:
    """`[num, H, A]` starting sequences in unit coordinates, with an optional `[H, A]` warm start.

    Without `init` all come from `scheme` (`sample_unit_sequences`). With `init` (in action
    units): sequence 0 is `init` exactly, the next `num_noisy_starts(num)` are `init` plus
    Gaussian noise of std `noise` (unit coordinates, i.e. relative to the half-range),
    clipped to the box, and the rest come from `scheme`.
    """
    key_fresh, key_noise = jax.random.split(key)
    fresh = sample_unit_sequences(key_fresh, space, num, scheme)
    if init is None:
        return fresh
    warm = to_unit(space, check_init(init, space))
    noisy = jnp.clip(warm + noise * jax.random.normal(key_noise, fresh.shape), -1.0, 1.0)
    index = jnp.arange(num)[:, None, None]
    return jnp.where(index == 0, warm, jnp.where(index <= num_noisy_starts(num), noisy, fresh))


def check_init(init: Array, space: ActionSpace) -> Array:
    """A warm start of shape `[H, A]` as float32, NaN and inf entries replaced by the box's
    centre (a non-finite warm start never poisons the search); raises `ValueError` for another shape."""
    init = jnp.asarray(init, jnp.float32)
    if init.shape != space.shape:
        raise ValueError(f"init must have shape [H, A] = {list(space.shape)}, got {list(init.shape)}")
    return jnp.where(jnp.isfinite(init), init, space.mid)


def prior_unit_sequences(prior: Array, space: ActionSpace, capacity: int, slots: str) -> Array:
    """A policy prior `[P, H, A]` (action units) -> `[P, H, A]` unit coordinates, clipped to `[-1, 1]`
    (NaN and inf entries at the centre, 0).

    Raises `ValueError` naming `prior` unless it has shape `[P, H, A]` with `1 <= P <= capacity`
    (`slots` names what the P sequences take the place of, for the message).
    """
    prior = jnp.asarray(prior, jnp.float32)
    if prior.ndim != 3 or prior.shape[1:] != space.shape or prior.shape[0] < 1:
        expected = ["P", *space.shape]
        raise ValueError(f"prior must have shape [P, H, A] = {expected} with P >= 1, got {list(prior.shape)}")
    if prior.shape[0] > capacity:
        raise ValueError(f"prior holds {prior.shape[0]} sequences but there are only {capacity} {slots}")
    unit = to_unit(space, prior)
    return jnp.clip(jnp.where(jnp.isfinite(unit), unit, 0.0), -1.0, 1.0)


def replace_last(sequences: Array, replacements: Array) -> Array:
    """`sequences [N, H, A]` with its last `P` rows replaced by `replacements [P, H, A]` (`P <= N`)."""
    return sequences.at[sequences.shape[0] - replacements.shape[0] :].set(replacements)


def check_energy(energy: Array) -> Array:
    """The output of a user `energy_fn` as a float32 scalar; raises `ValueError` unless it is `[]`."""
    energy = jnp.asarray(energy)
    if energy.shape != ():
        raise ValueError(f"energy_fn must map one [H, A] action sequence to a scalar, got shape {energy.shape}")
    if not jnp.issubdtype(energy.dtype, jnp.floating):
        raise ValueError(f"energy_fn must return a floating-point scalar, got dtype {energy.dtype}")
    return energy.astype(jnp.float32)


def safe_energy(energy: Array) -> Array:
    """Energies with NaN and `-inf`/`+inf` replaced by `+inf`, so they never win a minimum; same shape."""
    return jnp.where(jnp.isfinite(energy), energy, jnp.inf)


# ----- receding horizon -----


def shift_plan(actions: Array, k: int | Array, fill: str | Array = "last") -> Array:
    """Drops the first `k` steps of a plan and pads its end: `[H, A] -> [H, A]`.

    `out[t] = actions[t + k]` for `t + k < H`; the padded steps are `actions[H - 1]`
    (`fill="last"`), zeros (`fill="zeros"`, the centre of symmetric bounds) or a given `[A]`
    array (e.g. the centre of the box). `k` may be a traced integer; it is clipped to
    `[0, H]` (so `k >= H` gives a plan made of padding only).
    """
    actions = jnp.asarray(actions)
    if actions.ndim != 2:
        raise ValueError(f"shift_plan: actions must have shape [H, A], got {actions.shape}")
    if isinstance(k, numbers.Integral) and k < 0:
        raise ValueError(f"shift_plan: k must be >= 0, got {k}")
    if isinstance(fill, str):
        check_choice("fill", fill, FILLS)
    horizon = actions.shape[0]
    k = min(int(k), horizon) if isinstance(k, numbers.Integral) else jnp.clip(k, 0, horizon)
    source = jnp.arange(horizon) + k
    shifted = jnp.take(actions, jnp.minimum(source, horizon - 1), axis=0)
    if isinstance(fill, str) and fill == "last":
        return shifted
    pad = jnp.zeros(actions.shape[1:], actions.dtype) if isinstance(fill, str) else jnp.asarray(fill, actions.dtype)
    if pad.shape not in ((), actions.shape[1:]):
        raise ValueError(f"shift_plan: fill must be 'last', 'zeros' or an array of shape {actions.shape[1:]}")
    return jnp.where((source < horizon)[:, None], shifted, pad)
