"""What a real base model brings, under torchrun with 2 CPU ranks: tied embeddings and 9/3 grouped-query heads.

SmolLM2-135M ties its input and output embeddings and has 9 attention heads with 3
key/value heads. A tiny base model with the same traits goes through ZeRO-2 and ZeRO-3
training, checkpoint and resume, conversion, and DeepSpeed-Inference on 2 ranks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from steps.config import TuneConfig, write_config
from steps.convert.consolidate import run_convert
from steps.formats.tokenizer_folder import load_tokenizer
from steps.formats.train_folder import tag_for
from steps.runtime.launch import run_torchrun
from tests.support.tiny_llama import save_tiny_tied_llama

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
STEPS = 6


@pytest.fixture(scope="module")
def tied_base(prepared: Path, tmp_path_factory) -> Path:
    """The tiny tied 9/3-head Llama (`tests.support.tiny_llama`) with the prepared tokenizer and its ids."""
    tokenizer = load_tokenizer(prepared / "tokenizer")
    return save_tiny_tied_llama(tmp_path_factory.mktemp("tied-base"), len(tokenizer), 256, tokenizer)


def _train(config: TuneConfig, prepared: Path, base: Path, out: Path, *extra: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config_file = write_config(config, out.parent / f"{out.name}.json")
    args = ["--config", str(config_file), "--dataset", str(prepared / "dataset"), "--tokenizer"]
    args += [str(prepared / "tokenizer"), "--out", str(out), "--base-model", str(base), *extra]
    run_torchrun("steps.train", args, nproc_per_node=2)


@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def trained(request, debug_config: TuneConfig, prepared: Path, tied_base: Path, tmp_path_factory):
    config = debug_config.with_overrides(
        **{
            "model.base_model": str(tied_base),
            "deepspeed.zero_stage": request.param,
            "deepspeed.config_file": f"configs/deepspeed/zero{request.param}.json",
            "train.max_steps": STEPS,
            "train.checkpoint_every": 3,
            "train.log_every": 3,
            "train.micro_batch_size": 2,
        }
    )
    out = tmp_path_factory.mktemp(f"tied-zero{request.param}") / "train"
    _train(config, prepared, tied_base, out)
    return config, out


def test_tied_embeddings_survive_training_resume_and_conversion(trained, prepared, tied_base, tmp_path) -> None:
    config, out = trained
    final = get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoints"), tag=tag_for(STEPS))
    start = LlamaForCausalLM.from_pretrained(str(tied_base)).model.embed_tokens.weight
    assert not torch.equal(final["model.embed_tokens.weight"], start)  # the shared table was trained
    assert "lm_head.weight" not in final or torch.equal(final["lm_head.weight"], final["model.embed_tokens.weight"])

    # Resume from the middle checkpoint alone: the same weights as the uninterrupted run.
    earlier = tmp_path / "earlier"
    shutil.copytree(out / "checkpoints" / tag_for(3), earlier / tag_for(3))
    _train(config, prepared, tied_base, tmp_path / "resumed", "--resume-from", str(earlier))
    resumed = get_fp32_state_dict_from_zero_checkpoint(str(tmp_path / "resumed" / "checkpoints"), tag=tag_for(STEPS))
    assert resumed.keys() == final.keys() and all(torch.equal(resumed[k], final[k]) for k in final)

    record = run_convert(config, out, prepared / "tokenizer", tmp_path / "model")
    assert record.logits_match and record.max_logit_difference <= 1e-4
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert torch.equal(model.get_input_embeddings().weight, final["model.embed_tokens.weight"])
    reference = torch.load(out / "verify_logits.pt", weights_only=True)
    with torch.no_grad():
        logits = model(reference["input_ids"]).logits
    assert torch.allclose(logits, reference["logits"].float(), atol=1e-4)


def test_nine_heads_on_two_ranks_evaluate_without_splitting_heads(trained, prepared, tied_base, tmp_path) -> None:
    config, out = trained
    if config.deepspeed.zero_stage != 3:
        pytest.skip("one trained model is enough for the engines")
    run_convert(config, out, prepared / "tokenizer", tmp_path / "model")
    config = config.with_overrides(**{"evaluate.engines": ["hf", "deepspeed"], "evaluate.probes": 2})
    config_file = write_config(config, tmp_path / "eval.json")
    args = ["--config", str(config_file), "--model", str(tmp_path / "model"), "--dataset"]
    args += [str(prepared / "dataset")]
    args += ["--out", str(tmp_path / "eval"), "--base-model", str(tied_base)]
    run_torchrun("steps.evaluate", args, nproc_per_node=2)
    summary = json.loads((tmp_path / "eval" / "eval_summary.json").read_text())
    assert summary["engines_agree"] is True
    general, domain = summary["general_perplexity"], summary["perplexity"]
    assert summary["general_text"] == "python-docs" and general["tuned"] > 1 and general["untuned"] > 1
    assert general["ratio"] == pytest.approx(general["tuned"] / general["untuned"]) and domain["ratio"] > 0
    assert any("9 attention heads and 3 key/value heads" in note for note in summary["engine_notes"]["deepspeed"])
    rows = pq.read_table(tmp_path / "eval" / "generations.parquet").to_pylist()
    assert [r["index"] for r in rows if r["engine"] == "deepspeed"] == list(range(summary["prompts"]))
