"""Training, conversion and evaluation under torchrun with 2 CPU ranks (gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from steps.config import TuneConfig, write_config
from steps.convert.consolidate import run_convert
from steps.formats.dataset import DATASET_SUMMARY_FILE
from steps.formats.train_folder import tag_for
from steps.runtime.launch import LaunchError, run_torchrun

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
    config, out, summary = trained
    # A small shard size so that even the debug model is written as several shards with an index.
    config = config.with_overrides(**{"convert.max_shard_size": "1MB"})
    record = run_convert(config, out, prepared / "tokenizer", tmp_path / "model")
    assert record.logits_match and record.max_logit_difference <= 1e-4
    assert record.parameters == summary["parameters"] and record.step == 12
    assert record.zero_stage == config.deepspeed.zero_stage and record.trained_world_size == 2
    assert record.all_tensors_checked and all(r.norm > 0 for r in record.tensor_checks)
    assert record.shards > 1 and (tmp_path / "model" / "model.safetensors.index.json").is_file()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "conversion.json"):
        assert (tmp_path / "model" / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))
    assert model.config.num_hidden_layers == config.model.num_layers
    assert all(p.abs().sum() > 0 for p in model.parameters())
    # Loaded the plain way, the tokenizer pads on the left, as batched generation needs.
    assert AutoTokenizer.from_pretrained(str(tmp_path / "model")).padding_side == "left"


def test_conversion_to_bf16_halves_the_weights_within_tolerance(trained, prepared: Path, tmp_path: Path) -> None:
    config, out, _ = trained
    record = run_convert(config.with_overrides(**{"convert.dtype": "bf16"}), out, prepared / "tokenizer", tmp_path)
    assert record.dtype == "bf16" and record.written_bytes == 2 * record.parameters
    assert record.logits_match and 0 < record.max_logit_difference <= record.tolerance
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"


def _held_out_subset(prepared: Path, keep: int, tmp_path: Path) -> Path:
    """The prepared dataset with only the first `keep` held-out prompts."""
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    for name in ("train", "validation", DATASET_SUMMARY_FILE):
        (dataset / name).symlink_to(prepared / "dataset" / name)
    lines = (prepared / "dataset" / "prompts.jsonl").read_text().splitlines()[:keep]
    (dataset / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return dataset


def test_evaluation_engines_agree_and_keep_prompt_order(trained, prepared: Path, tmp_path: Path, capfd) -> None:
    """ZeRO-2 model: 2 held-out + 1 short user prompt = 3; ZeRO-3 model: 5 held-out prompts (uneven over 2 ranks)."""

    config, out, _ = trained
    run_convert(config, out, prepared / "tokenizer", tmp_path / "model")
    if config.deepspeed.zero_stage == 2:
        dataset = _held_out_subset(prepared, 2, tmp_path)
        user_file = tmp_path / "prompts.jsonl"
        user_file.write_text('{"prompt": "CWE-89:", "reference": " Improper Neutralization"}\n')
        config = config.with_overrides(**{"evaluate.prompt_file": str(user_file)})
        expected_prompts = 3
    else:
        dataset, expected_prompts = prepared / "dataset", 5
    config = config.with_overrides(**{"evaluate.probes": 8})
    config_file = write_config(config, tmp_path / "eval.json")
    run_torchrun(
        "steps.evaluate",
        [
            "--config",
            str(config_file),
            "--model",
            str(tmp_path / "model"),
            "--dataset",
            str(dataset),
            "--out",
            str(tmp_path / "eval"),
        ],
        nproc_per_node=2,
    )
    # Progress from rank 0 only (each line once), through every part, with counts; the last line for the card.
    progress = [line for line in capfd.readouterr().out.splitlines() if line.startswith("evaluate: ")]
    for part in (
        "perplexity (tuned model): 0/",
        "probe likelihoods (untuned model): 0/",
        "generations (zero engine): 0/",
    ):
        assert sum(part in line for line in progress) == 1, (part, progress)
    assert "probe completions (tuned model): 4/4 probes (100%)" in "\n".join(progress)  # rank 0: 4 of 8 generative
    assert json.loads((tmp_path / "eval" / "progress.json").read_text())["line"] == progress[-1]
    summary = json.loads((tmp_path / "eval" / "eval_summary.json").read_text())
    rows = pq.read_table(tmp_path / "eval" / "generations.parquet").to_pylist()
    assert summary["prompts"] == expected_prompts
    for engine in ("hf", "deepspeed", "zero"):
        mine = [r for r in rows if r["engine"] == engine]
        assert [r["index"] for r in mine] == list(range(expected_prompts))
        assert all(r["tokens"] == len(r["token_ids"]) > 0 and r["latency_s"] > 0 for r in mine)
    if config.deepspeed.zero_stage == 2:
        assert rows[2]["source"] == "user" and rows[2]["prompt"] == "CWE-89:"
    assert summary["engines_agree"] is True and summary["agreement_required"] is True
    assert summary["engine_notes"]["deepspeed"]  # says why kernel injection is off on CPU
    assert summary["perplexity"]["tuned"] < summary["perplexity"]["untuned"]
    probes = pq.read_table(tmp_path / "eval" / "probes.parquet").to_pylist()
    assert len(probes) == 2 * 2 * 8  # two kinds of 8 probes, on the tuned and the untuned model
    assert {r["split"] for r in probes} == {"train", "validation"}
    tuned, untuned = summary["probes"]["tuned"]["all"], summary["probes"]["untuned"]["all"]
    assert tuned["answer_logprob_per_token"] > untuned["answer_logprob_per_token"]


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
    """The logits convert must reproduce are the trained weights' own: DeepSpeed's zero_to_fp32 consolidates the final
    checkpoint independently of our converter, and that model gives the same values on the verify batch."""
    config, out, _ = trained
    reference = torch.load(out / "verify_logits.pt", weights_only=True)
    assert reference["logits"].shape[:2] == reference["input_ids"].shape
    final = out / "checkpoints" / tag_for(config.train.max_steps)
    state = get_fp32_state_dict_from_zero_checkpoint(str(final.parent), tag=final.name)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(final)), dtype=torch.float32).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # a tied head is the embedding
    with torch.no_grad():
        logits = model(input_ids=reference["input_ids"]).logits
    assert torch.allclose(logits, reference["logits"], atol=1e-4), float((logits - reference["logits"]).abs().max())
