"""The GPU path end to end on one CUDA device: bf16 training under ZeRO-2 and ZeRO-3 through our entrypoint,
resume, conversion with logits compared, and each inference engine generating in fp16.

Run by bench/gpu/run.sh (part 1) on the GPU machine; skipped elsewhere (conftest).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steps.config import EvaluateConfig, TuneConfig, write_config
from steps.convert.consolidate import run_convert
from steps.evaluate.engines import InferenceEngine, build_engine
from steps.formats.dataset import read_prompts
from steps.runtime.distributed import init_distributed
from steps.runtime.launch import run_torchrun
from steps.train.metrics import PEAK_TFLOPS_16BIT
from tests.support.synthetic_dataset import write_synthetic_dataset

VOCAB, BLOCK = 512, 128
KERNEL_AGREEMENT = 0.75
"""Share of greedy tokens on which fp16 kernel injection must agree with fp16 HF generate: fused kernels
round differently, and one flipped near-tie changes every later token of that prompt."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), VOCAB, BLOCK, train_blocks=256)


def _config(stage: int, steps: int) -> TuneConfig:
    return TuneConfig().with_overrides(
        **{
            "data.vocab_size": VOCAB,
            "data.block_size": BLOCK,
            "train.max_steps": steps,
            "train.micro_batch_size": 8,
            "train.dtype": "bf16",
            "train.learning_rate": 3e-3,
            "train.warmup_steps": 2,
            "train.log_every": 2,
            "train.checkpoint_every": 4,
            "train.nproc_per_node": 1,
            "deepspeed.zero_stage": stage,
        }
    )


def _train(config: TuneConfig, data: tuple[Path, Path], out: Path) -> dict:
    args = ["--config", str(write_config(config, out.parent / f"{out.name}-{config.train.max_steps}.json"))]
    args += ["--dataset", str(data[0]), "--tokenizer", str(data[1]), "--out", str(out)]
    run_torchrun("steps.train", args, nproc_per_node=1)
    return json.loads((out / "train_summary.json").read_text())


@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def trained(request, data, tmp_path_factory) -> tuple[TuneConfig, Path, dict, dict]:
    """8 steps, then a second launch to 16 that resumes from the step-8 checkpoint."""
    out = tmp_path_factory.mktemp(f"zero{request.param}") / "train"
    first = _train(_config(request.param, 8), data, out)
    config = _config(request.param, 16)
    return config, out, first, _train(config, data, out)


def test_bf16_training_learns_checkpoints_and_resumes(trained) -> None:
    config, out, first, resumed = trained
    assert first["resumed_from_step"] == 0 and resumed["resumed_from_step"] == 8
    assert resumed["zero_stage"] == config.deepspeed.zero_stage and resumed["steps"] == 16
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(2, 17, 2))  # the resumed run continues the same log
    assert metrics[-1]["loss"] < metrics[0]["loss"] - 1.0
    assert (out / "checkpoints" / "step-0000016" / "checkpoint.json").is_file()


def test_metrics_report_tflops_and_mfu_from_the_device_name(trained) -> None:
    _, out, _, resumed = trained
    name = torch.cuda.get_device_name()
    expected = next((peak for pattern, peak in PEAK_TFLOPS_16BIT if pattern in name), None)
    assert resumed["peak_tflops"] == expected, f"no data-sheet peak for {name}"
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["tflops"] > 0 and last["mfu"] == pytest.approx(last["tflops"] / expected)
    assert 0 < last["memory_gib"] < torch.cuda.get_device_properties(0).total_memory / 2**30


def test_conversion_reproduces_the_trained_logits(trained, data, tmp_path: Path) -> None:
    config, out, _, resumed = trained
    record = run_convert(config, out, data[1], tmp_path / "model")
    assert record.logits_match and record.step == 16 and record.parameters == resumed["parameters"]
    assert record.zero_stage == config.deepspeed.zero_stage and record.all_tensors_checked


@pytest.fixture(scope="module")
def converted(data, tmp_path_factory) -> Path:
    """A ZeRO-2 model trained to confident predictions, converted: greedy tokens without near-ties."""
    out = tmp_path_factory.mktemp("engines") / "train"
    config = _config(2, 80).with_overrides(**{"train.checkpoint_every": 80, "train.log_every": 10})
    _train(config, data, out)
    model = out.parent / "model"
    run_convert(config, out, data[1], model)
    return model


def _generate(name: str, model: Path, data, settings: EvaluateConfig) -> tuple[torch.Tensor, InferenceEngine]:
    ctx = init_distributed()
    engine = build_engine(name, model, ctx, settings)
    ids = torch.tensor([row["prompt_ids"] for row in read_prompts(data[0])], device=ctx.device)
    new = engine.generate(ids, torch.ones_like(ids), settings, eos_ids=[0], pad_id=1)
    return new.cpu(), engine


def test_kernel_injection_agrees_with_hf_generate_in_fp16(converted, data, single_rank) -> None:
    settings = EvaluateConfig(max_new_tokens=16, dtype="fp16", kernel_inject=True)
    hf, _ = _generate("hf", converted, data, settings)
    fused, engine = _generate("deepspeed", converted, data, settings)
    notes = engine.notes
    # The fused kernels ran: a fallback to AutoTP would make this a test of plain modules, passing for nothing.
    assert engine.kernel_injected, f"kernel injection fell back to AutoTP: {notes}"
    assert hf.shape == fused.shape
    agreement = (hf == fused).float().mean().item()
    assert agreement >= KERNEL_AGREEMENT, f"{agreement:.2f} of greedy tokens agree; notes: {notes}"


def test_zero_inference_with_parameters_offloaded_to_cpu_generates(converted, data, single_rank) -> None:
    settings = EvaluateConfig(max_new_tokens=16, dtype="fp16", zero_offload="cpu")
    hf, _ = _generate("hf", converted, data, settings)
    zero, engine = _generate("zero", converted, data, settings)
    assert engine.notes == [] and zero.shape == hf.shape
    assert (zero == hf).float().mean().item() >= KERNEL_AGREEMENT
