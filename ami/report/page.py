"""The report page: one self-contained HTML document, nothing loaded from anywhere.

Everything is inline: CSS, SVG charts, images and clips as `data:` URIs, and one small script
whose SHA-256 is the only script the page's Content-Security-Policy allows
(`default-src 'none'`: no request can leave the page). The script writes what a test needs
into the DOM: each clip's `readyState`, duration and width, each image's natural width, and
every CSP violation (`#csp-violations`, `body[data-csp-violations]`).

`render(run, films, notes) -> str` lays out: the status and summary, the episodes' clips with
their facts and plan energies, the learning curves (against the run's counter and against
wall-clock time), `ami plan`'s figures when it has run, every other logged scalar, and the
resolved config.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import time
from typing import Any

from ami.report import curves
from ami.report.films import Films
from ami.report.rundir import PLAN_FIGURES, RunFiles, goal_task
from ami.report.svg import Series, line_chart

SCRIPT = """
(function () {
  var body = document.body, count = 0;
  document.addEventListener('securitypolicyviolation', function (e) {
    count += 1;
    body.dataset.cspViolations = String(count);
    document.getElementById('csp-violations').textContent += e.violatedDirective + ' ' + e.blockedURI + '\\n';
  });
  function markClip(v) {
    v.dataset.readyState = String(v.readyState);
    v.dataset.duration = String(v.duration);
    v.dataset.videoWidth = String(v.videoWidth);
  }
  document.querySelectorAll('video').forEach(function (v) {
    ['loadedmetadata', 'loadeddata', 'canplay', 'durationchange'].forEach(function (name) {
      v.addEventListener(name, function () { markClip(v); });
    });
    markClip(v);
  });
  window.addEventListener('load', function () {
    document.querySelectorAll('img').forEach(function (i) { i.dataset.naturalWidth = String(i.naturalWidth); });
    body.dataset.loaded = '1';
  });
})();
"""

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1000px; padding: 16px 24px; color: #222; }
h1 { font-size: 22px; margin: 4px 0; } h2 { font-size: 17px; margin: 26px 0 8px; border-bottom: 1px solid #ddd; }
.muted { color: #666; } .warn { background: #fff4d6; border: 1px solid #e0c060; padding: 8px 12px; }
table { border-collapse: collapse; margin: 6px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 6px; } .pair { display: flex; gap: 6px; }
svg.chart { background: #fff; border: 1px solid #eee; font-size: 10px; }
svg.chart .title { font-size: 12px; font-weight: 600; } svg.chart .frame { fill: none; stroke: #999; }
svg.chart .grid { stroke: #eee; } svg.chart .legend { font-size: 10px; }
.films { display: flex; flex-wrap: wrap; gap: 14px; } figure { margin: 0; }
figcaption { font-size: 12px; max-width: 330px; }
video, img.clip { border: 1px solid #ccc; background: #000; } img.plot { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 12px; } code { background: #f3f3f3; }
"""


