"""A corpus's kept documents in memory, for tests, benchmarks and small corpora: prepare's own decisions.

Not a reader of its own: it runs prepare's read phase over one shard (`steps.prepare.shard_read`) and its
decisions (`steps.prepare.shard_decide`) in a temporary folder, so what is kept, dropped and redacted, and
why, is decided by the one piece of code the pipeline runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from steps.config import DataConfig
from steps.prepare.report import CorpusReport
from steps.prepare.shard_decide import decide, kept_texts
from steps.prepare.shard_plan import load_plan
from steps.prepare.shard_read import plan_and_read_shard
from steps.runtime.scratch import stage_scratch

__all__ = ["Document", "iter_documents", "load_corpus"]


@dataclass(frozen=True)
class Document:
    doc_id: str
    """Stable identifier: the source path, plus a record or weakness id inside it."""
    text: str


def iter_documents(data: DataConfig, report: CorpusReport) -> Iterator[Document]:
    """The documents prepare keeps of `data.corpus`, cleaned and redacted, in corpus order.

    `report` holds every skip, drop and redaction before the first document comes. Raises `CorpusError` as
    prepare does: a corpus that leaves no document (or too few to split train/validation), and with
    `data.strict` any unreadable file. The local copy of an s3:// corpus is gone once it is read; the
    temporary folder (cleaned text) when the documents are all read or the caller stops early.
    """
    with stage_scratch("prepare-documents") as work:
        read, decided = work / "read", work / "decisions"
        plan_and_read_shard(data, 1, 0, read)
        decide(data, load_plan(read), [read], decided, report, progress_every_s=10.0)
        for doc_id, text in kept_texts([read], decided):
            yield Document(doc_id, text)


def load_corpus(data: DataConfig) -> tuple[list[Document], CorpusReport]:
    """All of `iter_documents` in a list, with its report."""
    report = CorpusReport()
    return list(iter_documents(data, report)), report
