"""The training steps' live card (train, instruct): status line and plots, refreshed while training runs, left
marked FAILED if it fails; the evaluate step's status line."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from metaflow.cards import Markdown, VegaChart

from steps.results import TrainMetric
from steps.runtime.error_text import shown_message  # a card shows our own messages only, never a library's
from steps.runtime.progress_clock import ProgressClock


def _line_spec(records: Sequence[TrainMetric], field: str, title: str) -> dict:
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title,
        "width": 480,
        "height": 220,
        "data": {
            "values": [{"step": r.step, field: getattr(r, field)} for r in records if getattr(r, field) is not None]
        },
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "step", "type": "quantitative"},
            "y": {"field": field, "type": "quantitative", "scale": {"zero": False}},
        },
    }


class LiveTrainCard:
    """A training step's card while it runs (train, instruct): status line, loss and throughput plots, refreshed in
    place; instruction tuning adds the held-out loss and answer accuracy as they are scored.

    `components` go on the card when the step starts; `update` takes the metrics so far. The card is
    refreshed with them at most once per `update_every_s`: each refresh is a Metaflow process that
    renders the card, and on a machine whose cores the ranks fill it takes them from training.
    `refresh_interval_s` is Metaflow's own limit (the card's `refresh_interval`), which a failure waits out
    so that its last refresh is not dropped.
    """

    CHARTS = (
        ("loss", "Training loss"),
        ("lr", "Learning rate"),
        ("tokens_per_s", "Throughput (tokens/s)"),
        ("tflops", "Achieved TFLOP/s per device"),
    )
    HELD_OUT_CHARTS = (
        ("held_out_loss", "Held-out conversations: loss"),
        ("held_out_choice_accuracy", "Held-out questions: multiple-choice accuracy"),
    )

    def __init__(
        self, total_steps: int, refresh_interval_s: float, update_every_s: float = 0.0, step: str = "train"
    ) -> None:
        self.total, self.refresh_interval_s, self.step = total_steps, refresh_interval_s, step
        self._due = ProgressClock(update_every_s, at_once=True).due
        self._card = None
        self.status = Markdown(f"# {step}\nWaiting for the first metrics...")
        charts = self.CHARTS + (self.HELD_OUT_CHARTS if step == "instruct" else ())
        self.charts = {field: VegaChart(_line_spec([], field, title)) for field, title in charts}

    @property
    def components(self) -> list:
        return [self.status, *self.charts.values()]

    def update(self, records: Sequence[TrainMetric]) -> None:
        if not records:
            return
        last = records[-1]
        mfu = f", MFU {last.mfu:.1%}" if last.mfu is not None else ""
        scored = [r for r in records if r.held_out_choice_accuracy is not None or r.held_out_loss is not None]
        held_out = ""
        if scored:
            loss, accuracy = scored[-1].held_out_loss, scored[-1].held_out_choice_accuracy
            loss_shown = f"{loss:.4f}" if loss is not None else "n/a"
            accuracy_shown = f"{accuracy:.1%}" if accuracy is not None else "n/a"
            held_out = f"; held out at step {scored[-1].step}: loss {loss_shown}, answers right {accuracy_shown}"
        self.status.update(
            f"# {self.step}\nStep **{last.step} / {self.total}**: loss {last.loss:.4f}, "
            f"{last.tokens_per_s:.0f} tokens/s, {last.tflops:.2f} TFLOP/s per device{mfu}, "
            f"memory {last.memory_gib:.2f} GiB{held_out}"
        )
        for field, title in self.CHARTS + self.HELD_OUT_CHARTS:
            if field in self.charts:
                self.charts[field].update(_line_spec(records, field, title))

    @contextlib.contextmanager
    def shown_on(self, card):
        """Put the live components on the step's card; on a failure, leave them marked FAILED."""
        self._card = card
        card.extend(self.components)
        try:
            yield self
        except Exception as exc:
            # Metaflow renders no final card for a failed task, so the live card is what stays; its
            # refreshes are rate-limited (even forced ones), hence the wait before the last one.
            self.failed(exc)
            time.sleep(self.refresh_interval_s)
            card.refresh(force=True)
            raise

    def refresh_with(self, records: Sequence[TrainMetric]) -> None:
        """The metrics so far onto the plots, and the card refreshed if one is due."""
        self.update(records)
        if self._card is not None and self._due():
            self._card.refresh()

    def failed(self, error: BaseException) -> None:
        first_line = shown_message(error).splitlines()[0]
        self.status.update(f"# {self.step}: FAILED\n`{first_line}`\n\nThe plots show the metrics up to the failure.")


class LiveStatusCard:
    """A status line refreshed while a stage runs (the evaluate step's progress), left marked FAILED if it fails.

    The intervals are `LiveTrainCard`'s."""

    def __init__(self, step: str, refresh_interval_s: float, update_every_s: float = 0.0) -> None:
        self.step, self.refresh_interval_s = step, refresh_interval_s
        self._due = ProgressClock(update_every_s, at_once=True).due
        self.status = Markdown(f"# {step}\nStarting...")
        self._card = None
        self._started = time.monotonic()

    @contextlib.contextmanager
    def shown_on(self, card):
        self._card = card
        card.append(self.status)
        try:
            yield self
        except Exception as exc:
            first_line = shown_message(exc).splitlines()[0]
            self.status.update(f"# {self.step}: FAILED\n`{first_line}`")
            time.sleep(self.refresh_interval_s)  # refreshes are rate-limited, even forced ones
            card.refresh(force=True)
            raise
        self.status.update(f"{self.step} finished in {time.monotonic() - self._started:.0f} s.")

    def show(self, line: str) -> None:
        """The latest progress line onto the card, refreshed if one is due."""
        self.status.update(f"# {self.step}\n{line}")
        if self._card is not None and self._due():
            self._card.refresh()
