"""The figures of `ami plan`, drawn from the record `ami.diagnostics.report.report` returns.

matplotlib is the optional `plot` extra: it is imported here, inside `pyplot()`, so the rest
of ami never needs it; `pyplot()` raises an `ImportError` naming the install command.

* `traces.png`: best energy found vs iteration per planner (mean over the pairs), on the
  learned energy and on the true energy;
* `slice_1d.png`: learned vs true energy along each 1-D slice through the sliced plan;
* `slice_2d.png`: learned and true energy on a plane through it (heatmaps: the first action over
  its whole box, the rest of the plan fixed; the plan marked);
* `grad_cosine.png`: cosine between the learned and the true gradient along each planner's
  path (mean and every pair).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INSTALL_HINT = "ami plan draws its figures with matplotlib: pip install 'ami[plot]' (or pip install matplotlib)"


def pyplot():
    """`matplotlib.pyplot` on the Agg backend; `ImportError` with the install command if missing."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _values(xs: list) -> np.ndarray:
    """JSON numbers (None for non-finite) as floats (NaN)."""
    return np.array([np.nan if x is None else x for x in xs], np.float64)


def traces(record: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, side in zip(axes, ("learned", "true_dynamics"), strict=True):
        for label, r in record["planners"].items():
            trace = _values(r[side]["energy_trace_mean"])
            ax.plot(np.arange(1, trace.size + 1), trace, label=label)
        title = "planning on the learned energy" if side == "learned" else "planning on the true energy (twin)"
        ax.set(xlabel="iteration", ylabel="best energy (mean over pairs)", title=title)
        ax.legend()
    _save(fig, path)


def slice_1d(record: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    cut = record["slices"]
    alphas, one_d = np.asarray(cut["alphas"]), cut["one_d"]
    fig, axes = plt.subplots(1, len(one_d), figsize=(3.2 * len(one_d), 3.2), squeeze=False)
    for ax, (name, energy) in zip(axes[0], one_d.items(), strict=True):
        ax.plot(alphas, _values(energy["learned"]), label="learned")
        ax.plot(alphas, _values(energy["true"]), "--", label="true")
        ax.axvline(0.0, color="grey", lw=0.8)
        ax.set(xlabel="alpha", title=name)
    axes[0][0].set_ylabel("energy")
    axes[0][0].legend()
    fig.suptitle(f"slices through the {cut['planner']} plan (pair {cut['pair']})")
    _save(fig, path)


def slice_2d(record: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    cut = record["slices"]["two_d"]
    x, y = np.asarray(cut["x"]), np.asarray(cut["y"])
    dx, dy = (x[-1] - x[0]) / (x.size - 1), (y[-1] - y[0]) / (y.size - 1)
    extent = (x[0] - dx / 2, x[-1] + dx / 2, y[0] - dy / 2, y[-1] + dy / 2)  # pixels centred on the grid
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, side in zip(axes, ("learned", "true"), strict=True):
        grid = np.array([_values(row) for row in cut[side]])  # [i along x, j along y]
        image = ax.imshow(grid.T, origin="lower", extent=extent, aspect="equal", cmap="viridis")
        ax.plot(*cut["plan_xy"], "r+", ms=12, mew=2, label="plan", clip_on=False, zorder=3)
        ax.set(xlabel=cut["names"][0], ylabel=cut["names"][1], title=f"{side} energy")
        fig.colorbar(image, ax=ax)
    axes[0].legend(loc="upper right")
    fig.suptitle(f"the plane through the {record['slices']['planner']} plan (pair {record['slices']['pair']})")
    _save(fig, path)


def grad_cosine(record: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, r in record["planners"].items():
        path_points = r["gradients"]["path"]
        if not path_points:
            continue
        budgets = [p["iterations"] for p in path_points]
        means = _values([p["cosine_mean"] for p in path_points])
        (line,) = ax.plot(budgets, means, "o-", label=label)
        for budget, p in zip(budgets, path_points, strict=True):
            ax.scatter(np.full(len(p["cosine"]), budget), _values(p["cosine"]), s=8, color=line.get_color(), alpha=0.4)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set(xlabel="planner iterations", ylabel="cos(grad learned, grad true)", ylim=(-1.05, 1.05))
    ax.set_title("learned vs true gradient along the path")
    ax.legend()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


FIGURES = {"traces.png": traces, "slice_1d.png": slice_1d, "slice_2d.png": slice_2d, "grad_cosine.png": grad_cosine}


def write_figures(record: dict[str, Any], out_dir: Path) -> list[Path]:
    """Draws every figure of `FIGURES` into `out_dir`; returns the paths."""
    paths = []
    for name, draw in FIGURES.items():
        draw(record, out_dir / name)
        paths.append(out_dir / name)
    return paths
