"""Line charts as inline SVG text: no plotting library, nothing loaded from anywhere.

The `<svg>` elements are meant to sit inside an HTML page (HTML needs no `xmlns`, so the page
holds no URL at all).

`line_chart(series, ...)` draws one or more `Series` (`x [T]`, `y [T]`, a label) on shared
axes with "nice" ticks, an optional log-scaled y axis and a legend. Non-finite points are
dropped (a line breaks where they were); a chart with no finite point says so instead.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT = 460, 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 62, 14, 28, 40


class Series(NamedTuple):
    """One line: `x [T]`, `y [T]` (floats; NaN where missing) and its legend `label`."""

    label: str
    x: np.ndarray
    y: np.ndarray


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values (steps of 1, 2 or 5 times a power of ten), the first at or below
    `lo` and the last at or above `hi`."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"nice_ticks: need finite bounds, got {lo}, {hi}")
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [0.0 if i == 0 else i * step for i in range(first, max(last, first + 1) + 1)]


def format_number(v: float) -> str:
    """A short tick label: `1.2k`, `3M`, `0.05`, `1e-04`."""
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a < 1e-3:
        return f"{v:.0e}"
    return f"{v:.4g}"


def _finite(s: Series, log_y: bool) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(s.x, np.float64), np.asarray(s.y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
    return x[ok], y[ok]


def _polyline(xs: np.ndarray, ys: np.ndarray, color: str) -> str:
    points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys, strict=True))
    if xs.size == 1:  # a single point: a dot
        return f'<circle cx="{xs[0]:.1f}" cy="{ys[0]:.1f}" r="3" fill="{color}"/>'
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{points}"/>'


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str = "",
    log_y: bool = False,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """An `<svg>` element drawing every series of `series` on one pair of axes."""
    esc = html.escape
    data = [(s, *_finite(s, log_y)) for s in series]
    data = [(s, x, y) for s, x, y in data if x.size]
    head = (
        f'<svg class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">'
        f'<text x="{width / 2:.0f}" y="17" text-anchor="middle" class="title">{esc(title)}</text>'
    )
    if not data:
        return head + f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">no data</text></svg>'
    x_all = np.concatenate([x for _, x, _ in data])
    y_all = np.concatenate([y for _, _, y in data])
    fy = np.log10 if log_y else (lambda v: v)
    xt = nice_ticks(float(x_all.min()), float(x_all.max()))
    if log_y:
        lo, hi = math.floor(float(np.log10(y_all.min()))), math.ceil(float(np.log10(y_all.max())))
        yt = [float(e) for e in range(lo, max(hi, lo + 1) + 1)]
    else:
        yt = nice_ticks(float(y_all.min()), float(y_all.max()))
    x0, x1, y0, y1 = min(xt[0], x_all.min()), max(xt[-1], x_all.max()), yt[0], yt[-1]
    left, right, top, bottom = MARGIN_LEFT, width - MARGIN_RIGHT, MARGIN_TOP, height - MARGIN_BOTTOM
    px = lambda v: left + (np.asarray(v) - x0) / ((x1 - x0) or 1.0) * (right - left)  # noqa: E731
    py = lambda v: bottom - (np.asarray(fy(v)) - y0) / ((y1 - y0) or 1.0) * (bottom - top)  # noqa: E731
    parts = [head, f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" class="frame"/>']
    for t in xt:
        X = float(px(t))
        parts.append(f'<line x1="{X:.1f}" y1="{top}" x2="{X:.1f}" y2="{bottom}" class="grid"/>')
        parts.append(f'<text x="{X:.1f}" y="{bottom + 14}" text-anchor="middle">{format_number(t)}</text>')
    for t in yt:
        Y = bottom - (t - y0) / ((y1 - y0) or 1.0) * (bottom - top)
        label = format_number(10.0**t) if log_y else format_number(t)
        parts.append(f'<line x1="{left}" y1="{Y:.1f}" x2="{right}" y2="{Y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 5}" y="{Y + 4:.1f}" text-anchor="end">{label}</text>')
    parts.append(f'<text x="{(left + right) / 2:.0f}" y="{height - 6}" text-anchor="middle">{esc(xlabel)}</text>')
    ylab = ylabel + (" (log)" if log_y else "")
    parts.append(
        f'<text transform="translate(13 {(top + bottom) / 2:.0f}) rotate(-90)" text-anchor="middle">{esc(ylab)}</text>'
    )
    for i, (s, x, y) in enumerate(data):
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<g class="series" data-label="{esc(s.label)}" data-points="{x.size}">')
        parts.append(_polyline(px(x), py(y), color) + "</g>")
        ly = top + 12 + 13 * i
        parts.append(f'<rect x="{right - 118}" y="{ly - 8}" width="10" height="3" fill="{color}"/>')
        parts.append(f'<text x="{right - 104}" y="{ly - 3}" class="legend">{esc(s.label[:22])}</text>')
    parts.append("</svg>")
    return "".join(parts)
