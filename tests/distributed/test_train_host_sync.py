"""The training loop reads the loss back from the device only on the steps it logs (one rank, in this process).

On a GPU each `.item()` waits for every queued kernel, so a read per step stalls the
launch queue once per step; this counts the reads the loop itself makes on CPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from steps.config import TuneConfig
from steps.runtime.launch import free_port
from steps.train.checkpoints import CheckpointPlace
from steps.train.loop import run_training
from tests.support.synthetic_dataset import write_synthetic_dataset

pytestmark = pytest.mark.distributed


def test_loss_is_read_from_the_device_only_on_logged_steps(monkeypatch, tmp_path: Path) -> None:
    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "LOCAL_SIZE": "1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    dataset, tokenizer = write_synthetic_dataset(tmp_path / "data", vocab_size=300, block_size=32, train_blocks=32)
    config = TuneConfig().with_overrides(
        **{
            "data.vocab_size": 300,
            "data.block_size": 32,
            "model.hidden_size": 32,
            "model.num_layers": 1,
            "model.num_heads": 2,
            "model.num_kv_heads": 2,
            "model.intermediate_size": 64,
            "train.max_steps": 6,
            "train.micro_batch_size": 2,
            "train.gradient_accumulation_steps": 2,
            "train.log_every": 3,
            "train.checkpoint_every": 6,
            "train.nproc_per_node": 1,
        }
    )
    reads = []
    item = torch.Tensor.item

    def counting_item(tensor):
        if sys._getframe(1).f_code.co_filename.endswith(str(Path("steps", "train", "loop.py"))):
            reads.append(1)
        return item(tensor)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    out = tmp_path / "train"
    out.mkdir()
    plan = CheckpointPlace(uri=str(out / "checkpoints"), staging=tmp_path / "staging")
    summary = run_training(config, "pretrain", dataset, tokenizer, out, None, plan)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [3, 6]
    assert len(reads) == len(logged)  # 12 micro-steps, 2 reads: one per logged step
    assert summary.final_loss == logged[-1]["loss"] and logged[-1]["loss"] < logged[0]["loss"] + 1.0
