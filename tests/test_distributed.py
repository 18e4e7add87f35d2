"""Training, conversion and evaluation under torchrun with 2 CPU ranks (gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from steps.config import TuneConfig, write_config
from steps.launch import LaunchError, run_torchrun

pytestmark = pytest.mark.distributed


def _train(config: TuneConfig, prepared: Path, out: Path) -> dict:
    config_file = write_config(config, out.parent / f"{out.name}.json")
    run_torchrun(
        "steps.train",
        [
            "--config",
            str(config_file),
            "--dataset",
            str(prepared / "dataset"),
            "--tokenizer",
            str(prepared / "tokenizer"),
            "--out",
            str(out),
        ],
        nproc_per_node=2,
    )
    return json.loads((out / "train_summary.json").read_text())


@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def trained(request, debug_config: TuneConfig, prepared: Path, tmp_path_factory) -> tuple[TuneConfig, Path, dict]:
    config = debug_config.with_overrides(
        **{
            "deepspeed.zero_stage": request.param,
            "deepspeed.config_file": f"configs/deepspeed/zero{request.param}.json",
            "train.max_steps": 12,
            "train.checkpoint_every": 4,
            "train.log_every": 2,
        }
    )
    out = tmp_path_factory.mktemp(f"train-zero{request.param}") / "train"
    return config, out, _train(config, prepared, out)


def test_training_learns_and_checkpoints(trained) -> None:
    config, out, summary = trained
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(2, 13, 2))
    assert metrics[-1]["loss"] < metrics[0]["loss"] - 0.5
    assert summary["world_size"] == 2 and summary["zero_stage"] == config.deepspeed.zero_stage
    assert summary["tokens_seen"] == 12 * 8 * 2 * 128
    # Keep the last 2: steps 8 and 12, each complete, each rank's shards present.
    kept = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert kept == ["step-0000008", "step-0000012"]
    final = out / "checkpoints" / "step-0000012"
    assert json.loads((final / "checkpoint.json").read_text())["step"] == 12
    assert len(list(final.glob("*optim_states.pt"))) == 2 and (final / "config.json").is_file()


def test_conversion_matches_the_trained_engine_and_loads(trained, prepared: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from steps.convert import run_convert

    config, out, summary = trained
    record = run_convert(out, prepared / "tokenizer", tmp_path / "model")
    assert record["logits_match"] and record["max_logit_difference"] <= 1e-4
    assert record["parameters"] == summary["parameters"] and record["step"] == 12
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))
    assert model.config.num_hidden_layers == config.model.num_layers
    assert all(p.abs().sum() > 0 for p in model.parameters())


def test_evaluation_engines_agree_and_keep_prompt_order(trained, prepared: Path, tmp_path: Path) -> None:
    from steps.convert import run_convert

    config, out, _ = trained
    if config.deepspeed.zero_stage != 3:
        pytest.skip("one evaluation run is enough; it uses the ZeRO-3 model")
    run_convert(out, prepared / "tokenizer", tmp_path / "model")
    config_file = write_config(config, tmp_path / "eval.json")
    run_torchrun(
        "steps.evaluate",
        [
            "--config",
            str(config_file),
            "--model",
            str(tmp_path / "model"),
            "--dataset",
            str(prepared / "dataset"),
            "--train-summary",
            str(out / "train_summary.json"),
            "--out",
            str(tmp_path / "eval"),
        ],
        nproc_per_node=2,
    )
    summary = json.loads((tmp_path / "eval" / "eval_summary.json").read_text())
    rows = pq.read_table(tmp_path / "eval" / "generations.parquet").to_pylist()
    assert summary["prompts"] == 5  # uneven over 2 ranks
    for engine in ("hf", "deepspeed", "zero"):
        assert [r["index"] for r in rows if r["engine"] == engine] == [0, 1, 2, 3, 4]
    assert summary["engines_agree"] is True
    assert summary["perplexity"]["tuned"] < summary["perplexity"]["untuned"]


def test_a_failing_rank_fails_the_launch_with_code_and_log(tmp_path: Path) -> None:
    with pytest.raises(LaunchError) as error:
        run_torchrun(
            "steps.train",
            [
                "--config",
                str(tmp_path / "missing.json"),
                "--dataset",
                "x",
                "--tokenizer",
                "x",
                "--out",
                str(tmp_path / "o"),
            ],
            nproc_per_node=2,
        )
    assert "exited with code 1" in str(error.value) and "cannot read config file" in str(error.value)


def test_verify_logits_are_the_engine_output(trained) -> None:
    _, out, _ = trained
    reference = torch.load(out / "verify_logits.pt", weights_only=True)
    assert reference["logits"].shape[:2] == reference["input_ids"].shape
