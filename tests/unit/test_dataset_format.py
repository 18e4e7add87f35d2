from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steps.formats.blocks import load_blocks, pack_into_blocks
from steps.formats.dataset import DATASET_SUMMARY_FILE, document_id, read_prompts, record_key
from steps.prepare.split import split_by_document
from steps.results import PrepareSummary


def test_blocks_have_eos_between_documents_and_drop_the_tail() -> None:
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    blocks = list(pack_into_blocks(iter(docs), block_size=4, eos_id=0))
    assert [b.tolist() for b in blocks] == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]


def test_split_is_by_document_deterministic_and_non_empty() -> None:
    ids = [f"doc-{i}" for i in range(500)]
    train, val = split_by_document(ids, 0.1, seed=3)
    assert not set(train) & set(val) and sorted(train + val) == list(range(500))
    assert 25 < len(val) < 75
    assert split_by_document(list(reversed(ids)), 0.1, seed=3)[1] == sorted(499 - i for i in val)
    assert split_by_document(ids, 0.1, seed=4)[1] != val
    tiny_train, tiny_val = split_by_document(["a", "b"], 0.01, seed=0)
    assert len(tiny_train) == 1 and len(tiny_val) == 1


def test_split_needs_two_documents() -> None:
    with pytest.raises(ValueError, match="at least 2 documents"):
        split_by_document(["only"], 0.1, seed=0)


def test_prepared_splits_do_not_share_documents(prepared: Path) -> None:
    summary = PrepareSummary.model_validate_json((prepared / "dataset" / DATASET_SUMMARY_FILE).read_text())
    val_ids = set(summary.validation_doc_ids)
    prompts = read_prompts(prepared / "dataset")
    assert prompts and all(p["doc_id"] in val_ids for p in prompts)
    assert summary.documents.train + summary.documents.validation == summary.report.kept_documents


def test_load_blocks_reads_the_arrow_split(prepared: Path) -> None:
    blocks = load_blocks(prepared / "dataset" / "train")
    assert blocks.dtype == np.int32 and blocks.shape[1] == 128 and blocks.shape[0] > 100
    assert (blocks == 0).sum() > 0  # EOS (id 0) separates documents


def test_document_ids_name_the_source_and_the_record_inside_it() -> None:
    assert document_id("cwec_v4.14.xml", "CWE-79") == "cwec_v4.14.xml#CWE-79"
    assert document_id("reports/apt.md", "") == "reports/apt.md"
    assert record_key("cwec_v4.14.xml#CWE-79") == "CWE-79"
    assert record_key("bundle.zip!feed.jsonl#3") == "3" and record_key("reports/apt.md") == "reports/apt.md"