def csp() -> str:
    """The page's Content-Security-Policy: nothing but inline data, styles and the one script."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    return (
        "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return _esc(value)


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """An HTML table of `rows` (dicts) over `columns` (default: every key, first seen first)."""
    if not rows:
        return ""
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_num(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _progress(run: RunFiles) -> str:
    """What an unfinished run has done so far, from its last rows and config."""
    done = [r for r in run.rows if r.get("phase") in curves.TRAIN_PHASES]
    if not done:
        return "it has logged no training yet"
    last, key = done[-1], curves.counter(run.rows)
    section, field = ("online", "env_steps") if key == "env_steps" else ("train", "updates")
    target = run.config.get(section, {}).get(field) if isinstance(run.config.get(section), dict) else None
    of = f" of {target}" if target else ""
    return f"its last row is at {last.get(key)}{of} {key.replace('_', ' ')}, {last.get('wall_time_s')} s in"


def summary_section(run: RunFiles) -> str:
    if run.summary is None:
        saved = f"newest checkpoint: step {run.checkpoints[-1]}" if run.checkpoints else "no checkpoint saved yet"
        return (
            '<h2>Summary</h2><p class="warn" id="unfinished"><b>Unfinished run:</b> no <code>summary.json</code> '
            f"yet (the run has not finished training and evaluation); {_esc(_progress(run))}; {saved}.</p>"
        )
    flat = {k: v for k, v in run.summary.items() if not isinstance(v, dict)}
    parts = ["<h2>Summary</h2>", table([flat])]
    controllers = run.summary.get("controllers")
    if isinstance(controllers, dict) and controllers:
        rows = [{"controller": name, **values} for name, values in controllers.items() if isinstance(values, dict)]
        parts += ["<p>Every controller on the same evaluation episodes:</p>", table(rows)]
    return "".join(parts)


def _clip_html(clip, label: str) -> str:
    uri = clip.data_uri()
    if clip.format == "webm":
        return (
            f'<video class="clip" controls autoplay muted loop playsinline preload="auto" width="{clip.width}" '
            f'height="{clip.height}" aria-label="{_esc(label)}" src="{uri}"></video>'
        )
    return f'<img class="clip" width="{clip.width}" height="{clip.height}" alt="{_esc(label)}" src="{uri}">'


def _facts_text(facts: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {_num(v)}" for k, v in facts.items())


def films_section(films: Films | None, why_not: str) -> str:
    parts = ["<h2>Evaluation episodes</h2>"]
    if films is None or not films.films:
        note = why_not or (films.note if films is not None else "")
        return "".join([*parts, f'<p class="warn" id="no-video">No video: {_esc(note)}</p>'])
    about = films.about
    which = (
        "the evaluation's episodes exactly (eval.seed)"
        if about["same_as_eval"]
        else f"the first {about['episodes']} of the evaluation's start states (eval.seed; the planner's noise "
        "is drawn for this smaller batch, so actions may differ from the evaluation's)"
    )
    parts.append(
        f'<p class="muted">The learned controller on {_esc(which)}, {about["steps"]} steps each; frames '
        f"{_esc(about['renderer'])}, {about['fps']:g} frames/s, {_esc(about['format'])}; recorded in "
        f"{about['record_s']:.1f} s (compile included), drawn and encoded in {about['render_s']:.1f} s.</p>"
    )
    if films.overlay:
        parts.append(f'<p id="overlay-note">{_esc(films.overlay)}</p>')
    parts.append('<div class="films">')
    for i, film in enumerate(films.films):
        label = f"episode {i}"
        parts.append(
            f'<figure id="episode-{i}">{_clip_html(film.clip, label)}<figcaption><b>{label}</b>: '
            f"{_esc(_facts_text(film.facts))}</figcaption></figure>"
        )
    parts.append("</div>")
    traces = [Series(f"episode {i}", f.energy_t, f.energy) for i, f in enumerate(films.films) if f.energy.size]
    if traces:
        chart = line_chart(traces, title="energy of each new plan along the episode", xlabel="step", ylabel="energy")
        parts.append(f'<div class="charts" id="episode-energy">{chart}</div>')
    return "".join(parts)


def curves_section(run: RunFiles) -> str:
    main, other = curves.plan_charts(run.rows)
    key = curves.counter(run.rows)
    parts = ["<h2>Learning curves</h2>"]
    if not main and not other:
        return "".join([*parts, '<p class="warn">metrics.jsonl holds no training rows yet.</p>'])
    parts.append(f'<p class="muted">Left: against {key.replace("_", " ")}; right: against wall-clock time.</p>')
    parts.append('<div class="charts" id="curves">')
    for spec in main:
        left, right = curves.draw(run.rows, spec, key), curves.draw(run.rows, spec, "wall_time_s")
        parts.append(f'<div class="pair">{left}{right}</div>')
    parts.append("</div>")
    events = curves.events(run.rows)
    if events:
        parts += ["<p>Events:</p>", table(events)]
    if other:
        small = {"width": 320, "height": 200}
        charts = "".join(curves.draw(run.rows, spec, key, **small) for spec in other)
        title = f"<summary>Every other logged scalar ({len(other)})</summary>"
        parts.append(f'<details id="other-scalars">{title}<div class="charts">{charts}</div></details>')
    return "".join(parts)


def plan_section(run: RunFiles) -> str:
    parts = ["<h2>Planner diagnostics (<code>ami plan</code>)</h2>"]
    if not run.plan_figures and not run.plan_table:
        hint = f"ami plan {run.run_dir}"
        return "".join(
            [
                *parts,
                f'<p class="muted" id="no-plan"><code>ami plan</code> has not run on this run '
                f"(<code>{_esc(hint)}</code> writes energy traces and landscapes into RUN_DIR/plan).</p>",
            ]
        )
    if run.plan_table:
        parts += ["<p>Every planner on the learned and on the true energy:</p>", table(run.plan_table)]
    for name, png in run.plan_figures.items():
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img class="plot" alt="{_esc(name)}" src="{uri}"><figcaption>{_esc(name)}: '
            f"{_esc(PLAN_FIGURES[name])}</figcaption></figure>"
        )
    return "".join(parts)


def header(run: RunFiles) -> str:
    env = run.config.get("env", {}).get("name", "?") if isinstance(run.config.get("env"), dict) else "?"
    agent = run.config.get("agent", {}).get("name", "ami") if isinstance(run.config.get("agent"), dict) else "ami"
    kind = {True: "goal task", False: "reward task", None: "task"}[goal_task(run)]
    status = "finished" if run.summary is not None else "unfinished"
    return (
        f'<h1>ami run report: {_esc(run.run_dir.name)}</h1><p class="muted">{_esc(run.run_dir)}: agent '
        f'<b>{_esc(agent)}</b> on <b>{_esc(env)}</b> ({kind}), <span id="status">{status}</span>; '
        f"{len(run.rows)} rows in metrics.jsonl; page written {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>"
    )


def render(run: RunFiles, films: Films | None, why_not: str = "") -> str:
    """The whole page (see the module docstring); `why_not` explains a missing video."""
    sections = [
        header(run),
        summary_section(run),
        films_section(films, why_not),
        curves_section(run),
        plan_section(run),
        '<h2>Config (resolved)</h2><pre id="config">' + _esc(run.config_text or "(no config.yaml)") + "</pre>",
        '<pre id="csp-violations" hidden></pre>',
    ]
    meta = json.dumps({"run_dir": str(run.run_dir), "finished": run.summary is not None})
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp()}">'
        f"<title>ami report: {_esc(run.run_dir.name)}</title><style>{STYLE}</style></head>"
        f"<body data-report='{_esc(meta)}'>{''.join(sections)}<script>{SCRIPT}</script></body></html>\n"
    )
