"""What a real base model needs from prepare: its end-of-text token between documents, blocks within its positions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

from flows.cards import prepare_card
from steps.config import ConfigError, DataConfig, TuneConfig
from steps.formats.gguf_source import GGUF_SOURCE_FILE, quantization_note
from steps.formats.tokenizer_folder import load_tokenizer
from steps.prepare.pipeline import run_prepare
from steps.results import PrepareResult
from steps.runtime.storage import StoredDir

END_OF_TEXT, CHAT_END = "<|endoftext|>", "<|im_end|>"


def _chat_base_model(prepared: Path, folder: Path, positions: int = 64) -> Path:
    """A base model folder whose tokenizer's EOS is a chat-turn marker, like SmolLM2-Instruct's."""
    tokenizer = load_tokenizer(prepared / "tokenizer")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", CHAT_END]})
    tokenizer.eos_token = CHAT_END
    tokenizer.save_pretrained(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": positions}))
    return folder


def _corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir(parents=True)
    for i in range(30):
        (corpus / f"{i}.txt").write_text(f"Incident {i}: the actor used CWE-{i} to move laterally. " * 8)
    return corpus


def _data(tmp_path: Path, **fields) -> DataConfig:
    return DataConfig(corpus=str(_corpus(tmp_path)), min_chars=20, block_size=32, validation_fraction=0.2, **fields)


def _packed_ids(out: Path) -> np.ndarray:
    return np.concatenate([np.asarray(row) for row in load_from_disk(str(out / "dataset" / "train"))["input_ids"]])


def test_documents_are_separated_by_end_of_text_not_the_chat_marker(prepared: Path, tmp_path: Path) -> None:
    base = _chat_base_model(prepared, tmp_path / "base")
    summary = run_prepare(_data(tmp_path), tmp_path / "out", base_model_dir=base)
    tokenizer = load_tokenizer(tmp_path / "out" / "tokenizer")
    end_of_text, chat_end = tokenizer.convert_tokens_to_ids([END_OF_TEXT, CHAT_END])
    assert tokenizer.eos_token == CHAT_END  # the model's own EOS is kept for generation
    assert (summary.separator, summary.separator_id) == (END_OF_TEXT, end_of_text)
    ids = _packed_ids(tmp_path / "out")
    assert (ids == end_of_text).sum() >= 20 and not (ids == chat_end).any()
    assert summary.base_model_note is None  # not dequantized from GGUF: nothing lost


def test_the_card_names_the_separator_and_the_gguf_precision_loss(prepared: Path, tmp_path: Path) -> None:
    base = _chat_base_model(prepared, tmp_path / "base")
    note = quantization_note("SmolLM2-135M-Instruct.Q4_1.gguf")
    (base / GGUF_SOURCE_FILE).write_text(json.dumps({"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "note": note}))
    summary = run_prepare(_data(tmp_path), tmp_path / "out", base_model_dir=base)
    assert summary.base_model_note == note and "Q4_1" in note and "lost precision" in note
    ref = StoredDir(uri=str(tmp_path / "out"), sha256="0" * 64, files=1, bytes=1)
    card = json.dumps(
        [part.render() for part in prepare_card(PrepareResult(dataset=ref, tokenizer=ref, prepare_summary=summary))]
    )
    assert "lost precision" in card and "document separator" in card and "<|endoftext|>" in card


def test_the_separator_is_configurable_and_checked(prepared: Path, tmp_path: Path) -> None:
    base = _chat_base_model(prepared, tmp_path / "base")
    summary = run_prepare(_data(tmp_path, document_separator=CHAT_END), tmp_path / "out", base_model_dir=base)
    assert summary.separator == CHAT_END and (_packed_ids(tmp_path / "out") == summary.separator_id).any()
    with pytest.raises(ValueError, match=r"data.document_separator = '<\|sep\|>' is not a token"):
        run_prepare(_data(tmp_path / "x", document_separator="<|sep|>"), tmp_path / "out2", base_model_dir=base)


def test_blocks_longer_than_the_base_models_positions_are_refused(prepared: Path, tmp_path: Path) -> None:
    base = _chat_base_model(prepared, tmp_path / "base", positions=16)
    with pytest.raises(ConfigError, match=r"data.block_size \(32\) is larger than the base model's .* \(16\)"):
        run_prepare(_data(tmp_path), tmp_path / "out", base_model_dir=base)
    assert not (tmp_path / "out" / "dataset" / "summary.json").exists()


def test_blocks_longer_than_the_built_models_positions_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"data.block_size \(1024\) is larger than model.max_position_embeddings"):
        TuneConfig().with_overrides(**{"data.block_size": 1024, "model.max_position_embeddings": 512})
    TuneConfig().with_overrides(**{"data.block_size": 512, "model.max_position_embeddings": 512})
