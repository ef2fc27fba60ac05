"""Learning curves from `metrics.jsonl` rows: which charts a run gets, and their SVG.

Rows carry a `phase` (`collect`, `train`, `online`, `eval`, `summary`, `resume`, `preempted`)
and `wall_time_s`. Training rows are `train` (offline, counted in `updates`) and `online`
(counted in `env_steps`, with `updates` too); `eval` rows hold the evaluations made while
learning online. Every chart is drawn twice: against the run's counter (env steps online,
updates offline) and against wall-clock seconds.

The charts (`plan_charts`): losses (every `*loss` scalar never negative on one log-scaled chart,
each other one on its own), the collapse monitors
(`z_std`, `z_rank`, the anti-collapse terms), returns (the online episodes' `train_return`
and the evaluations' `return`), success (evaluations' `success_rate`), then one small chart
per other logged scalar. Online rows logged before the first update (the seed steps, where
every training scalar is 0) are left out of the training charts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from ami.report.svg import Series, line_chart

TRAIN_PHASES = ("train", "online")
EVAL_PHASE = "eval"
EVENT_PHASES = ("resume", "preempted")
MONITORS = ("z_std", "z_rank")
COLLAPSE_PREFIXES = ("vicreg_", "sigreg", "ema_")
NOT_SCALARS = ("wall_time_s", "wall_time_train_s", "env_steps", "updates", "phase")


class ChartSpec(NamedTuple):
    """One chart: a `title`, its y label, the lines as `(label, phase, key)`, and a log y axis."""

    title: str
    ylabel: str
    lines: tuple[tuple[str, str, str], ...]
    log_y: bool = False


def counter(rows: list[dict[str, Any]]) -> str:
    """The x axis a run is counted in: `env_steps` when it learned online, else `updates`."""
    return "env_steps" if any(r.get("phase") == "online" for r in rows) else "updates"


def scalar_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every key holding a number in some row (booleans and counters left out), first seen first."""
    keys: dict[str, None] = {}
    for row in rows:
        for k, v in row.items():
            if k not in NOT_SCALARS and isinstance(v, int | float) and not isinstance(v, bool):
                keys.setdefault(k)
    return list(keys)


def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]


def _positive(rows: list[dict[str, Any]], key: str) -> bool:
    values = _values(rows, key)
    return bool(values) and all(v > 0 for v in values)


def _nonnegative(rows: list[dict[str, Any]], key: str) -> bool:
    """Whether `key` is never negative and sometimes positive (drawn on a log scale, zeros left out)."""
    values = _values(rows, key)
    return any(v > 0 for v in values) and all(v >= 0 for v in values)


def plan_charts(rows: list[dict[str, Any]]) -> tuple[list[ChartSpec], list[ChartSpec]]:
    """`(main, other)` charts for a run's rows: the headline charts and one per remaining scalar."""
    train = [r for r in rows if r.get("phase") in TRAIN_PHASES]
    evals = [r for r in rows if r.get("phase") == EVAL_PHASE]
    train_keys, eval_keys = scalar_keys(train), scalar_keys(evals)
    used: set[str] = set()
    main: list[ChartSpec] = []
    losses = [k for k in train_keys if k.endswith("loss")]
    positive = [k for k in losses if _nonnegative(train, k)]
    if positive:
        main.append(ChartSpec("losses", "loss", tuple((k, "train", k) for k in positive), True))
    for k in losses:
        if k not in positive:  # a loss that goes negative (a policy's -Q) gets its own linear chart
            main.append(ChartSpec(k, "loss", ((k, "train", k),)))
    used.update(losses)
    for key in MONITORS:
        if key in train_keys:
            main.append(ChartSpec(f"collapse monitor: {key}", key, ((key, "train", key),)))
            used.add(key)
    terms = [k for k in train_keys if k.startswith(COLLAPSE_PREFIXES)]
    if terms:
        main.append(ChartSpec("anti-collapse terms", "value", tuple((k, "train", k) for k in terms)))
        used.update(terms)
    returns = [("train episodes", "train", "train_return")] if "train_return" in train_keys else []
    returns += [("evaluation", "eval", "return")] if "return" in eval_keys else []
    if returns:
        main.append(ChartSpec("returns", "episode return", tuple(returns)))
        used.add("train_return")
    if "success_rate" in eval_keys:
        main.append(ChartSpec("success", "success rate", (("evaluation", "eval", "success_rate"),)))
    other = [ChartSpec(k, k, ((k, "train", k),), _positive(train, k) and k.endswith("norm")) for k in train_keys]
    return main, [c for c in other if c.lines[0][2] not in used]


def _points(rows: list[dict[str, Any]], phase: str, key: str, x_key: str) -> tuple[np.ndarray, np.ndarray]:
    phases = TRAIN_PHASES if phase == "train" else (phase,)
    # online rows before the first update (the seed steps) log zeros for every training scalar
    untrained = lambda r: r.get("phase") == "online" and r.get("updates") == 0 and key != "train_return"  # noqa: E731
    pts = [
        (float(r[x_key]), float(r[key]) if isinstance(r.get(key), int | float) else math.nan)
        for r in rows
        if r.get("phase") in phases and isinstance(r.get(x_key), int | float) and not untrained(r)
    ]
    if not pts:
        return np.zeros(0), np.zeros(0)
    x, y = np.array(pts, np.float64).T
    return x, y


X_LABELS = {"env_steps": "env steps", "updates": "updates", "wall_time_s": "wall-clock time (s)"}


def draw(rows: list[dict[str, Any]], spec: ChartSpec, x_key: str, **size: int) -> str:
    """The `<svg>` of `spec` over the rows, against `x_key` (a counter or `wall_time_s`)."""
    series = [Series(label, *_points(rows, phase, key, x_key)) for label, phase, key in spec.lines]
    xlabel = X_LABELS.get(x_key, x_key)
    return line_chart(series, title=spec.title, xlabel=xlabel, ylabel=spec.ylabel, log_y=spec.log_y, **size)


def events(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that mark events (resumed, preempted), as logged."""
    return [r for r in rows if r.get("phase") in EVENT_PHASES]
