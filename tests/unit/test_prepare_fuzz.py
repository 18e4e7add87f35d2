"""A small fuzz test of prepare's readers (issue 31, item 3): mutated PDF, JSON, STIX, CSV, zip and gzip files,
from seeds generated here, never make reading raise or hang. Seeded, so a failure reproduces."""

from __future__ import annotations

import gzip
import io
import json
import random
import zipfile
from pathlib import Path

from steps.config import DataConfig
from steps.prepare.documents import load_corpus
from tests.support.corpus_files import STIX_BUNDLE, pdf_bytes, prose
from tests.support.hostile_files import run_with_deadline

VARIANTS = 24


def _seeds() -> dict[str, bytes]:
    records = json.dumps([{"text": prose(1000 + i, 30), "id": i} for i in range(3)]).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.md", prose(1010, 40))
        archive.writestr("b.jsonl", "\n".join(json.dumps({"text": prose(1011 + i, 20)}) for i in range(2)))
    nested = io.BytesIO()
    with zipfile.ZipFile(nested, "w", zipfile.ZIP_STORED) as archive:  # stored: mutations reach the inner zip
        archive.writestr("inner.zip", buffer.getvalue())
        archive.writestr("c.md", prose(1012, 40))
    return {
        "nested.zip": nested.getvalue(),
        "pdf": pdf_bytes([prose(1020, 12), prose(1021, 12)]),
        "json": records,
        "stix.json": json.dumps(STIX_BUNDLE).encode(),
        "csv": f'id,text\n1,"{prose(1030, 30)}"\n2,"{prose(1031, 30)}"\n'.encode(),
        "zip": buffer.getvalue(),
        "txt.gz": gzip.compress(prose(1040, 60).encode()),
        "jsonl": "\n".join(json.dumps({"text": prose(1050 + i, 20)}) for i in range(3)).encode(),
    }


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four of: flipped bytes, a truncation, a duplicated or deleted slice, inserted special bytes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        at = rng.randrange(max(len(out), 1))
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                position = rng.randrange(len(out))
                out[position] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del out[rng.randrange(len(out) // 2, len(out)) :]
        elif kind == 2:
            size = rng.randint(1, 64)
            out[at:at] = out[at : at + size] * rng.randint(1, 20)
        elif kind == 3:
            del out[at : at + rng.randint(1, 64)]
        else:
            out[at:at] = rng.choice([b"\x00", b"\\ud800", b"\xff\xfe", b'"', b"[" * 50, b"9" * 40, b"\xed\xa0\x80"])
        if not out:
            out = bytearray(b"x")
    return bytes(out)


def test_mutated_inputs_never_make_prepare_raise_or_hang(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = random.Random(31)
    for name, seed in _seeds().items():
        for variant in range(VARIANTS):
            (corpus / f"fuzz-{variant:02d}.{name}").write_bytes(_mutate(seed, rng))
    for i in range(4):
        (corpus / f"filler-{i}.txt").write_text(prose(1100 + i, 60))
    data = DataConfig(
        corpus=str(corpus), min_chars=40, num_proc=2, max_file_bytes=256 << 10, max_document_bytes=64 << 10
    )
    outcome = tmp_path / "outcome.txt"

    def read() -> None:
        try:
            documents, report = load_corpus(data)
            outcome.write_text(f"ok {len(documents)} documents, {report.skipped_file_count} files skipped")
        except BaseException as exc:  # what the test reports: the type, not the (input-quoting) message
            outcome.write_text(f"raised {type(exc).__name__}: {str(exc)[:300]}")

    finished, _ = run_with_deadline(read, 240)
    assert finished, "reading the mutated corpus did not end within 4 minutes"
    assert outcome.read_text().startswith("ok "), outcome.read_text()
