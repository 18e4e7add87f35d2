"""The train step through the flow: a killed rank fails the attempt, and `@retry` continues it from the newest
complete checkpoint in the run's storage.

`resume` after a killed rank, to the same weights as an uninterrupted training, is tests/flow/test_real_model.py's
(SmolLM2 from its GGUF file): one such flow run is enough, and the real model's is the demanding one.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.flow_resume import run_killing_rank_1
from tests.support.flow_runs import client_run, config_file, flow_home

STEPS = 24
TRAIN = {"max_steps": STEPS, "checkpoint_every": 4, "log_every": 4}
EVALUATE = {"engines": ["hf"], "perplexity_blocks": 2, "probes": 0}
"""What is under test ends with train; evaluate runs (the flow has it) at its smallest."""
KILLED = "rank 1 (local rank 1) failed first with exit code -9 (SIGKILL)"


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
