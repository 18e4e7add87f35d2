"""What watches training from outside the ranks: the metrics watcher, other nodes' logs, the live card."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from flows.live_card import LiveStatusCard, LiveTrainCard
from steps.formats.train_folder import read_metrics
from steps.results import TrainMetric
from steps.runtime.file_watcher import FileWatcher
from steps.runtime.launch import LaunchError, Rendezvous
from steps.runtime.node_logs import agreed_port, collect_node_logs, mark_node_running, publish_node_log
from steps.runtime.storage import open_storage


def _record(step: int) -> dict:
    return {
        "step": step,
        "loss": 5.0 - step / 10,
        "lr": 1e-3,
        "grad_norm": 1.0,
        "tokens_seen": 100 * step,
        "tokens_per_s": 2000.0,
        "step_s": 0.5,
        "tflops": 0.05,
        "mfu": None,
        "memory_gib": 0.8,
        "time": 1000.0 + step,
    }


def test_a_half_written_last_line_is_left_for_later(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(_record(5)) + "\n" + json.dumps(_record(10))[:40])
    assert [m.step for m in read_metrics(path)] == [5]
    assert read_metrics(tmp_path / "not-yet.jsonl") == []


def test_the_watcher_hands_over_new_records_and_survives_a_failing_callback(tmp_path: Path, capsys) -> None:
    path = tmp_path / "metrics.jsonl"
    seen: list[list[int]] = []

    def on_metrics(records: list[TrainMetric]) -> None:
        seen.append([r.step for r in records])
        if len(seen) == 1:
            raise RuntimeError("card service unavailable")

    with FileWatcher(path, read_metrics, on_metrics, interval_s=0.01, what="live metrics") as watcher:
        with open(path, "a") as handle:
            for step in (5, 10):
                handle.write(json.dumps(_record(step)) + "\n")
                handle.flush()
                deadline = time.monotonic() + 5
                while (not seen or seen[-1][-1] != step) and time.monotonic() < deadline:
                    time.sleep(0.01)
        watcher.poll()  # nothing new: no call
    assert seen == [[5], [5, 10]]
    assert "live metrics update failed: card service unavailable" in capsys.readouterr().out


def test_node_zero_replays_the_other_nodes_logs_and_names_a_silent_one(tmp_path: Path, capsys) -> None:
    logs = open_storage(str(tmp_path / "run" / "train" / "logs"))
    log1, out0 = tmp_path / "node1" / "logs" / "node-1.log", tmp_path / "node0" / "logs"
    mark_node_running(logs, 1)
    mark_node_running(logs, 2)  # node 2 never finishes
    log1.parent.mkdir(parents=True)
    log1.write_text("step 8/8 on node 1\n")

    def node_one_finishes_later() -> None:
        time.sleep(0.2)
        publish_node_log(log1, logs, 1, 0)

    thread = threading.Thread(target=node_one_finishes_later)
    thread.start()
    codes = collect_node_logs(out0, logs, num_nodes=3, wait_s=1.0, poll_s=0.05)
    thread.join()
    assert codes == {1: 0, 2: -1}
    printed = capsys.readouterr().out
    assert "----- node 1 (exit code 0) -----\nstep 8/8 on node 1\n" in printed
    assert "(node 2 sent no log within 1 s)" in printed


def test_the_nodes_meet_on_the_port_node_0_picked_for_this_attempt(tmp_path: Path) -> None:
    logs = open_storage(str(tmp_path / "run" / "train" / "logs"))
    worker = Rendezvous(num_nodes=2, node_rank=1, main_port=0)
    with pytest.raises(LaunchError, match="node 1: node 0 named no rendezvous port within 0 s"):
        agreed_port(logs, worker, attempt=0, wait_s=0.2, poll_s=0.05)
    port = agreed_port(logs, Rendezvous(num_nodes=2, node_rank=0, main_port=0), attempt=1, wait_s=1)
    assert agreed_port(logs, worker, attempt=1, wait_s=1) == port  # an earlier attempt's port is never taken
    with pytest.raises(LaunchError):
        agreed_port(logs, worker, attempt=2, wait_s=0.1, poll_s=0.05)


class _Card:
    """What the live card needs of Metaflow's `current.card`."""

    def __init__(self) -> None:
        self.components: list = []
        self.refreshes: list[bool] = []

    def extend(self, components: list) -> None:
        self.components += components

    def refresh(self, force: bool = False) -> None:
        self.refreshes.append(force)


