"""Where a run's metrics go besides `metrics.jsonl`: TensorBoard event files and Weights & Biases.

`metrics.jsonl` is the record of a run (`ami.progress`); a sink here is a view of it for the
tools people already watch runs with. Each row is turned into namespaced scalars (`tags`):
`train/` for losses and collapse monitors, `env/` for what the envs gave (training returns,
fault counters of observations and rewards), `eval/` for evaluations and the final summary,
`plan/` for planner diagnostics. A sink that fails (a missing package, a service that is down,
a full disk) is a warning and is dropped; it never stops the run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

NAMESPACES = ("train", "env", "eval", "plan")
# Counters that place a row on the x axis rather than being plotted themselves.
STEP_KEYS = ("env_steps", "updates")
SKIPPED = ("phase", "wall_time_s", *STEP_KEYS)
# Keys of training rows that describe the envs, not the learner.
ENV_KEYS = frozenset(
    {"train_return", "episodes", "env_steps_per_s", "nonfinite_obs", "nonfinite_rewards", "episode_length"}
)
# Row phases whose scalars are all of one namespace.
PHASE_NAMESPACE = {"eval": "eval", "summary": "eval", "plan": "plan", "collect": "env"}


def tag(phase: str, key: str) -> str:
    """The namespaced name of `key` in a row of `phase`, e.g. `("online", "pred_loss") -> "train/pred_loss"`."""
    if "/" in key and key.split("/", 1)[0] in NAMESPACES:
        return key
    if phase in PHASE_NAMESPACE:
        return f"{PHASE_NAMESPACE[phase]}/{key}"
    return f"{'env' if key in ENV_KEYS else 'train'}/{key}"


def scalars(record: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
    """A row's x-axis step (env steps where counted, else updates, else 0) and its finite numeric
    values by tag; strings, lists and the counters themselves are left out."""
    step = next((int(record[k]) for k in STEP_KEYS if isinstance(record.get(k), int | float)), 0)
    phase = str(record.get("phase", "train"))
    values = {}
    for key, value in record.items():
        if key in SKIPPED or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            values[tag(phase, key)] = float(value)
    return step, values


class Sink(Protocol):
    def write(self, step: int, values: dict[str, float], wall_time: float) -> None: ...

    def close(self) -> None: ...


class TensorBoard:
    """Event files in `RUN_DIR/tensorboard` (`tensorboard --logdir RUN_DIR`)."""

    def __init__(self, run_dir: Path):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(Path(run_dir) / "tensorboard"), flush_secs=30)

    def write(self, step: int, values: dict[str, float], wall_time: float) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step, walltime=wall_time)

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A Weights & Biases run (the optional `wandb` extra) named after the run directory; a
    resumed run continues the same W&B run."""

    def __init__(self, run_dir: Path, project: str, config: Mapping[str, Any] | None):
        import wandb

        run_dir = Path(run_dir).resolve()
        self.run = wandb.init(
            project=project,
            dir=str(run_dir),
            name=run_dir.name,
            id=f"{run_dir.name}-{abs(hash(str(run_dir))) % 10**8:08d}",
            resume="allow",
            config=dict(config or {}),
        )

    def write(self, step: int, values: dict[str, float], wall_time: float) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def _warn(what: str, error: BaseException) -> None:
    warnings.warn(f"logging: {what} is off for this run: {type(error).__name__}: {error}", RuntimeWarning, stacklevel=3)


def open_sinks(run_dir: Path, log_cfg: Any, config: Mapping[str, Any] | None = None) -> list[Sink]:
    """The sinks `log_cfg` (`ami.config.LogConfig`) asks for; one that cannot start is a warning."""
    sinks: list[Sink] = []
    wanted = [("TensorBoard", lambda: TensorBoard(run_dir))] if log_cfg.tensorboard else []
    if log_cfg.wandb:
        what = "Weights & Biases (pip install 'ami[wandb]')"
        wanted.append((what, lambda: WandB(run_dir, log_cfg.wandb_project, config)))
    for what, start in wanted:
        try:
            sinks.append(start())
        except Exception as error:  # a view of the run, never a reason to stop it
            _warn(what, error)
    return sinks


class Fanout:
    """Writes each row to every sink; drops a sink (with a warning) the first time it fails."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = list(sinks)

    def write(self, record: Mapping[str, Any], wall_time: float) -> None:
        step, values = scalars(record)
        if not values:
            return
        for sink in list(self.sinks):
            try:
                sink.write(step, values, wall_time)
            except Exception as error:
                self.sinks.remove(sink)
                _warn(type(sink).__name__, error)

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as error:
                _warn(type(sink).__name__, error)
        self.sinks = []
