"""prepare on hostile inputs: secrets in parser errors, decompression and amplification bombs,
many-member zips, symbolic links out of the corpus folder (issue 13, findings 5, 8, 9, 10)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from flows.cards import prepare_card
from steps.config import DataConfig
from steps.formats.dataset import DATASET_SUMMARY_FILE, REPORT_FILE
from steps.prepare.corpus import CorpusError
from steps.prepare.documents import load_corpus
from steps.prepare.pipeline import run_prepare
from steps.results import PrepareResult
from steps.runtime.storage import StoredDir
from tests.support.bad_corpus import (
    CSV_ROW_SECRET,
    OUTSIDE_FILE_SECRET,
    OUTSIDE_FOLDER_SECRET,
    XML_TAG_SECRET,
    big_entry_xml,
    broken_xml_with_secret_tag,
    links_out,
    malformed_csv,
    many_member_zip,
    pdf_bomb,
    records_gz_bomb,
    xml_gz_bomb,
)
from tests.support.corpus_files import prose

SMALL = {"min_chars": 40, "vocab_size": 300, "block_size": 32, "num_proc": 1}
LIMITS = {"max_file_bytes": 64 << 10, "max_document_bytes": 16 << 10}
HEADERLESS_SECRET = "QPlantedHeaderlessSecret8812"


def _fillers(corpus: Path, count: int = 8) -> None:
    for i in range(count):
        (corpus / f"filler-{i}.txt").write_text(prose(800 + i, 60))


def _skipped(report) -> dict[str, str]:
    return dict(report.skipped_files)


def test_parser_errors_never_quote_the_input_and_a_bad_csv_row_drops_only_itself(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _fillers(corpus)
    bad_row_id, fragment = malformed_csv(corpus / "rows.csv")
    broken_xml_with_secret_tag(corpus / "broken-tag.xml")
    # No header row: its first data row, secret included, would be read as the column names.
    (corpus / "headerless.csv").write_text(f"{HEADERLESS_SECRET},{prose(810)}\n")
    data = DataConfig(corpus=str(corpus), validation_fraction=0.3, **SMALL)
    out = tmp_path / "out"
    summary = run_prepare(data, out)

    rows = [json.loads(line) for line in (out / "dataset" / REPORT_FILE).read_text().splitlines()]
    skipped_records = {r["doc_id"]: r["reason"] for r in rows if r["action"] == "skipped_record"}
    assert fragment in skipped_records[bad_row_id] and "line 3" in skipped_records[bad_row_id]
    # The good rows around the bad one are documents; the file was not dropped.
    documents, report = load_corpus(data)
    ids = {d.doc_id for d in documents}
    assert {"rows.csv#0", "rows.csv#2"} <= ids and bad_row_id not in ids
    skipped = _skipped(report)
    assert "malformed XML" in skipped["broken-tag.xml"] and "line 1" in skipped["broken-tag.xml"]
    assert "header row has none of data.csv_columns" in skipped["headerless.csv"]

    ref = StoredDir(uri=str(out), sha256="0" * 64, files=1, bytes=1)
    card = prepare_card(PrepareResult(dataset=ref, tokenizer=ref, prepare_summary=summary))
    published = [
        json.dumps([part.render() for part in card], default=str),
        (out / "dataset" / REPORT_FILE).read_text(),
        (out / "dataset" / DATASET_SUMMARY_FILE).read_text(),
        summary.model_dump_json(),
    ]
    for secret in (CSV_ROW_SECRET, XML_TAG_SECRET, HEADERLESS_SECRET):
        assert not any(secret in text for text in published), secret
        for name in ("rows.csv", "broken-tag.xml", "headerless.csv"):
            strict = data.model_copy(update={"strict": True, "corpus": str(corpus / name)})
            with pytest.raises(CorpusError) as error:
                load_corpus(strict)
            assert secret not in str(error.value), (name, str(error.value))


def test_decompression_and_amplification_bombs_are_skipped_with_the_limit(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _fillers(corpus)
    expanded = 4 * LIMITS["max_file_bytes"]
    xml_gz_bomb(corpus / "bomb.xml.gz", expanded)
    records_gz_bomb(corpus / "bomb.jsonl.gz", expanded)
    records_gz_bomb(corpus / "bomb.csv.gz", expanded)
    pdf_bomb(corpus / "bomb.pdf", pages=64, chars_per_page=4 * LIMITS["max_document_bytes"] // 64)
    big_entry_xml(corpus / "big-entry.xml", 2 * LIMITS["max_document_bytes"])
    assert all((corpus / name).stat().st_size < 16 << 10 for name in ("bomb.xml.gz", "bomb.jsonl.gz", "bomb.pdf"))

    documents, report = load_corpus(DataConfig(corpus=str(corpus), **SMALL, **LIMITS))
    skipped = _skipped(report)
    for name in ("bomb.xml.gz", "bomb.jsonl.gz", "bomb.csv.gz"):
        assert "larger than data.max_file_bytes" in skipped.get(name, ""), (name, skipped)
    assert "data.max_document_bytes" in skipped.get("bomb.pdf", ""), skipped
    ids = {d.doc_id for d in documents}
    assert not any(i.startswith("bomb.") for i in ids)  # skipped whole, not after some of its records
    # Under the file limit, an XML entry over the document limit is left out on its own.
    assert "big-entry.xml#CWE-2" in ids and "big-entry.xml#CWE-1" not in ids
    assert report.dropped["unreadable_record"] == 1


def test_a_zip_archive_is_opened_twice_for_all_its_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    many_member_zip(corpus / "many.zip", 200)
    opens = []

    class CountingZipFile(zipfile.ZipFile):
        def __init__(self, *args, **kwargs) -> None:
            opens.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(zipfile, "ZipFile", CountingZipFile)
    documents, _ = load_corpus(DataConfig(corpus=str(corpus), **SMALL))
    assert len(documents) == 200
    # Once to list its members when planning the shards, once to read them all: not once per member.
    assert len(opens) == 2, f"{len(opens)} ZipFile opens for one archive"


@pytest.mark.parametrize("spec", ["folder", "glob"])
def test_symlinks_out_of_the_corpus_are_not_followed_but_reported(tmp_path: Path, spec: str) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _fillers(corpus)
    link_names = links_out(corpus, tmp_path / "outside")
    data = DataConfig(corpus=str(corpus) if spec == "folder" else f"{corpus}/**/*", **SMALL)
    documents, report = load_corpus(data)
    texts = "\n".join(d.text for d in documents)
    assert OUTSIDE_FILE_SECRET not in texts and OUTSIDE_FOLDER_SECRET not in texts
    assert len(documents) == 8
    skipped = _skipped(report)
    for name in link_names:
        assert "symbolic link" in skipped.get(name, ""), (name, skipped)
    with pytest.raises(CorpusError, match="linked-secret.txt: symbolic link"):
        load_corpus(data.model_copy(update={"strict": True}))
