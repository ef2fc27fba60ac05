"""What a run reports as it goes: progress bars (or text lines) on stdout, one JSON line per record
in `metrics.jsonl`, and the same records as namespaced scalars in TensorBoard / W&B (`ami.logsinks`).

On a terminal each long phase (online env steps, update chunks) is a tqdm bar with its rate and
ETA, and a blocking call (collection, compilation, evaluation) a line that counts the seconds;
`quiet` prints nothing, and output that is not a terminal (a CI log, a file) gets the plain lines
`phase: done/total unit (rate/s, ETA s) ...`, one per chunk.

`metrics.jsonl` is the record of a run, so it has to agree with the checkpoints: a run resumed
from the checkpoint at counter `c` (env steps online, updates offline) first drops the rows a
killed process logged after `c` (`rewind`), and a fresh start in a directory without
checkpoints drops the rows of a process killed before its first save (`reset`). Either way
the file holds each chunk's row once. Wall-clock times continue from the kept rows.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from ami import logsinks

# Rows that mark events rather than progress: kept by `rewind` whatever their counters say.
EVENTS = ("resume", "preempted")


class Progress:
    """Shows a run's progress and appends its records to `metrics.jsonl` and the sinks.

    Args:
      run_dir: where `metrics.jsonl` (and the sinks' files) go.
      quiet: print nothing.
      write: write files; False in every process of a multi-process run but process 0.
      log_cfg: `ami.config.LogConfig`: which sinks to open (None: none).
      config: the run's config as a mapping, for sinks that keep it (W&B).
      stream: where text goes (default stdout); bars only where it is a terminal.
    """

    def __init__(
        self,
        run_dir: Path,
        quiet: bool = False,
        write: bool = True,
        log_cfg: Any = None,
        config: Mapping[str, Any] | None = None,
        stream: TextIO | None = None,
    ):
        self.path, self.quiet, self.write = Path(run_dir) / "metrics.jsonl", quiet, write
        self.start, self.offset = time.perf_counter(), 0.0
        self.stream = stream or sys.stdout
        self.bars = not quiet and _is_terminal(self.stream)
        self.sinks = logsinks.Fanout(logsinks.open_sinks(run_dir, log_cfg, config) if write and log_cfg else [])
        self._phases: dict[str, _Phase] = {}

    def log(self, record: dict[str, Any]) -> None:
        if not self.write:  # another process of a multi-process run writes the file
            return
        record = {"wall_time_s": round(self.offset + time.perf_counter() - self.start, 2), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.sinks.write(record, time.time())

    def say(self, text: str) -> None:
        if self.quiet:
            return
        if self.bars and self._phases:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def advance(self, phase: str, done: int, total: int, unit: str, text: str = "") -> None:
        """`done` of `total` `unit` of a long phase: its bar moves, or one line
        `phase: done/total unit (rate/s, ETA s) text` (the rate over this call's part of the phase)."""
        if self.quiet:
            return
        if phase not in self._phases:
            self._phases[phase] = _Phase(phase, done, total, unit, self.stream if self.bars else None)
        current = self._phases[phase]
        if current.bar is not None:
            current.bar.update(done - current.bar.n)
            current.bar.set_postfix_str(text, refresh=True)
        else:
            print(current.line(done, text), file=self.stream, flush=True)
        if done >= total:
            self.end(phase)

    def end(self, phase: str) -> None:
        """Closes `phase`'s bar (left on screen)."""
        current = self._phases.pop(phase, None)
        if current is not None and current.bar is not None:
            current.bar.close()

    @contextlib.contextmanager
    def phase(self, name: str, report: bool = False) -> Iterator[None]:
        """A blocking call (a compilation, a collection, an evaluation): on a terminal a line that
        counts its seconds while it runs; with `report`, a line `name: S s` when it ends."""
        t0, ticker = time.perf_counter(), None
        if self.bars:
            ticker = _Ticker(name, self.stream)
        try:
            yield
        finally:
            if ticker is not None:
                ticker.stop()
            if report:
                self.say(f"{name}: {time.perf_counter() - t0:.1f} s")

    def close(self) -> None:
        for phase in list(self._phases):
            self.end(phase)
        self.sinks.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reset(self) -> None:
        """A fresh start: no rows from before."""
        if self.write:
            self.path.unlink(missing_ok=True)
        self.start, self.offset = time.perf_counter(), 0.0

    def rewind(self, counter: str, value: int) -> int:
        """Keeps the rows logged up to `counter == value` (and the `EVENTS`); returns how many were dropped.

        Dropped: rows whose `counter` is past `value`, `summary` rows (a finished run resumed
        writes its summary again) and a last line cut off mid-write."""
        if not self.write or not self.path.exists():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            late = row.get(counter, value) > value or row.get("phase") == "summary"
            if late and row.get("phase") not in EVENTS:
                dropped += 1
                continue
            kept.append(row)
        self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))
        self.start = time.perf_counter()
        self.offset = max((row.get("wall_time_s", 0.0) for row in kept), default=0.0)
        return dropped


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Phase:
    """The counters of one long phase and, on a terminal, its tqdm bar."""

    def __init__(self, name: str, done: int, total: int, unit: str, stream: TextIO | None):
        self.name, self.first, self.total, self.unit = name, done, total, unit
        self.t0, self.bar = time.perf_counter(), None
        if stream is not None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=done, desc=name, unit=f" {unit}", file=stream, dynamic_ncols=True, unit_scale=True
            )

    def line(self, done: int, text: str) -> str:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = (done - self.first) / elapsed
        eta = f"{(self.total - done) / rate:.0f} s" if rate > 0 else "?"
        return f"{self.name}: {done}/{self.total} {self.unit} ({rate:.0f}/s, ETA {eta})" + (f" {text}" if text else "")


class _Ticker:
    """A terminal line `name: 12s` that counts the seconds of a blocking call, from a thread."""

    def __init__(self, name: str, stream: TextIO):
        from tqdm import tqdm

        self.bar = tqdm(total=None, desc=name, bar_format="{desc}: {elapsed}", file=stream, leave=False)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True)
        self.thread.start()

    def _tick(self) -> None:
        while not self.done.wait(0.5):
            self.bar.refresh()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        self.bar.close()
