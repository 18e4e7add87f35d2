"""prepare on the hostile corpus of issue 31 (items 2-8, 13): no hang, no crash, no explosion from one file;
text in the encodings real exports use; unique ids without secrets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from flows.cards import prepare_card
from steps.config import DataConfig
from steps.formats.dataset import DATASET_SUMMARY_FILE, REPORT_FILE
from steps.prepare.corpus import CorpusError
from steps.prepare.documents import load_corpus
from steps.prepare.pipeline import run_prepare
from steps.results import PrepareResult
from steps.runtime.peak_memory import peak_rss
from steps.runtime.storage import StoredDir
from tests.support.corpus_files import prose
from tests.support.hostile_files import (
    MEMBER_NAME_SECRET,
    OVERFLOW_PDF,
    STIX_ID_SECRET,
    deep_json,
    deep_jsonl,
    huge_csv_field,
    lone_surrogate_jsonl,
    nested_zip,
    nul_bytes_files,
    odd_members_zip,
    overlapping_zip,
    random_binary,
    repeated_form_pdf,
    run_with_deadline,
    shared_stream_pdf,
    small_pdf,
    stix_with_null_phase_and_no_ids,
    utf16_powershell,
    wide_zip,
    windows_1252,
)

SMALL = {"min_chars": 40, "vocab_size": 300, "block_size": 32, "num_proc": 1}


def _fillers(corpus: Path, count: int = 6, seed: int = 900) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (corpus / f"filler-{i}.txt").write_text(prose(seed + i, 60))


def _skipped(report) -> dict[str, str]:
    return dict(report.skipped_files)


# Item 2 -------------------------------------------------------------------------------------------------------


def test_a_reader_failing_with_a_huge_exception_fails_prepare_within_seconds(tmp_path: Path, monkeypatch, capfd):
    """A child's exception that pickles to far more than a pipe holds (a UnicodeEncodeError carries its whole
    document) must not deadlock the parent, and its text (a secret, here) must not reach the error or the log."""
    from steps.prepare import corpus as corpus_module
    from steps.prepare.local_reads import read_locally

    corpus = tmp_path / "corpus"
    _fillers(corpus, 4)
    secret = "QPlantedExceptionSecret7781"

    def failing_clean(texts, settings):
        raise UnicodeEncodeError("utf-8", secret + "x" * 300_000, 0, 1, "surrogates not allowed")

    monkeypatch.setattr(corpus_module, "clean_batch", failing_clean)  # inherited by the forked readers
    data = DataConfig(corpus=str(corpus), **{**SMALL, "num_proc": 2})
    verdict = tmp_path / "verdict.txt"

    def read() -> None:
        try:
            read_locally(data, [tmp_path / "r0", tmp_path / "r1"], 2, progress_every_s=1e9)
            verdict.write_text("no error")
        except CorpusError as exc:
            verdict.write_text(str(exc))

    finished, _ = run_with_deadline(read, 60)
    assert finished, "prepare hung on a reader's large exception"
    message = verdict.read_text()
    assert "shard" in message and "filler-" in message and "UnicodeEncodeError" in message, message
    out, err = capfd.readouterr()
    assert secret not in message and secret not in out + err


# Item 3 -------------------------------------------------------------------------------------------------------


def test_one_bad_record_or_file_does_not_abort_the_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _fillers(corpus)
    lone_surrogate_jsonl(corpus / "surrogate.jsonl", 120_000)
    stix_with_null_phase_and_no_ids(corpus / "bundle.json")
    (corpus / "overflow.pdf").write_bytes(OVERFLOW_PDF)
    data = DataConfig(corpus=str(corpus), **{**SMALL, "num_proc": 2})
    documents, report = load_corpus(data)
    texts = {d.doc_id: d.text for d in documents}
    # The lone surrogate is replaced (U+FFFD) where the text enters; the record and its neighbours are kept.
    assert {"surrogate.jsonl#0", "surrogate.jsonl#1", "surrogate.jsonl#2"} <= set(texts), sorted(texts)
    assert "\ufffd tail" in texts["surrogate.jsonl#1"]
    assert "Null phase" in texts["bundle.json#attack-pattern--1"]
    assert _skipped(report)["overflow.pdf"] == "broken PDF (OverflowError)"
    with pytest.raises(CorpusError, match=r"^overflow.pdf: broken PDF \(OverflowError\); data.strict is on"):
        load_corpus(data.model_copy(update={"strict": True, "corpus": str(corpus / "overflow.pdf")}))


def test_any_unexpected_reader_exception_is_a_skip_naming_its_type(tmp_path: Path, monkeypatch) -> None:
    from steps.prepare import extract

    corpus = tmp_path / "corpus"
    _fillers(corpus)
    (corpus / "page.html").write_text(f"<html><body><p>{prose(950)}</p></body></html>")

    def broken_extractor(html: str) -> str:
        raise ZeroDivisionError(f"quoting the input: {html}")

    monkeypatch.setattr(extract, "_html_main_text", broken_extractor)
    data = DataConfig(corpus=str(corpus), **SMALL)
    documents, report = load_corpus(data)
    assert _skipped(report)["page.html"] == "unreadable (ZeroDivisionError)"
    assert len(documents) == 6
    with pytest.raises(CorpusError, match=r"^page.html: unreadable \(ZeroDivisionError\); data.strict is on") as error:
        load_corpus(data.model_copy(update={"strict": True}))
    assert "quoting" not in str(error.value)


# Item 4 -------------------------------------------------------------------------------------------------------


def test_an_overlapping_entries_zip_bomb_is_skipped(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _fillers(corpus)
    overlapping_zip(corpus / "overlap.zip", entries=400, member_bytes=256 << 10)
    assert (corpus / "overlap.zip").stat().st_size < 64 << 10
    documents, report = load_corpus(DataConfig(corpus=str(corpus), **SMALL))
    assert not any(d.doc_id.startswith("overlap.zip") for d in documents)
    assert "overlapping entries" in _skipped(report)["overlap.zip"]


def test_archive_totals_and_member_counts_are_bounded(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _fillers(corpus)
    wide_zip(corpus / "wide.zip", members=30, member_bytes=1 << 10)
    wide_zip(corpus / "big.zip", members=8, member_bytes=64 << 10, seed=870)
    wide_zip(corpus / "fine.zip", members=4, member_bytes=1 << 10, seed=880)
    data = DataConfig(corpus=str(corpus), max_archive_members=20, max_archive_bytes=256 << 10, **SMALL)
    documents, report = load_corpus(data)
    skipped = _skipped(report)
    assert "30 members, more than data.max_archive_members (20)" in skipped["wide.zip"], skipped
    assert "more than data.max_archive_bytes (262144)" in skipped["big.zip"], skipped
    assert sum(d.doc_id.startswith("fine.zip!") for d in documents) == 4
    with pytest.raises(CorpusError, match=r"^big.zip: .*data.max_archive_bytes"):
        load_corpus(data.model_copy(update={"strict": True, "corpus": str(corpus / "big.zip")}))


# Item 5 -------------------------------------------------------------------------------------------------------

_READ_ONE_FILE = """
import sys
from pathlib import Path
from steps.config import DataConfig
from steps.prepare.corpus import read_limits
from steps.prepare.extract import Source, read_source
limits = read_limits(DataConfig(max_file_bytes=256 << 20))
print(sum(1 for _ in read_source(Source(Path(sys.argv[1]).name, Path(sys.argv[1])), limits)))
"""


def test_reading_one_json_file_holds_a_bounded_multiple_of_its_size(tmp_path: Path) -> None:
    """json.loads grows ~25x on `[{},{},...]`: a 256 MiB file would take 6 GB per reading process."""
    size = 24 << 20
    big, tiny = tmp_path / "junk.json", tmp_path / "tiny.json"
    with open(big, "w") as handle:
        handle.write('{"text": "' + prose(960) + '", "junk": [' + "{}," * (size // 3) + '{}], "more": "x"}')
    tiny.write_text(json.dumps({"text": prose(961), "junk": [{}]}))
    peaks = {}
    for path in (tiny, big):
        code, peak, _, output = peak_rss([sys.executable, "-c", _READ_ONE_FILE, str(path)])
        assert code == 0 and output.strip().endswith("1"), output[-2000:]
        peaks[path.name] = peak
    growth = peaks["junk.json"] - peaks["tiny.json"]
    # The stated bound (steps.prepare.json_records): the file's bytes, its text and the text of its documents.
    assert growth < 4 * big.stat().st_size, f"{growth / 2**20:.0f} MiB for a {big.stat().st_size / 2**20:.0f} MiB file"


# Item 6 -------------------------------------------------------------------------------------------------------


def test_a_small_pdf_drawing_one_big_stream_on_every_page_is_skipped_quickly(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _fillers(corpus)
    shared_stream_pdf(corpus / "shared.pdf", pages=5, content_bytes=1_200_000)
    repeated_form_pdf(corpus / "forms.pdf", draws=400, form_lines=2000)  # 400 draws of a 200 kB form
    small_pdf(corpus / "fine.pdf", 970)
    assert (corpus / "shared.pdf").stat().st_size < 16 << 10 and (corpus / "forms.pdf").stat().st_size < 64 << 10
    verdict = tmp_path / "verdict.json"

    def read() -> None:
        documents, report = load_corpus(DataConfig(corpus=str(corpus), **SMALL))
        verdict.write_text(json.dumps({"ids": [d.doc_id for d in documents], "skipped": _skipped(report)}))

    finished, code = run_with_deadline(read, 120)
    assert finished and code == 0, "reading a 5 kB PDF took more than 2 minutes"
    result = json.loads(verdict.read_text())
    assert "fine.pdf" in result["ids"]
    for name in ("shared.pdf", "forms.pdf"):
        assert "bytes of page content" in result["skipped"].get(name, ""), result["skipped"]


# Item 7 -------------------------------------------------------------------------------------------------------


def test_utf16_and_windows_1252_files_are_read_as_text_and_counted(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus"
    _fillers(corpus)
    utf16 = utf16_powershell(corpus / "processes.txt")
    cp1252 = windows_1252(corpus / "notes.md")
    (corpus / "records.jsonl").write_bytes(
        "\n".join(json.dumps({"text": prose(980 + i)}) for i in range(2)).encode("utf-16")
    )
    (corpus / "table.csv").write_bytes(f'id,text\n1,"{prose(982)} – done"\n'.encode("utf-16"))
    random_binary(corpus / "noise.txt")
    (corpus / "exe.txt").write_bytes(b"MZ\x90\x00\x03\x00\x00\x00" * 64)
    data = DataConfig(corpus=str(corpus), validation_fraction=0.3, **SMALL)
    summary = run_prepare(data, tmp_path / "out")
    documents, report = load_corpus(data)
    texts = {d.doc_id: d.text for d in documents}
    assert utf16 in texts["processes.txt"]
    assert cp1252 in texts["notes.md"]
    assert {"records.jsonl#0", "records.jsonl#1", "table.csv#0"} <= set(texts)
    skipped = _skipped(report)
    assert "not text" in skipped["noise.txt"] and "binary content" in skipped["exe.txt"], skipped
    counts = summary.report.documents_by_encoding
    assert counts["utf-16"] == 4 and counts["utf-8"] == 6 and sum(counts.values()) == 11, counts
    assert any(enc.startswith("cp125") or enc == "windows-1252" for enc in counts), counts
    assert "text encodings of kept documents: " in capsys.readouterr().out
    ref = StoredDir(uri=str(tmp_path / "out"), sha256="0" * 64, files=1, bytes=1)
    parts = prepare_card(PrepareResult(dataset=ref, tokenizer=ref, prepare_summary=summary))
    card = json.dumps([part.render() for part in parts], default=str)
    assert '["documents kept, decoded from", "utf-16", 4]' in card, card[:2000]


# Item 8 -------------------------------------------------------------------------------------------------------


def test_nested_archives_are_read_to_the_depth_allowed(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _fillers(corpus)
    names = nested_zip(corpus / "outer.zip", depth=4)
    data = DataConfig(corpus=str(corpus), max_archive_depth=3, **SMALL)
    documents, report = load_corpus(data)
    ids = {d.doc_id for d in documents}
    assert set(names[:3]) <= ids and names[3] not in ids, sorted(ids)
    deepest = "outer.zip!inner-1.zip!inner-2.zip!inner-3.zip"
    assert "nested deeper than data.max_archive_depth (3)" in _skipped(report)[deepest], _skipped(report)


def test_odd_members_and_records_are_read_or_skipped_with_a_reason(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _fillers(corpus)
    odd_members_zip(corpus / "odd.zip")
    deep_json(corpus / "deep.json")
    deep_jsonl(corpus / "deep.jsonl")
    huge_csv_field(corpus / "huge.csv", 2 * 1024 * 1024)
    nul_bytes_files(corpus)
    before = {p for p in tmp_path.rglob("*")}
    documents, report = load_corpus(DataConfig(corpus=str(corpus), max_document_bytes=1 << 20, **SMALL))
    assert {p for p in tmp_path.rglob("*")} == before  # nothing written, inside or outside
    assert not Path("/abs/escape.md").exists()
    ids = {d.doc_id for d in documents}
    assert {"odd.zip!/abs/escape.md", "odd.zip!../../climb.md"} <= ids, sorted(ids)
    assert {"deep.jsonl#0", "deep.jsonl#2", "huge.csv#0", "huge.csv#2"} <= ids, sorted(ids)
    # A NUL past the binary sniff, or escaped in JSON, is read (and removed by clean-up); a raw NUL in the head
    # of a file without a BOM says binary, as it always has.
    assert {"late-nul.txt", "nul-escape.json#0"} <= ids, sorted(ids)
    assert "x\x00y" not in {d.doc_id: d.text for d in documents}["late-nul.txt"]
    skipped = _skipped(report)
    assert skipped["nul-field.csv"] == "binary content (NUL bytes), not text", skipped
    # 200,000 levels of arrays under "text": walked without recursion, no text in them, dropped as too short.
    assert "deep.json" not in skipped and "deep.json#0" not in ids
    assert report.dropped["too_short"] >= 1


# Item 13 ------------------------------------------------------------------------------------------------------


def test_ids_are_unique_and_hold_no_secret(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _fillers(corpus, 10)
    stix_with_null_phase_and_no_ids(corpus / "bundle.json")
    odd_members_zip(corpus / "odd.zip")
    data = DataConfig(corpus=str(corpus), validation_fraction=0.4, near_duplicate_threshold=1.0, **SMALL)
    out = tmp_path / "out"
    summary = run_prepare(data, out)
    documents, _ = load_corpus(data)
    stix_ids = [d.doc_id for d in documents if d.doc_id.startswith("bundle.json#")]
    assert len(stix_ids) == 6 and len(set(stix_ids)) == 6, stix_ids
    assert "bundle.json#None" not in stix_ids
    published = [
        (out / "dataset" / REPORT_FILE).read_text(),
        (out / "dataset" / DATASET_SUMMARY_FILE).read_text(),
        (out / "dataset" / "prompts.jsonl").read_text(),
        json.dumps([d.doc_id for d in documents]),
        summary.model_dump_json(),
    ]
    for secret in (STIX_ID_SECRET, MEMBER_NAME_SECRET):
        assert not any(secret in text for text in published), secret
