"""prepare on messy corpora: every format, every bad input, redaction, dedupe, split leakage."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from flows.cards import prepare_card
from steps.config import DataConfig
from steps.formats.blocks import load_blocks
from steps.formats.dataset import DATASET_SUMMARY_FILE
from steps.formats.tokenizer_folder import load_tokenizer
from steps.prepare.corpus import CorpusError
from steps.prepare.documents import load_corpus
from steps.prepare.pipeline import run_prepare
from steps.results import DuplicateCounts, PrepareResult
from steps.runtime.storage import StoredDir
from tests.support.corpus_files import CANARIES, CANARY_VALUES, IOCS, prose, write_bad_files, write_good_corpus

SMALL = {"min_chars": 40, "vocab_size": 300, "block_size": 32, "num_proc": 1}


def _decoded(out: Path, split: str) -> str:
    tokenizer = load_tokenizer(out / "tokenizer")
    return tokenizer.decode(load_blocks(out / "dataset" / split).reshape(-1).tolist())


def test_every_format_is_read(tmp_path: Path) -> None:
    expected = write_good_corpus(tmp_path / "corpus")
    documents, report = load_corpus(
        DataConfig(corpus=str(tmp_path / "corpus"), text_fields=["title", "text"], csv_columns=["body"], **SMALL)
    )
    texts = {d.doc_id: d.text for d in documents}
    for fmt, doc_id in expected.items():
        assert doc_id in texts, (fmt, sorted(texts))
    assert texts["records.json#0"].startswith("first\nReport 6.")
    assert texts["table.csv#0"].startswith("Report 10.")
    assert "Report 13." in texts["report.pdf"] and "Report 14." in texts["report.pdf"]
    assert texts["bundle.json#malware--1"].startswith("malware: QakBot\nReport 901.")
    assert (
        "kill chain phases: initial-access" in texts["bundle.json#attack-pattern--7e150503-88e7-4861-866b-ff1ac82c4475"]
    )
    assert "bundle.json#relationship--3" not in texts  # no description: nothing to learn from
    assert texts["cwe.xml#CWE-79"].startswith("CWE-79: Cross-site Scripting")
    html = texts["page.html"]
    assert "Report 4." in html and "Report 5." in html
    assert not any(marker in html for marker in ("SCRIPTMARKER", "NAVMARKER", "FOOTERMARKER"))
    assert report.documents_by_format["stix"] == 3 and report.documents_by_format["jsonl.gz"] == 1
    assert report.files_by_format["pdf"] == 1 and report.skipped_file_count == 0


def test_bad_inputs_are_skipped_with_reasons_and_strict_fails(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    reasons = write_bad_files(corpus)
    (corpus / "good.txt").write_text(prose(60))
    (corpus / "good2.txt").write_text(prose(61))
    data = DataConfig(corpus=str(corpus), **SMALL)
    documents, report = load_corpus(data)
    assert [d.doc_id for d in documents] == ["good.txt", "good2.txt"]
    skipped = {path: reason for path, reason in report.skipped_files}
    assert set(skipped) == set(reasons)
    for name, fragment in reasons.items():
        assert fragment in skipped[name], (name, skipped[name])
    for name in reasons:
        with pytest.raises(CorpusError, match=rf"{name}: .*data.strict is on"):
            load_corpus(data.model_copy(update={"strict": True, "corpus": str(corpus / name)}))


def test_a_200_mb_line_is_skipped_without_being_loaded(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    chunk = b"A" * (1 << 20)
    with open(corpus / "one-line.txt", "wb") as handle:
        for _ in range(200):
            handle.write(chunk)
    with open(corpus / "records.jsonl", "wb") as handle:
        handle.write(json.dumps({"text": prose(70)}).encode() + b"\n")
        handle.write(b'{"text": "')
        for _ in range(200):
            handle.write(chunk)
        handle.write(b'"}\n' + json.dumps({"text": prose(71)}).encode() + b"\n")
    data = DataConfig(corpus=str(corpus), max_document_bytes=4 << 20, **SMALL)
    tracemalloc.start()
    documents, report = load_corpus(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 << 20  # the limit is 4 MiB; neither 200 MB line was held
    assert [d.doc_id for d in documents] == ["records.jsonl#0", "records.jsonl#2"]
    assert "larger than data.max_document_bytes" in dict(report.skipped_files)["one-line.txt"]
    assert report.dropped["unreadable_record"] == 1
    strict = data.model_copy(update={"strict": True, "corpus": str(corpus / "records.jsonl")})
    with pytest.raises(CorpusError, match=r"^records.jsonl record 1: line longer than data.max_document_bytes"):
        load_corpus(strict)


def _canary_corpus(root: Path) -> None:
    root.mkdir()
    for i, (kind, line) in enumerate(CANARIES.items()):
        (root / f"leak-{kind}.md").write_text(
            f"{prose(100 + i)}\n{line}\nIndicators: {' '.join(IOCS)}\n{prose(200 + i)}"
        )
    (root / "contact.txt").write_text(f"{prose(300)} Contact soc-lead@example.org for the IOC list {IOCS[0]}.")
    for i in range(12):
        (root / f"filler-{i}.txt").write_text(prose(400 + i, 120))


def test_canary_secrets_never_reach_shards_report_or_card(tmp_path: Path) -> None:
    _canary_corpus(tmp_path / "corpus")
    data = DataConfig(corpus=str(tmp_path / "corpus"), validation_fraction=0.3, **SMALL)
    out = tmp_path / "out"
    summary = run_prepare(data, out)
    ref = StoredDir(uri=str(out), sha256="0" * 64, files=1, bytes=1)
    card = prepare_card(PrepareResult(dataset=ref, tokenizer=ref, prepare_summary=summary))
    published = [
        json.dumps([part.render() for part in card], default=str),
        _decoded(out, "train"),
        _decoded(out, "validation"),
        (out / "dataset" / "report.jsonl").read_text(),
        (out / "dataset" / DATASET_SUMMARY_FILE).read_text(),
        (out / "dataset" / "prompts.jsonl").read_text(),
        summary.model_dump_json(),
    ]
    for value in CANARY_VALUES:
        assert not any(value in text for text in published), value
    redactions = summary.report.redactions
    for kind in CANARIES:
        assert redactions.get(kind, 0) >= 1, (kind, redactions)
    rows = [json.loads(line) for line in (out / "dataset" / "report.jsonl").read_text().splitlines()]
    redacted = {r["doc_id"] for r in rows if r["action"] == "redacted"}
    assert {f"leak-{kind}.md" for kind in CANARIES} <= redacted
    assert "email" not in redactions  # e-mail redaction is off by default


def test_indicators_survive_and_email_redaction_is_a_switch(tmp_path: Path) -> None:
    _canary_corpus(tmp_path / "corpus")
    base = DataConfig(corpus=str(tmp_path / "corpus"), **SMALL)
    documents, _ = load_corpus(base)
    texts = {d.doc_id: d.text for d in documents}
    for kind in CANARIES:
        leak = texts[f"leak-{kind}.md"]
        assert all(ioc in leak for ioc in IOCS), leak
        assert f"<SECRET:{kind}>" in leak
    assert "soc-lead@example.org" in texts["contact.txt"]
    redacted, report = load_corpus(base.model_copy(update={"redact_emails": True}))
    contact = {d.doc_id: d.text for d in redacted}["contact.txt"]
    assert "<PII:email>" in contact and "soc-lead" not in contact and IOCS[0] in contact
    assert report.redactions["email"] == 1


def test_exact_and_near_duplicates_go_distinct_documents_stay(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    original = prose(500, 300)
    words = original.split()
    words[150] = "zeroday"  # one word in 300 changed
    (corpus / "a.txt").write_text(original)
    (corpus / "b-copy.txt").write_text(original)
    (corpus / "c-near.txt").write_text(" ".join(words))
    (corpus / "d-other.txt").write_text(prose(501, 300))
    (corpus / "e-other.txt").write_text(prose(502, 300))
    for num_proc in (1, 2):
        documents, report = load_corpus(DataConfig(corpus=str(corpus), **{**SMALL, "num_proc": num_proc}))
        assert [d.doc_id for d in documents] == ["a.txt", "d-other.txt", "e-other.txt"]
        assert report.summary().duplicates == DuplicateCounts(exact=1, near=1)
    documents, _ = load_corpus(DataConfig(corpus=str(corpus), **{**SMALL, "near_duplicate_threshold": 1.0}))
    assert "c-near.txt" in [d.doc_id for d in documents]


def test_no_document_on_both_sides_of_the_split(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"doc-{i}.txt").write_text(f"MARK{i}Q " + prose(600 + i, 60))
    data = DataConfig(corpus=str(corpus), validation_fraction=0.25, **{**SMALL, "num_proc": 2})
    out = tmp_path / "out"
    summary = run_prepare(data, out)
    train, validation = _decoded(out, "train"), _decoded(out, "validation")
    in_train = {i for i in range(40) if f"MARK{i}Q " in train}
    in_validation = {i for i in range(40) if f"MARK{i}Q " in validation}
    assert in_validation and in_train and not in_train & in_validation
    assert {f"doc-{i}.txt" for i in in_validation} <= set(summary.validation_doc_ids)
    assert summary.documents.train + summary.documents.validation == 40
    again = run_prepare(data, tmp_path / "again")
    assert again.validation_doc_ids == summary.validation_doc_ids
    assert again.shards == summary.shards  # byte-identical Arrow shards from the same corpus
