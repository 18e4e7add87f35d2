"""The train step through the flow: a killed rank fails the step, and `resume` or `@retry` continue it.

Both continue from the newest complete checkpoint in the run's storage; `resume`
ends with the same weights as an uninterrupted training on the same data.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steps.runtime.storage import StoredDir, fetch
from tests.support.flow_resume import final_weights, run_killing_rank_1, uninterrupted_weights
from tests.support.flow_runs import card_data, client_run, config_file, flow_home, runner

STEPS = 24
TRAIN = {"max_steps": STEPS, "checkpoint_every": 4, "log_every": 4}
EVALUATE = {"engines": ["hf"], "perplexity_blocks": 2, "probes": 0}
"""What is under test ends with train; evaluate runs (the flow has it) at its smallest."""
KILLED = "rank 1 (local rank 1) failed first with exit code -9 (SIGKILL)"


def test_killed_rank_fails_the_run_and_resume_continues_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metaflow.cards import get_cards

    home = flow_home(tmp_path / "home")
    monkeypatch.chdir(home)  # the card client looks for .metaflow from the working folder
    config = config_file(home, "resume", train=TRAIN, evaluate=EVALUATE)
    failed = run_killing_rank_1(home, config, after_step=4)
    assert failed["status"] == "failed"
    assert KILLED in failed["output"], failed["output"][-3000:]
    failed_run = client_run(home, failed["pathspec"])
    failed_train = failed_run["train"].task
    assert not failed_train.successful
    card = card_data(get_cards(failed_train)[0].get())  # the live card outlives the failed attempt
    assert "FAILED" in card and "Training loss" in card

    with runner(home, None) as flow:
        resumed = flow.resume()
        assert resumed.status == "successful", resumed.stdout + resumed.stderr
    run = client_run(home, resumed.run.pathspec)
    summary = run["end"].task.data.train_summary
    assert summary["resumed_from_step"] >= 4
    assert f"/{failed_run.id}/files/train/checkpoints/" in summary["resumed_from"]  # the failed run's checkpoint
    steps = [m["step"] for m in run["end"].task.data.train_metrics]
    assert steps == list(range(4, STEPS + 1, 4))  # the whole curve, no step twice

    checkpoint = fetch(StoredDir.from_dict(run["end"].task.data.checkpoint), verify=True)
    final, reference = final_weights(checkpoint / "checkpoints", STEPS), uninterrupted_weights(run, tmp_path)
    assert all(torch.equal(final[k], reference[k]) for k in reference), "resumed weights differ"


def test_retry_continues_from_the_failed_attempts_checkpoint(tmp_path: Path) -> None:
    home = flow_home(tmp_path / "home")
    config = config_file(home, "retry", train=TRAIN, evaluate=EVALUATE)
    outcome = run_killing_rank_1(home, config, after_step=4, decospecs=["retry:times=1"])
    assert outcome["status"] == "successful", outcome["output"][-3000:]
    run = client_run(home, outcome["pathspec"])
    train = run["train"].task
    assert train.current_attempt == 1
    assert KILLED in train.stdout + train.stderr or KILLED in outcome["output"]
    summary = run["end"].task.data.train_summary
    assert summary["resumed_from_step"] >= 4 and f"/{run.id}/files/train/checkpoints/" in summary["resumed_from"]
    assert [m["step"] for m in run["end"].task.data.train_metrics] == list(range(4, STEPS + 1, 4))