def _rendered(card: _Card) -> str:
    return json.dumps([component.render() for component in card.components], default=str)


def test_the_live_card_plots_the_metrics_so_far() -> None:
    live, card = LiveTrainCard(total_steps=20, refresh_interval_s=0), _Card()
    with live.shown_on(card):
        live.refresh_with([TrainMetric(**_record(5)), TrainMetric(**_record(10))])
    text = _rendered(card)
    assert "Step **10 / 20**: loss 4.0000, 2000 tokens/s" in text
    assert "Training loss" in text and '"step": 10' in text.replace("\\", "")
    assert card.refreshes == [False]


def test_the_instruct_live_card_shows_the_held_out_scores_as_they_come() -> None:
    live, card = LiveTrainCard(total_steps=20, refresh_interval_s=0, step="instruct"), _Card()
    scored = {**_record(10), "held_out_loss": 1.5, "held_out_choice_accuracy": 0.625}
    with live.shown_on(card):
        live.refresh_with([TrainMetric(**_record(5)), TrainMetric(**scored), TrainMetric(**_record(15))])
    text = _rendered(card).replace("\\", "")
    assert "# instruct" in text and "Step **15 / 20**" in text
    assert "held out at step 10: loss 1.5000, answers right 62.5%" in text
    assert "Held-out questions: multiple-choice accuracy" in text and '"held_out_choice_accuracy": 0.625' in text
    # The train step's card has no held-out charts: continued pretraining scores no questions.
    assert "Held-out" not in _rendered(_shown(LiveTrainCard(total_steps=20, refresh_interval_s=0)))


def _shown(live: LiveTrainCard) -> _Card:
    card = _Card()
    with live.shown_on(card):
        live.refresh_with([TrainMetric(**_record(5))])
    return card


def test_live_cards_refresh_at_once_then_at_most_once_per_interval_and_a_failure_always() -> None:
    """Each refresh is a Metaflow process rendering the card, which on a small machine takes cores from the ranks."""
    live, card = LiveTrainCard(total_steps=20, refresh_interval_s=0, update_every_s=3600), _Card()
    with pytest.raises(RuntimeError), live.shown_on(card):
        live.refresh_with([TrainMetric(**_record(5))])
        live.refresh_with([TrainMetric(**_record(5)), TrainMetric(**_record(10))])
        assert card.refreshes == [False]  # the first metrics at once; the next within the hour wait
        assert "Step **10 / 20**" in _rendered(card)  # though the components hold the latest
        raise RuntimeError("rank 1 failed")
    assert card.refreshes == [False, True]
    status, status_card = LiveStatusCard("evaluate", 0, update_every_s=3600), _Card()
    status_card.append = status_card.components.append
    with status.shown_on(status_card):
        status.show("perplexity: 1/8 blocks")
        status.show("perplexity: 8/8 blocks")
    assert status_card.refreshes == [False]


def test_the_live_card_stays_marked_failed_when_training_fails() -> None:
    live, card = LiveTrainCard(total_steps=20, refresh_interval_s=0), _Card()
    with pytest.raises(LaunchError, match="rank 1 failed"), live.shown_on(card):
        live.refresh_with([TrainMetric(**_record(5))])
        cause = "steps.train under torchrun on node 0 exited with code 1; rank 1 failed first with exit code -9"
        raise LaunchError(f"{cause} (SIGKILL)\nlast lines: ...", public=f"{cause} (SIGKILL)")
    text = _rendered(card)
    assert "# train: FAILED" in text and "LaunchError: steps.train under torchrun" in text
    assert "rank 1 failed first with exit code -9 (SIGKILL)" in text
    assert "last lines" not in text  # the public headline only, not the ranks' output
    assert card.refreshes[-1] is True  # forced, so the failed state is what stays
