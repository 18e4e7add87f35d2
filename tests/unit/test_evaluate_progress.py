"""evaluate's progress: counts, share done and time left on the console, and the latest line for the live card."""

from __future__ import annotations

import json
from pathlib import Path

from steps.evaluate.progress import Progress, read_progress_line
from steps.runtime.file_watcher import FileWatcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_show_counts_share_and_time_left(tmp_path: Path) -> None:
    clock, lines = Clock(), []
    progress = Progress(file=tmp_path / "progress.json", interval_s=10, clock=clock, write=lines.append)
    progress.scope = "tuned model"
    progress.begin("probe likelihoods", 400, "sequences")
    assert lines == ["evaluate: probe likelihoods (tuned model): 0/400 sequences (0%), 0 s"]
    clock.now += 4
    progress.advance(40)  # within the interval: no line
    clock.now += 6
    progress.advance(60)
    assert lines[-1] == "evaluate: probe likelihoods (tuned model): 100/400 sequences (25%), 10 s, about 30 s left"
    clock.now += 60
    progress.advance(150)
    assert lines[-1].endswith("250/400 sequences (62%), 1 min 10 s, about 42 s left")
    clock.now += 1
    progress.advance(150)
    progress.advance(0)  # a rank stepping with a stand-in batch after it is done: no second "done" line
    assert lines[-1] == "evaluate: probe likelihoods (tuned model): 400/400 sequences (100%), 1 min 11 s (done)"
    assert len(lines) == 4
    record = json.loads((tmp_path / "progress.json").read_text())
    assert record["line"] == lines[-1] and record["done"] == record["total"] == 400


def test_a_rank_that_does_not_report_prints_nothing(tmp_path: Path) -> None:
    lines = []
    progress = Progress(show=False, file=tmp_path / "progress.json", write=lines.append)
    progress.begin("perplexity", 3, "blocks")
    progress.advance(3)
    assert lines == [] and not (tmp_path / "progress.json").exists()


def test_the_watcher_hands_each_new_line_to_the_card(tmp_path: Path) -> None:
    path, seen = tmp_path / "progress.json", []
    progress = Progress(file=path, interval_s=0, write=lambda line: None)
    watcher = FileWatcher(path, read_progress_line, seen.append, interval_s=3600)
    watcher.poll()  # no file yet
    progress.begin("generations", 2, "prompts")
    watcher.poll()
    watcher.poll()  # unchanged: not handed again
    progress.advance(2)
    with watcher:
        pass  # leaving polls once more
    assert seen == [
        "evaluate: generations: 0/2 prompts (0%), 0 s",
        seen[-1],
    ] and seen[-1].startswith("evaluate: generations: 2/2 prompts (100%)")
