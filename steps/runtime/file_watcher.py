"""Watching a file that a torchrun rank writes, from the controller: train's metrics and evaluate's progress.

The ranks write their records to a file; a thread in the controller reads it every few
seconds and hands what it read to a callback (the live card) whenever it changed.
Torch-free: controllers import it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
_NOTHING_YET = object()


class FileWatcher(Generic[T]):
    """Calls `on_change` with `read(path)` whenever that differs from what it last handed over.

    `read` may raise OSError, ValueError or KeyError for a file that is not there or not whole
    yet; that poll is skipped. Used as a context manager: polls every `interval_s` while inside,
    and once more on leaving, so the last record always reaches the callback.
    `what` names the watched records in the message printed when the callback fails.
    """

    def __init__(
        self,
        path: Path,
        read: Callable[[Path], T],
        on_change: Callable[[T], None],
        interval_s: float = 5.0,
        what: str = "progress",
    ) -> None:
        self.path, self.read, self.on_change, self.interval_s, self.what = path, read, on_change, interval_s, what
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._last: object = _NOTHING_YET

    def __enter__(self) -> FileWatcher[T]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        try:
            value = self.read(self.path)
        except (OSError, ValueError, KeyError):
            return
        if value != self._last:
            self._last = value
            try:
                self.on_change(value)
            except Exception as exc:  # a card that fails to refresh must not stop the ranks' work
                print(f"{self.what} update failed: {exc}", flush=True)
