from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.config import DataConfig
from steps.formats.dataset import DATASET_SUMMARY_FILE
from steps.formats.tokenizer_folder import load_tokenizer
from steps.prepare.corpus import CorpusError
from steps.prepare.pipeline import run_prepare, sample_blocks
from steps.results import PrepareSummary


def test_prepared_cwe_corpus(prepared: Path) -> None:
    summary = PrepareSummary.model_validate_json((prepared / "dataset" / DATASET_SUMMARY_FILE).read_text())
    assert summary.report.kept_documents > 900
    assert summary.vocab_size == 2048 and summary.blocks.validation > 10
    tokenizer = load_tokenizer(prepared / "tokenizer")
    text = "CWE-79: Improper Neutralization of Input (Cross-site Scripting)"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level BPE is lossless
    # The domain vocabulary has learned the catalogue's words: well over 3 characters a token.
    sample = "The product does not neutralize or incorrectly neutralizes user-controllable input"
    assert len(tokenizer(sample)["input_ids"]) < len(sample) / 3
    assert sample_blocks(prepared / "dataset", tokenizer)[0].strip()


def test_prompts_continue_their_documents(prepared: Path) -> None:
    prompts = [json.loads(line) for line in (prepared / "dataset" / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 5
    for prompt in prompts:
        assert len(prompt["prompt_ids"]) == 16 and prompt["prompt"].startswith("CWE-") and prompt["reference"]


def test_too_little_text_for_a_block_is_a_clear_error(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"{i}.txt").write_text(f"document {i} about lateral movement and credential dumping " * 4)
    data = DataConfig(corpus=str(corpus), min_chars=20, vocab_size=300, block_size=4096)
    with pytest.raises(CorpusError, match="data.block_size"):
        run_prepare(data, tmp_path / "out")


def test_base_model_tokenizer_is_used_instead_of_training_one(prepared: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    load_tokenizer(prepared / "tokenizer").save_pretrained(str(base))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"{i}.txt").write_text(f"Incident {i}: the actor used CWE-{i} to move laterally. " * 8)
    data = DataConfig(corpus=str(corpus), min_chars=20, vocab_size=300, block_size=32, validation_fraction=0.2)
    summary = run_prepare(data, tmp_path / "out", base_model_dir=base)
    assert summary.vocab_size == 2048  # the base tokenizer's, not data.vocab_size
    assert (tmp_path / "out" / "tokenizer" / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()
