"""Progress of the evaluation on the console and for the live card: what runs, how far it is, how long is left.

Rank 0 reports its own share (ranks split probes, blocks and prompts evenly and step at the
same pace, so its share's progress is the stage's). Each report is a line on stdout, which the
controller streams to the step's log, and the same line in a small JSON file that the controller
watches (a `steps.runtime.file_watcher.FileWatcher` with `read_progress_line`) to refresh the step's
card. Torch-free: the controller imports it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from steps.runtime.progress_clock import ProgressClock


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    """Counts one task at a time (`begin`, then `advance`); a line at the start, every `interval_s` and at the end."""

    def __init__(
        self,
        show: bool = True,
        file: Path | None = None,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        self.show, self.file, self.interval_s, self.clock, self.write = show, file, interval_s, clock, write
        self.stage_started = clock()
        self.task, self.unit, self.total, self.done = "", "", 0, 0
        self.scope = ""
        """What the tasks are about (the model or engine), shown after each task's name."""
        self._task_clock = ProgressClock(interval_s, clock)

    def begin(self, task: str, total: int, unit: str) -> None:
        task = f"{task} ({self.scope})" if self.scope else task
        self.task, self.total, self.unit, self.done = task, total, unit, 0
        self._task_clock = ProgressClock(self.interval_s, self.clock)
        self._report()

    def note(self, text: str) -> None:
        """A one-off step without counts (loading an engine)."""
        self.task, self.total, self.unit, self.done = text, 0, "", 0
        self._publish(f"evaluate: {text}")

    def advance(self, count: int = 1) -> None:
        finished_now = self.done < self.total <= self.done + count
        self.done = min(self.total, self.done + count)
        if finished_now or (self.done < self.total and self._task_clock.due()):
            self._report()

    def line(self) -> str:
        """What is running now: counts, share done, time on this task, time left at its pace so far."""
        elapsed = self._task_clock.elapsed()
        share = self.done / self.total if self.total else 1.0
        text = f"evaluate: {self.task}: {self.done}/{self.total} {self.unit} ({share:.0%}), {_duration(elapsed)}"
        if self.done >= self.total:
            return text + " (done)"
        if self.done:
            text += f", about {_duration(elapsed / self.done * (self.total - self.done))} left"
        return text

    def _report(self) -> None:
        self._publish(self.line())

    def _publish(self, line: str) -> None:
        if not self.show:
            return
        self.write(line)
        if self.file:
            record = {"task": self.task, "done": self.done, "total": self.total, "unit": self.unit, "line": line}
            record["stage_elapsed_s"] = round(self.clock() - self.stage_started, 1)
            partial = self.file.with_name(self.file.name + ".partial")
            partial.write_text(json.dumps(record))
            os.replace(partial, self.file)  # the watcher never reads half a record


NO_PROGRESS = Progress(show=False)
"""For callers that want no reports (tests, benchmarks)."""


def read_progress_line(path: Path) -> str:
    """The latest progress line in a progress file (for `steps.runtime.file_watcher.FileWatcher`)."""
    return json.loads(path.read_text())["line"]
