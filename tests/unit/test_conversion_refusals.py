"""Conversion refuses what does not hold the trained weights, before writing its record (issue 31, item 18).

A tiny Llama is written as a 2-rank ZeRO-2 checkpoint by hand (tests/support/zero_files.py), with the logits
the "trained engine" gave on the verify batch; each case damages one thing and must end in a ConversionError
naming it, with no `conversion.json` written (the record exists only for a conversion that passed every check).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from steps.config import TuneConfig
from steps.convert.consolidate import ConversionError, run_convert
from steps.formats.model_folder import CONVERSION_FILE
from steps.formats.train_folder import CHECKPOINT_RECORD, CHECKPOINTS, VERIFY_LOGITS_FILE, CheckpointRecord, tag_for
from steps.runtime.storage.manifest import file_entry
from tests.support.synthetic_checkpoint import _tokenizer
from tests.support.zero_files import write_zero_checkpoint

Params = dict[str, torch.Tensor]


def _model() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=16, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _train_folder(root: Path, damage: Callable[[Params], None] = lambda p: None, logits_off: float = 0.0) -> Path:
    model = _model()
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    damage(params)
    folder = write_zero_checkpoint(root / "train" / CHECKPOINTS / tag_for(4), params, stage=2, world_size=2)
    model.config.save_pretrained(str(folder))
    record = CheckpointRecord(
        tag=tag_for(4), step=4, world_size=2, zero_stage=2, init_sha256="0" * 64, tokens_seen=64, blocks_seen=4,
        files=[file_entry(p, p.name) for p in sorted(folder.iterdir())],
    )  # fmt: skip
    (folder / CHECKPOINT_RECORD).write_text(record.model_dump_json())
    ids = torch.arange(8).reshape(1, 8)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    torch.save({"input_ids": ids, "logits": logits + logits_off}, root / "train" / VERIFY_LOGITS_FILE)
    _tokenizer().save_pretrained(str(root / "tokenizer"))
    return root / "train"


def _convert(root: Path):
    return run_convert(TuneConfig(), root / "train", root / "tokenizer", root / "model")


def test_an_intact_checkpoint_converts_and_matches(tmp_path: Path) -> None:
    _train_folder(tmp_path)
    record = _convert(tmp_path)
    assert record.logits_match and record.max_logit_difference <= record.tolerance
    assert (tmp_path / "model" / CONVERSION_FILE).is_file()


def _zero_norm(params: Params) -> None:
    params["model.layers.0.mlp.up_proj.weight"].zero_()


def _misshapen(params: Params) -> None:
    params["model.layers.0.mlp.up_proj.weight"] = torch.randn(31, 16)


def _missing(params: Params) -> None:
    del params["model.layers.0.mlp.up_proj.weight"]


def _unexpected(params: Params) -> None:
    params["model.layers.0.mlp.extra_proj.weight"] = torch.randn(4, 4)


def _empty(params: Params) -> None:
    params["model.norm.weight"] = torch.empty(0)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_zero_norm, r"model.layers.0.mlp.up_proj.weight: gathered tensor has norm 0.0"),
        (_misshapen, r"model.layers.0.mlp.up_proj.weight: gathered tensor has shape \(31, 16\), .* expects \(32, 16\)"),
        (_empty, r"model.norm.weight: gathered tensor has shape \(0,\), the architecture expects \(16,\)"),
        (_missing, r"missing \['model.layers.0.mlp.up_proj.weight'\]"),
        (_unexpected, r"unexpected \['model.layers.0.mlp.extra_proj.weight'\]"),
    ],
    ids=["zero-norm", "misshapen", "empty", "missing", "unexpected"],
)
def test_a_damaged_tensor_or_key_is_refused(tmp_path: Path, damage, message: str) -> None:
    _train_folder(tmp_path, damage)
    with pytest.raises(ConversionError, match=message):
        _convert(tmp_path)
    assert not (tmp_path / "model" / CONVERSION_FILE).exists()


def test_logits_that_differ_from_the_trained_engines_are_refused(tmp_path: Path) -> None:
    _train_folder(tmp_path, logits_off=0.01)  # 100x fp32's tolerance: these weights are not the trained ones
    with pytest.raises(ConversionError, match=r"logits differ from the trained engine's by 0.01 \(tolerance 0.0001"):
        _convert(tmp_path)
    assert not (tmp_path / "model" / CONVERSION_FILE).exists()
