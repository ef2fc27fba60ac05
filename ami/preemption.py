"""Stopping a run cleanly: SIGTERM (a scheduler preempting the job) and Ctrl-C ask the training
loop to stop; the loop saves a checkpoint at the end of the chunk it is in, waits for the save
and raises `PreemptedError`, which `ami train` turns into exit status 0. The same command then
continues the run bit for bit. A second Ctrl-C stops at once (`KeyboardInterrupt`)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptedError(Exception):
    """A run stopped on request after saving; the message says where and how to continue."""


class StopRequests:
    """Within `with StopRequests() as stop:`, SIGTERM and SIGINT set `stop.signal` instead of
    ending the process. Outside the main thread (where Python allows no handlers) it only
    reports requests made through `request`."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, object] = {}

    def request(self, name: str) -> None:
        self.signal = name

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.request(signal.Signals(signum).name)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
