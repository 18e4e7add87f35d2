"""Benchmark: what the hostile-file guards of issue 31 cost on ordinary input, each against its baseline.

    python bench/hostile_reading.py

Each row times the guarded path and the plain one it replaced, in this process, on generated input:
- json: records of prose with metadata (28 MB), `json_documents` against `json.loads` and the fields' text
  as prepare took it before; and the rate of the walk on dense structure (`[{},{},...]`), where json.loads
  would grow ~25x;
- jsonl: the same records one per line, `record_line_text` against `json.loads` per line;
- entry: `read_source` over the CWE catalogue (surrogate check and key redaction where text enters) against
  the documents its format reader gives before that (`extract._documents`);
- pdf: `pdf_text` with its content budget against pypdf's `extract_text` on a 40-page text PDF;
- zip: planning a 2,000-member archive with its limits (`archive_entries`) against listing it with zipfile;
- cp1252: decoding a Windows-1252 file (detector) against decoding the same text from UTF-8.
Best of three runs each. Prints one JSON line: seconds per path and the ratio guarded/plain.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
import zipfile
from pathlib import Path

from steps.config import DataConfig
from steps.formats.cwe_catalogue import bundled_catalogue_path
from steps.prepare.archives import archive_entries
from steps.prepare.corpus import archive_limits, read_limits
from steps.prepare.extract import Source, _documents, read_source
from steps.prepare.json_records import json_documents, record_line_text
from steps.prepare.pdf_text import pdf_text
from steps.prepare.text_encoding import decode_text
from tests.support.corpus_files import pdf_bytes, prose


def _best(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def _old_record_text(record, fields=("text",)) -> str:
    return "\n".join(str(record[f]) for f in fields if record.get(f)) if isinstance(record, dict) else ""


def main() -> None:
    rows: dict[str, dict[str, float]] = {}
    records = [
        {"id": i, "title": f"Report {i}", "text": prose(i, 150), "tags": ["apt", "t1059"], "meta": {"score": 0.5}}
        for i in range(20_000)
    ]
    text = json.dumps(records)
    rows["json"] = {
        "guarded_s": _best(lambda: list(json_documents(text, ("text",)))),
        "plain_s": _best(lambda: [_old_record_text(r) for r in json.loads(text)]),
        "mb": len(text) / 1e6,
    }
    dense = '{"text": "x", "junk": [' + "{}," * 1_000_000 + "{}]}"
    rows["json_dense_walk"] = {"guarded_s": _best(lambda: list(json_documents(dense, ("text",))), 1), "mb": 3.0}
    lines = [json.dumps(r) for r in records]
    rows["jsonl"] = {
        "guarded_s": _best(lambda: [record_line_text(line, ("text",)) for line in lines]),
        "plain_s": _best(lambda: [_old_record_text(json.loads(line)) for line in lines]),
    }
    catalogue = bundled_catalogue_path()
    limits = read_limits(DataConfig())
    rows["entry"] = {
        "guarded_s": _best(lambda: list(read_source(Source(catalogue.name, catalogue), limits))),
        "plain_s": _best(lambda: list(_documents(Source(catalogue.name, catalogue), limits))),
    }
    from pypdf import PdfReader

    many_pages = _many_page_pdf(40)
    rows["pdf"] = {
        "guarded_s": _best(lambda: pdf_text(many_pages, 16 << 20, 4)),
        "plain_s": _best(lambda: [p.extract_text() for p in PdfReader(io.BytesIO(many_pages)).pages]),
        "bytes": len(many_pages),
    }
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "many.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as writer:
            for i in range(2000):
                writer.writestr(f"notes/{i:04d}.md", prose(i, 40))
        bounds = archive_limits(DataConfig())
        rows["zip"] = {
            "guarded_s": _best(lambda: archive_entries(archive, archive.name, bounds)),
            "plain_s": _best(lambda: [m for m in zipfile.ZipFile(archive).infolist() if not m.is_dir()]),
        }
    western = ("The analyst’s “résumé” of the café breach — naïve € " + prose(5, 2000) + "\n") * 20
    cp1252, utf8 = western.encode("cp1252"), western.encode("utf-8")
    rows["cp1252"] = {
        "guarded_s": _best(lambda: decode_text(cp1252)),
        "plain_s": _best(lambda: decode_text(utf8)),
        "bytes": len(cp1252),
    }
    for row in rows.values():
        if "plain_s" in row:
            row["ratio"] = round(row["guarded_s"] / row["plain_s"], 2)
        for key in ("guarded_s", "plain_s"):
            if key in row:
                row[key] = round(row[key], 4)
    print(json.dumps({"bench": "hostile_reading", "rows": rows}))


def _many_page_pdf(pages: int) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for i in range(pages):
        writer.add_page(PdfReader(io.BytesIO(pdf_bytes([prose(i * 7 + k, 12) for k in range(40)]))).pages[0])
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
