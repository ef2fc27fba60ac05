"""`write_report(run_dir, ...) -> Path`: read the run, film its agent, write the page.

The page is written whatever happens to the clips: a run without a checkpoint, an env
without a renderer or a renderer that fails (no OpenGL here, say) gets a page that says why
there is no video, and a warning on stderr for the unexpected failures.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ami.report import page, rundir
from ami.report.films import Films, film_run

REPORT_NAME = "report.html"
DEFAULT_EPISODES = 2


def write_report(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    episodes: int = DEFAULT_EPISODES,
    video: bool = True,
    video_format: str = "auto",
    max_steps: int | None = None,
    loaded: tuple[Any, Any, Any] | None = None,
    clips_dir: str | Path | None = None,
) -> Path:
    """Writes the report of the run in `run_dir` to `out` (default `RUN_DIR/report.html`); returns its path.

    Args:
      episodes: evaluation episodes filmed (batched in one jitted scan).
      video: film episodes at all (False: curves, summary, config and `ami plan`'s figures only).
      video_format: `auto` (WebM when imageio-ffmpeg is installed, else WebP), `webm`, `webp` or `gif`.
      max_steps: cut the filmed episodes to this many steps (default: the env's episode length).
      loaded: `(cfg, agent, agent_state)` of the trained run, saving a reload from the checkpoint.
      clips_dir: also write each clip there as a file (`episode_<i>.<format>`).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    run = rundir.read_run(run_dir)
    films, why_not = None, ""
    if not video:
        why_not = "not asked for (--no-video)"
    else:
        films, why_not = _films(run_dir, episodes, video_format, max_steps, loaded)
    if clips_dir is not None and films is not None:
        save_clips(films, Path(clips_dir))
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page.render(run, films, why_not))
    return path


def save_clips(films: Films, folder: Path) -> list[Path]:
    """Writes each clip of `films` to `folder/episode_<i>.<format>`; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, film in enumerate(films.films):
        paths.append(folder / f"episode_{i}.{film.clip.format}")
        paths[-1].write_bytes(film.clip.data)
    return paths


def _films(run_dir, episodes: int, video_format: str, max_steps, loaded) -> tuple[Films | None, str]:
    from ami.report.video import resolve_format

    resolve_format(video_format)  # a wrong format is the caller's error, not the renderer's
    try:
        films = film_run(run_dir, episodes_n=episodes, max_steps=max_steps, fmt=video_format, loaded=loaded)
    except Exception as err:  # the page is written without clips, saying why
        reason = f"{type(err).__name__}: {err}"
        print(f"ami report: warning: no video: {reason}", file=sys.stderr)
        return None, reason
    return films, films.note
