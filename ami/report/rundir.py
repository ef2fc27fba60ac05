"""What a run directory holds, read for the report: nothing here imports JAX or builds an agent.

`read_run(run_dir) -> RunFiles`: the resolved config (text and mapping), `summary.json` (None
while the run is unfinished), the rows of `metrics.jsonl`, the checkpoint steps, and what
`ami plan` left in `RUN_DIR/plan/` (its PNG figures and table) when it has run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import yaml

PLAN_DIR = "plan"
# `ami plan`'s figures (ami.diagnostics.plots.FIGURES), in the order the page shows them, with captions.
PLAN_FIGURES = {
    "traces.png": "best energy found against planner iterations, on the learned and on the true energy",
    "slice_1d.png": "learned vs true energy along 1-D slices through a plan",
    "slice_2d.png": "learned vs true energy on a plane through a plan (first action over its box)",
    "grad_cosine.png": "cosine between the learned and the true energy gradient along the planners' paths",
}


class RunFiles(NamedTuple):
    """A run directory, read.

    Attributes:
      run_dir: the directory.
      config_text: `config.yaml` as written (empty when missing).
      config: the same as a mapping.
      summary: `summary.json`, or None (the run has not finished, or never evaluated).
      rows: every JSON row of `metrics.jsonl`, in order (a torn last line is skipped).
      checkpoints: the checkpoint steps saved, ascending.
      plan_figures: `{file name: PNG bytes}` of `RUN_DIR/plan/` (empty before `ami plan`).
      plan_table: the rows of `ami plan`'s learned-vs-true table (`landscape.json["table"]`), or [].
    """

    run_dir: Path
    config_text: str
    config: dict[str, Any]
    summary: dict[str, Any] | None
    rows: list[dict[str, Any]]
    checkpoints: list[int]
    plan_figures: dict[str, bytes]
    plan_table: list[dict[str, Any]]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a `metrics.jsonl` (none when missing); a line that does not parse is skipped
    (a process killed mid-write leaves a torn last line)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def checkpoint_steps(directory: Path) -> list[int]:
    """The finished checkpoint steps under `directory` (numeric folder names), ascending."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def read_plan(plan_dir: Path) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """`ami plan`'s figures (`{name: PNG bytes}`, in `PLAN_FIGURES` order) and table rows, when present."""
    figures = {name: (plan_dir / name).read_bytes() for name in PLAN_FIGURES if (plan_dir / name).is_file()}
    table: list[dict[str, Any]] = []
    landscape = plan_dir / "landscape.json"
    if landscape.is_file():
        try:
            table = list(json.loads(landscape.read_text()).get("table", []))
        except (json.JSONDecodeError, AttributeError):
            table = []
    return figures, table


def read_run(run_dir: str | Path) -> RunFiles:
    """Reads `run_dir`; `ValueError` when it is not a run directory (no `config.yaml` and no `metrics.jsonl`)."""
    run_dir = Path(run_dir)
    config_path, metrics_path = run_dir / "config.yaml", run_dir / "metrics.jsonl"
    if not config_path.is_file() and not metrics_path.is_file():
        raise ValueError(f"{run_dir} is not a run directory: it has neither config.yaml nor metrics.jsonl")
    config_text = config_path.read_text() if config_path.is_file() else ""
    config = (yaml.safe_load(config_text) or {}) if config_text else {}
    summary_path = run_dir / "summary.json"
    summary = None
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError:
            summary = None
    figures, table = read_plan(run_dir / PLAN_DIR)
    return RunFiles(
        run_dir=run_dir,
        config_text=config_text,
        config=config if isinstance(config, dict) else {},
        summary=summary,
        rows=read_metrics(metrics_path),
        checkpoints=checkpoint_steps(run_dir / "checkpoints"),
        plan_figures=figures,
        plan_table=table,
    )


def goal_task(run: RunFiles) -> bool | None:
    """Whether the run is a goal task, from what it wrote (None when nothing tells)."""
    if run.summary is not None:
        return "success_rate" in run.summary
    phases = {row.get("phase") for row in run.rows}
    if "online" in phases:
        return False
    online = run.config.get("online", {})
    if isinstance(online, dict) and online.get("enabled") is not None:
        return not online["enabled"]
    return None
