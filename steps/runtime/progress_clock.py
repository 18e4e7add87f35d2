"""When the next progress report is due: prepare's and evaluate's console lines, the flow's live card refreshes."""

from __future__ import annotations

import time
from collections.abc import Callable


class ProgressClock:
    """Says when the next report is due: at most one every `every_s` seconds, the first one `every_s` after the
    start, or at once with `at_once` (a live card shows the first metrics as soon as they come)."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic, at_once: bool = False) -> None:
        self.every_s, self.clock = every_s, clock
        self.started = clock()
        self.last = float("-inf") if at_once else self.started

    def due(self) -> bool:
        now = self.clock()
        if now - self.last < self.every_s:
            return False
        self.last = now
        return True

    def elapsed(self) -> float:
        return self.clock() - self.started
