"""prepare's join after reading: duplicates and the split decided for the whole corpus, from every shard's rows.

The shards' rows are merged in corpus order and replayed into one `CorpusReport` and one `DuplicateIndex`,
from digests and signatures only (texts are never read here): the one place that decides what is kept and
why, for any number of shards (`steps.prepare.documents` runs it too). What each shard keeps, and on which
side, goes to `sides-<shard>.npy` (one int8 per row: -1 not kept, 0 train, 1 validation) for the second
fan-out.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steps.config import DataConfig
from steps.prepare.console import reading_progress, reading_summary
from steps.prepare.corpus import LINK_REASON, CorpusError, empty_corpus_error
from steps.prepare.near_dedupe import DuplicateIndex
from steps.prepare.report import CorpusReport
from steps.prepare.shard_plan import ShardPlan
from steps.prepare.shard_rows import ROWS_FILE, histogram, merged, read_rows, row_count, signature_of
from steps.prepare.split import DocumentSplit
from steps.runtime.progress_clock import ProgressClock

DECISIONS_FILE = "decisions.json"
_COLUMNS = ("unit", "item", "kind", "source", "doc_id", "format", "reason", "encoding", "redactions", "chars", "digest")


@dataclass
class Decisions:
    """What the join decided, as written to `<folder>/decisions.json` (the sides go to .npy files beside it)."""

    report: dict
    documents: dict[str, int]
    doc_chars_histogram: dict
    validation_doc_ids: list[str]
    base_model_note: str | None = None

    def save(self, folder: Path) -> None:
        (folder / DECISIONS_FILE).write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, folder: Path) -> Decisions:
        return cls(**json.loads((Path(folder) / DECISIONS_FILE).read_text()))


def sides_file(folder: Path, shard: int) -> Path:
    return Path(folder) / f"sides-{shard}.npy"


def _shard_rows(shard_dirs: list[Path], near_dedupe: bool) -> list[Iterator[dict]]:
    columns = _COLUMNS + (("signature", "sig_dtype") if near_dedupe else ())
    return [read_rows(Path(folder) / ROWS_FILE, columns) for folder in shard_dirs]


def decide(
    data: DataConfig,
    plan: ShardPlan,
    shard_dirs: list[Path],
    out_dir: Path,
    report: CorpusReport,
    progress_every_s: float,
) -> Decisions:
    """Replay the shards' rows in corpus order: report, duplicates, split. Writes the sides; returns the rest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    split = DocumentSplit(data.validation_fraction, data.seed)
    index = DuplicateIndex(data.near_duplicate_threshold)
    kept: list[list[tuple[int, str]]] = [[] for _ in shard_dirs]  # (row number, doc id) per shard
    in_order: list[str] = []
    chars = array("I")
    progress = ProgressClock(progress_every_s)
    report.on_event = lambda seen: reading_progress(seen, progress)
    for link in plan.links:
        report.skip_file(link, LINK_REASON)
    for shard, number, row in merged(_shard_rows(shard_dirs, index.near_threshold < 1.0)):
        if _replay(row, report, index):
            kept[shard].append((number, row["doc_id"]))
            in_order.append(row["doc_id"])
            split.observe(row["doc_id"])
            chars.append(min(row["chars"], 2**32 - 1))
            report.tick()
    report.on_event = None
    reading_summary(report, data.corpus)
    if report.kept == 0:
        raise empty_corpus_error(data, report)
    try:
        split.finish()
    except ValueError as exc:
        raise CorpusError(f"data.corpus = {data.corpus!r}: {exc} after cleaning; add documents") from None
    for shard, folder in enumerate(shard_dirs):
        sides = np.full(row_count(Path(folder) / ROWS_FILE), -1, dtype=np.int8)
        for number, doc_id in kept[shard]:
            sides[number] = 1 if split.is_validation(doc_id) else 0
        np.save(sides_file(out_dir, shard), sides)
    decisions = Decisions(
        report=report.summary().model_dump(),
        documents=dict(split.counts),
        doc_chars_histogram=histogram(chars),
        validation_doc_ids=[doc_id for doc_id in in_order if split.is_validation(doc_id)],
    )
    decisions.save(out_dir)
    return decisions


def _replay(row: dict, report: CorpusReport, index: DuplicateIndex) -> bool:
    """Account for one row in `report` (and a kept document in `index`); True when it is kept."""
    kind = row["kind"]
    if kind == "source":
        report.files_by_format[row["format"]] += 1
        return False
    if kind == "skip_file":
        report.skip_file(row["source"], row["reason"])
        return False
    if kind == "record_skip":
        report.dropped["unreadable_record"] += 1
        report.record(row["source"], row["doc_id"], "skipped_record", row["reason"])
        return False
    if row["redactions"]:
        report.redactions.update(
            Counter({k: int(n) for k, n in (p.rsplit("=", 1) for p in row["redactions"].split(", "))})
        )
        report.redacted_documents += 1
        report.record(row["source"], row["doc_id"], "redacted", row["redactions"])
    reason = row["reason"]
    if reason is None:
        duplicate = index.check_and_add(row["doc_id"], row["digest"], signature_of(row))
        if duplicate is not None:
            reason = f"{duplicate[0]} of {duplicate[1]}"
    if reason is not None:
        report.dropped[reason.split(" ", 1)[0]] += 1
        report.record(row["source"], row["doc_id"], "dropped", reason)
        return False
    report.kept += 1
    report.kept_chars += row["chars"]
    report.documents_by_format[row["format"]] += 1
    if row["encoding"] is not None:
        report.documents_by_encoding[row["encoding"]] += 1
    return True


def kept_texts(shard_dirs: list[Path], sides_dir: Path, side: int | None = None) -> Iterator[tuple[str, str]]:
    """(doc id, text) of the kept documents in corpus order, of one side (0 train, 1 validation) or both."""

    def one_shard(shard: int, folder: Path) -> Iterator[dict]:
        sides = np.load(sides_file(sides_dir, shard), mmap_mode="r")
        for number, row in enumerate(read_rows(Path(folder) / ROWS_FILE, ("unit", "item", "doc_id", "text"))):
            if sides[number] >= 0 and (side is None or sides[number] == side):
                yield row

    for _, _, row in merged(one_shard(shard, folder) for shard, folder in enumerate(shard_dirs)):
        yield row["doc_id"], row["text"]
