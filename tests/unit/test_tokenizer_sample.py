"""The domain tokenizer trains on a bounded, seeded sample of the training side (`data.tokenizer_sample_chars`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from steps.config import DataConfig
from steps.prepare import pipeline
from steps.prepare.tokenizer_training import sample_training_texts

TEXTS = [f"document {i} " + "x" * (i % 7) * 10 for i in range(200)]


def test_every_text_in_order_when_all_fit_or_no_budget() -> None:
    assert list(sample_training_texts(iter(TEXTS), sum(map(len, TEXTS)), seed=1)) == TEXTS
    assert list(sample_training_texts(iter(TEXTS), None, seed=1)) == TEXTS


def test_sample_is_bounded_seeded_whole_documents_in_corpus_order() -> None:
    budget = sum(map(len, TEXTS)) // 4
    sample = list(sample_training_texts(iter(TEXTS), budget, seed=7))
    assert sum(map(len, sample)) <= budget
    assert sum(map(len, sample)) > budget * 0.8  # it fills the budget, not a token of it
    positions = [TEXTS.index(text) for text in sample]
    assert positions == sorted(positions)  # whole documents, in the order they came
    assert sample == list(sample_training_texts(iter(TEXTS), budget, seed=7))
    assert sample != list(sample_training_texts(iter(TEXTS), budget, seed=8))
    assert positions[-1] > len(TEXTS) // 2  # drawn from the whole corpus, not its head


def test_a_document_longer_than_the_budget_is_cut() -> None:
    assert list(sample_training_texts(iter(["a" * 50]), 20, seed=1)) == ["a" * 20]


def test_budget_below_the_minimum_names_the_field() -> None:
    with pytest.raises(ValidationError, match="tokenizer_sample_chars"):
        DataConfig(tokenizer_sample_chars=100)


def test_prepare_trains_its_tokenizer_on_the_sample_only(tmp_path: Path, monkeypatch) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(60):
        (corpus / f"{i}.txt").write_text(f"Incident {i}: the actor used CWE-{i} to move laterally and persist. " * 40)
    seen: list[int] = []
    train = pipeline.train_bpe_tokenizer

    def counting(texts, vocab_size):
        texts = list(texts)
        seen.append(sum(map(len, texts)))
        return train(texts, vocab_size)

    monkeypatch.setattr(pipeline, "train_bpe_tokenizer", counting)
    data = DataConfig(corpus=str(corpus), vocab_size=300, block_size=32, tokenizer_sample_chars=10_000)
    summary = pipeline.run_prepare(data, tmp_path / "out", require_prompts=False)
    assert 10_000 - 3_000 < seen[0] <= 10_000 < summary.report.kept_chars  # documents are 2.8k characters
