from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.config import DataConfig
from steps.formats.cwe_catalogue import bundled_catalogue_path
from steps.prepare.clean import normalise
from steps.prepare.corpus import CorpusError
from steps.prepare.cwe_documents import cwe_documents
from steps.prepare.documents import load_corpus
from tests.support.corpus_files import prose

LONG = "Attackers abuse CVE-2024-3094 in xz-utils to backdoor sshd; hash 3f786850e387550fdab836ed7e6dc881de23001b. "


def test_cwe_catalogue_has_every_weakness_with_its_sections() -> None:
    docs = dict(cwe_documents(bundled_catalogue_path(), categories=False))
    assert len(docs) == 963
    xss = docs["CWE-79"]
    assert xss.startswith("CWE-79: Improper Neutralization of Input During Web Page Generation")
    for section in (
        "Description:",
        "Extended description:",
        # a parent defined later in the file is still named
        "Related weaknesses:\n- ChildOf CWE-74: Improper Neutralization of Special Elements in Output",
        "Common consequences:",
        "Potential mitigations:",
        "Examples:",
        "CVE-2021-25926",
    ):
        assert section in xss


def test_cwe_categories_list_their_members_by_id_and_name() -> None:
    docs = dict(cwe_documents(bundled_catalogue_path()))
    assert len(docs) == 963 + 409
    owasp = docs["CWE-1347"]
    assert owasp.startswith("CWE-1347: OWASP Top Ten 2021 Category A03:2021 - Injection\nCategory.")
    assert "\n- CWE-20: Improper Input Validation\n" in owasp
    assert "- CWE-79: Improper Neutralization of Input During Web Page Generation" in owasp


def test_a_streamed_catalogue_names_what_it_relates_as_a_file_does() -> None:
    with bundled_catalogue_path().open("rb") as handle:
        streamed = dict(cwe_documents(handle))
    assert "- ChildOf CWE-74: Improper Neutralization of Special Elements in Output" in streamed["CWE-79"]
    assert streamed == dict(cwe_documents(bundled_catalogue_path()))


def test_default_corpus_ids_do_not_depend_on_install_path() -> None:
    documents, report = load_corpus(DataConfig(corpus="cwe", min_chars=200))
    assert report.files_by_format == {"xml": 1}
    assert documents[0].doc_id.startswith("cwec_v") and "#CWE-" in documents[0].doc_id
    assert report.kept == len(documents) > 900
    assert report.dropped["near_duplicate"] < 20  # a few catalogue entries share their wording


def _write_corpus(root: Path) -> None:
    (root / "reports").mkdir(parents=True)
    (root / "reports" / "apt.md").write_text("# APT report\n\n" + LONG * 5)
    (root / "reports" / "copy.txt").write_text("# APT report\n\n" + LONG * 5)  # exact duplicate of apt.md
    (root / "short.txt").write_text("too short")
    (root / "rules.jsonl").write_text(
        "\n".join(json.dumps({"title": f"Rule {i}", "text": LONG * 3 + str(i)}) for i in range(3))
    )
    (root / "broken.json").write_text("{not json")
    (root / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 100)
    (root / "image.png").write_bytes(b"\x89PNG\r\n")


def test_folder_corpus_formats_drops_and_skips(tmp_path: Path) -> None:
    _write_corpus(tmp_path)
    documents, report = load_corpus(
        DataConfig(corpus=str(tmp_path), text_fields=["title", "text"], min_chars=100, num_proc=1)
    )
    ids = sorted(d.doc_id for d in documents)
    # A Latin-1 (Windows-1252) file is text in another encoding, read as such (issue 31, item 7).
    assert ids == ["latin1.txt", "reports/apt.md", "rules.jsonl#0", "rules.jsonl#1", "rules.jsonl#2"]
    assert next(d.text for d in documents if d.doc_id == "latin1.txt").startswith("café café")
    assert report.dropped["exact_duplicate"] == 1 and report.dropped["too_short"] == 1
    skipped = {Path(p).name: reason for p, reason in report.skipped_files}
    assert set(skipped) == {"broken.json", "image.png"}
    assert "malformed JSON" in skipped["broken.json"] and "unsupported format" in skipped["image.png"]
    rule = next(d for d in documents if d.doc_id == "rules.jsonl#1")
    assert rule.text.startswith("Rule 1\nAttackers")


def test_glob_corpus(tmp_path: Path) -> None:
    _write_corpus(tmp_path)
    (tmp_path / "reports" / "brief.md").write_text(prose(1))
    documents, _ = load_corpus(DataConfig(corpus=str(tmp_path / "**" / "*.md"), min_chars=100))
    assert [d.doc_id for d in documents] == ["reports/apt.md", "reports/brief.md"]


def test_nothing_left_fails_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("tiny")
    with pytest.raises(CorpusError, match="left no documents.*too_short.*data.min_chars"):
        load_corpus(DataConfig(corpus=str(tmp_path), min_chars=100))


def test_one_document_is_too_few_as_prepare_says(tmp_path: Path) -> None:
    """The documents are prepare's own decisions, its train/validation split included, which needs two."""
    (tmp_path / "a.txt").write_text(prose(1))
    with pytest.raises(CorpusError, match="need at least 2 documents to split train/validation, got 1"):
        load_corpus(DataConfig(corpus=str(tmp_path), min_chars=100))


def test_missing_corpus_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="data.corpus = .*names no files"):
        load_corpus(DataConfig(corpus=str(tmp_path / "nowhere"), min_chars=100))


def test_normalise_folds_whitespace_and_controls() -> None:
    assert normalise("ﬁle\x00  name\t\tx\n\n\n\nnext\r\n") == "file name x\n\nnext"
