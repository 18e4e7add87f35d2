"""Per-document clean-up: normalise, redact, filter by quality, fingerprint.

This is the work that runs in parallel (one call per batch of documents, in a
worker process); what to keep is decided afterwards, in corpus order, by the
single process that holds the duplicate index.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np

from steps.prepare.near_dedupe import content_digest, minhash_signatures
from steps.prepare.redact import redact


def _control_table() -> dict[int, None]:
    # Control (Cc) and format (Cf: zero-width, bidi overrides, soft hyphen) characters, tab and newline kept;
    # one str.translate pass is far faster than testing each character's category in Python. Outside the
    # Basic Multilingual Plane only the tag characters (U+E0000-E007F) are such characters in common use.
    points = [*range(0x10000), *range(0xE0000, 0xE0080)]
    return {cp: None for cp in points if chr(cp) not in "\n\t" and unicodedata.category(chr(cp)) in ("Cc", "Cf")}


_CONTROLS = _control_table()
_SPACES = re.compile(r"[^\S\n]+")
_EDGE_SPACES = re.compile(r" ?\n ?")
_BLANK_RUNS = re.compile(r"\n{3,}")
_NOT_ALNUM = re.compile(r"[\W_]+")


_ASCII_NOT_ALNUM = bytes(b for b in range(128) if not chr(b).isalnum())


def normalise(text: str) -> str:
    """NFKC, no control characters, runs of spaces folded, at most one blank line in a row."""
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n")).translate(_CONTROLS)
    # Each substitution runs only where its pattern can match (a substring test is far cheaper than a regex
    # pass over text that already has single spaces, as extracted text mostly does); the result is the same.
    # After `translate`, an ASCII text's only blanks are space, tab and newline.
    if not text.isascii() or "\t" in text or "  " in text:
        text = _SPACES.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = _EDGE_SPACES.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


def alnum_fraction(text: str) -> float:
    """Share of letters and digits among the non-space characters (language-agnostic: any script counts)."""
    visible = len(text) - text.count(" ") - text.count("\n") - text.count("\t")
    if visible <= 0:
        return 0.0
    if text.isascii():  # the same count as the regex below, by deleting bytes in C
        return len(text.encode().translate(None, _ASCII_NOT_ALNUM)) / visible
    return len(_NOT_ALNUM.sub("", text)) / visible


@dataclass(frozen=True)
class CleanSettings:
    min_chars: int
    min_alnum_fraction: float
    redact_emails: bool
    near_dedupe: bool


@dataclass
class CleanedDocument:
    text: str
    drop_reason: str | None
    redactions: Counter
    digest: bytes = b""
    signature: np.ndarray | None = None


def clean_document(raw: str, settings: CleanSettings) -> CleanedDocument:
    """One document cleaned, without its MinHash signature (`clean_batch` computes those a batch at a time)."""
    text, redactions = redact(normalise(raw), settings.redact_emails)
    if len(text) < settings.min_chars:
        return CleanedDocument("", "too_short", redactions)
    if alnum_fraction(text) < settings.min_alnum_fraction:
        return CleanedDocument("", "low_alnum_fraction", redactions)
    return CleanedDocument(text, None, redactions, content_digest(text))


def clean_batch(texts: list[str], settings: CleanSettings) -> list[CleanedDocument]:
    docs = [clean_document(text, settings) for text in texts]
    if settings.near_dedupe:
        kept = [doc for doc in docs if doc.drop_reason is None]
        for doc, signature in zip(kept, minhash_signatures([doc.text for doc in kept]), strict=True):
            doc.signature = signature
    return docs
