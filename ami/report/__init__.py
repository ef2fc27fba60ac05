"""`ami report RUN_DIR`: one self-contained HTML page about a run (`RUN_DIR/report.html`).

* `ami.report.rundir`: what the run directory holds (config, summary, metrics, `ami plan`'s files);
* `ami.report.curves`, `ami.report.svg`: learning curves as inline SVG;
* `ami.report.episodes`, `ami.report.films`: evaluation episodes of the trained agent, recorded
  in one jitted scan and turned into clips; `ami.report.scenes`, `ami.report.draw`,
  `ami.report.mjrender`, `ami.report.probe`: how each env is drawn (Pillow for the native envs,
  MuJoCo offscreen for physics) and the planner's path over planar tasks;
* `ami.report.video`: clips as VP9 WebM or animated WebP / GIF;
* `ami.report.page`: the page; `ami.report.writer.write_report`: all of it.

`write_report` is imported on first use: importing `ami.report` loads neither JAX nor MuJoCo
(the MuJoCo renderer runs this package in a child process).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "write_report":
        from ami.report.writer import write_report

        return write_report
    raise AttributeError(f"module 'ami.report' has no attribute {name!r}")


__all__ = ["write_report"]
