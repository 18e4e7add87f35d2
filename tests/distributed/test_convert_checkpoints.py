"""Conversion of synthetic checkpoints (tests.support.synthetic_checkpoint): peak memory on a model of more than
50 MB (2 ranks, ZeRO-2), and stages 0 and 1 from one rank."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from steps.config import TuneConfig, write_config
from steps.convert.consolidate import run_convert
from steps.formats.train_folder import CHECKPOINTS
from steps.runtime.launch import run_torchrun
from steps.runtime.peak_memory import peak_rss

SYNTHETIC = "tests.support.synthetic_checkpoint"


def test_peak_memory_of_conversion_stays_within_one_and_a_half_model_sizes(tmp_path: Path) -> None:
    """Peak RSS of the conversion process minus that of a no-op with the same imports and meta model.

    The baseline (`tests.support.convert_memory_baseline`) is measured the same way: the interpreter, torch,
    transformers, DeepSpeed and the model's code cost ~400 MB before any weight is read.
    """
    out = tmp_path / "ckpt"
    run_torchrun(SYNTHETIC, ["--out", str(out), "--stage", "2"], nproc_per_node=2)
    config = write_config(TuneConfig().with_overrides(**{"convert.max_shard_size": "10MB"}), tmp_path / "c.json")
    command = [sys.executable, "-m", "steps.convert", "--config", str(config), "--checkpoint", str(out)]
    command += ["--tokenizer", str(out / "tokenizer"), "--out", str(tmp_path / "model")]
    code, peak, _, output = peak_rss(command)
    assert code == 0, output[-3000:]
    record = json.loads(output.strip().splitlines()[-1])
    assert record["logits_match"] and record["written_bytes"] >= 50e6 and record["shards"] >= 5
    baseline_command = [
        sys.executable,
        "-m",
        "tests.support.convert_memory_baseline",
        str(out / CHECKPOINTS / record["checkpoint"]),
    ]
    code, baseline, _, output = peak_rss(baseline_command)
    assert code == 0, output[-3000:]
    ratio = (peak - baseline) / record["written_bytes"]
    print(f"conversion peak {peak / 1e6:.0f} MB, baseline {baseline / 1e6:.0f} MB, ratio {ratio:.2f}")
    assert ratio <= 1.5


@pytest.mark.parametrize("stage", [0, 1])
def test_stages_0_and_1_from_one_rank_convert_and_verify(stage: int, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    size = ["--hidden", "64", "--layers", "1", "--vocab", "512"]
    run_torchrun(SYNTHETIC, ["--out", str(out), "--stage", str(stage), *size], nproc_per_node=1)
    record = run_convert(TuneConfig(), out, out / "tokenizer", tmp_path / "model")
    assert record.zero_stage == stage and record.trained_world_size == 1
    assert record.logits_match and record.all_tensors_checked and record.tensors == 12
