"""The typed hand-offs between stages: plain artifacts out, drift caught where a summary is read."""

from __future__ import annotations

import json
import pickle

import pytest
from pydantic import ValidationError

from steps.results import ConversionRecord, TrainResult, TrainSummary
from steps.runtime.storage import StoredDir

SUMMARY = {
    "final_checkpoint": "/runs/1/files/train/checkpoints/step-0000030",
    "steps": 30,
    "resumed_from_step": 0,
    "resumed_from": None,
    "final_loss": 4.2,
    "tokens_seen": 30 * 2048,
    "world_size": 2,
    "zero_stage": 2,
    "parameters": 5_310_720,
    "flops_per_token": 3.2e7,
    "peak_tflops": None,
    "init_sha256": "ab" * 32,
    "elapsed_s": 12.5,
}


def test_what_the_flow_stores_is_plain_data_the_client_reads_without_our_package() -> None:
    result = TrainResult(
        checkpoint=StoredDir("/runs/1/files/train", "cd" * 32, 40, 10_000_000),
        train_summary=TrainSummary(**SUMMARY),
        train_metrics=[],
    )
    artifacts = result.model_dump()  # what the flow keeps, one artifact per field (flows/step_place.keep)
    assert set(artifacts) == {"checkpoint", "train_summary", "train_metrics", "train_job"}
    assert json.loads(json.dumps(artifacts)) == artifacts  # dicts, lists, numbers and strings only
    assert b"steps." not in pickle.dumps(artifacts)  # unpickling needs no module of ours
    assert TrainSummary.model_validate(artifacts["train_summary"]) == result.train_summary


def test_a_renamed_or_missing_field_fails_where_the_summary_is_read() -> None:
    with pytest.raises(ValidationError, match="final_loss"):
        TrainSummary.model_validate({k: v for k, v in SUMMARY.items() if k != "final_loss"})
    with pytest.raises(ValidationError, match="finalloss"):
        TrainSummary.model_validate({**SUMMARY, "finalloss": 4.2})
    with pytest.raises(ValidationError, match="logits_match"):
        ConversionRecord.model_validate({"checkpoint": "step-1"})
