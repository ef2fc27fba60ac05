"""What a run reports as it goes: text lines on stdout and one JSON line per record in `metrics.jsonl`.

`metrics.jsonl` is the record of a run, so it has to agree with the checkpoints: a run resumed
from the checkpoint at counter `c` (env steps online, updates offline) first drops the rows a
killed process logged after `c` (`rewind`), and a fresh start in a directory without
checkpoints drops the rows of a process killed before its first save (`reset`). Either way
the file holds each chunk's row once. Wall-clock times continue from the kept rows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

# Rows that mark events rather than progress: kept by `rewind` whatever their counters say.
EVENTS = ("resume", "preempted")


class Progress:
    """Prints `phase: done/total (rate/s, ETA) extra` lines and appends JSON lines to `metrics.jsonl`."""

    def __init__(self, run_dir: Path, quiet: bool = False, write: bool = True):
        self.path, self.quiet, self.write = Path(run_dir) / "metrics.jsonl", quiet, write
        self.start, self.offset = time.perf_counter(), 0.0

    def log(self, record: dict[str, Any]) -> None:
        if not self.write:  # another process of a multi-process run writes the file
            return
        record = {"wall_time_s": round(self.offset + time.perf_counter() - self.start, 2), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

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
