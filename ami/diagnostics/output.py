"""What `ami plan` writes: the learned-vs-true table (rows and text) and the strict JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def table_rows(records: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per planner: success learned vs true dynamics, energies, gradient cosine, time."""
    rows = []
    for label, r in records.items():
        grads = r["gradients"]["at_learned_plan"]
        rows.append(
            {
                "planner": label,
                "success_learned": r["success"]["learned"],
                "success_true_dynamics": r["success"]["true_dynamics"],
                "energy_learned": r["learned"]["energy_mean"],
                "true_energy_of_learned_plan": r["learned"]["true_energy_of_plan_mean"],
                "energy_true_dynamics": r["true_dynamics"]["energy_mean"],
                "grad_cosine_mean": grads["cosine_mean"],
                "true_grad_unhealthy": grads["nonfinite"] + grads["exploding"],
                "fallback_used": r["fallback_used"],
                "decision_ms_learned": 1e3 * r["learned"]["decision_wall_s"],
                "decision_ms_true": 1e3 * r["true_dynamics"]["decision_wall_s"],
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table (`-` for a missing number)."""
    columns = list(rows[0]) if rows else []
    cell = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    cells = [[cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def jsonable(obj: Any) -> Any:
    """`obj` with non-finite floats as None (strict JSON), numpy values as Python ones."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write(record: dict[str, Any], out_dir: Path) -> list[Path]:
    """Writes `landscape.json` and `pairs.json` into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "landscape.json", out_dir / "pairs.json"]
    paths[0].write_text(json.dumps(jsonable(record), indent=1, allow_nan=False))
    paths[1].write_text(json.dumps(jsonable(record["pairs"]), indent=1, allow_nan=False))
    return paths
