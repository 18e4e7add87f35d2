"""The train/validation split, decided by document so that no document feeds both sides."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def is_validation(doc_id: str, fraction: float, seed: int) -> bool:
    """Deterministic split by document: the same id lands on the same side in every run."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _rank(doc_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()


class DocumentSplit:
    """The train/validation split decided one document at a time, in constant memory.

    `observe` every document id first; `finish` then makes sure both sides get a document (the
    lowest-ranked document goes to validation if none did; the first held-out one goes back to
    training if all did), and `is_validation` answers for any observed id.
    """

    def __init__(self, fraction: float, seed: int) -> None:
        self.fraction, self.seed = fraction, seed
        self.counts = {"train": 0, "validation": 0}
        self._lowest: tuple[bytes, str] | None = None
        self._first_validation: str | None = None
        self._moved: tuple[str, bool] | None = None

    def observe(self, doc_id: str) -> None:
        rank = _rank(doc_id, self.seed)
        if self._lowest is None or rank < self._lowest[0]:
            self._lowest = (rank, doc_id)
        if is_validation(doc_id, self.fraction, self.seed):
            self.counts["validation"] += 1
            self._first_validation = self._first_validation or doc_id
        else:
            self.counts["train"] += 1

    def finish(self) -> None:
        total = self.counts["train"] + self.counts["validation"]
        if total < 2:
            raise ValueError(f"need at least 2 documents to split train/validation, got {total}")
        if self.counts["validation"] == 0:
            self._moved = (self._lowest[1], True)
        elif self.counts["train"] == 0:
            self._moved = (self._first_validation, False)
        if self._moved:
            side = "validation" if self._moved[1] else "train"
            self.counts[side] += 1
            self.counts["train" if side == "validation" else "validation"] -= 1

    def is_validation(self, doc_id: str) -> bool:
        if self._moved and self._moved[0] == doc_id:
            return self._moved[1]
        return is_validation(doc_id, self.fraction, self.seed)


def split_by_document(doc_ids: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and validation documents; both sides get at least one document."""
    split = DocumentSplit(fraction, seed)
    for doc_id in doc_ids:
        split.observe(doc_id)
    split.finish()
    held = [split.is_validation(d) for d in doc_ids]
    return [i for i, v in enumerate(held) if not v], [i for i, v in enumerate(held) if v]
