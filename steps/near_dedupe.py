"""Exact and near-duplicate detection at document level.

Exact duplicates share the SHA-256 of their cleaned text. Near duplicates are
found with MinHash signatures of word 5-grams and an LSH index (`datasketch`):
the signature is computed where the document is cleaned (in a worker), the
index lives in the one process that decides, in corpus order, what to keep.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

NUM_PERM = 128
SHINGLE_WORDS = 5
_SEED = 1
SCHEME = "affine32"
_WORD = re.compile(r"\w+")


def _hash32(data: bytes) -> int:
    # xxhash instead of datasketch's default SHA-1: same job, several times faster on many small shingles.
    return xxhash.xxh32_intdigest(data)


def content_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def minhash_signature(text: str) -> np.ndarray:
    """MinHash values of the document's lower-cased word 5-grams (the whole text when shorter)."""
    words = _WORD.findall(text.lower())
    if len(words) <= SHINGLE_WORDS:
        shingles = {" ".join(words).encode()}
    else:
        shingles = {" ".join(words[i : i + SHINGLE_WORDS]).encode() for i in range(len(words) - SHINGLE_WORDS + 1)}
    sketch = MinHash(num_perm=NUM_PERM, seed=_SEED, hashfunc=_hash32, scheme=SCHEME)
    sketch.update_batch(list(shingles))
    return sketch.hashvalues


class DuplicateIndex:
    """Remembers kept documents; says which earlier document a new one duplicates, if any.

    Memory grows with the number of kept documents (a digest and the LSH band keys per document),
    not with their length: that is the price of a corpus-wide dedupe.
    """

    def __init__(self, near_threshold: float) -> None:
        self._exact: dict[bytes, str] = {}
        self._lsh = MinHashLSH(threshold=near_threshold, num_perm=NUM_PERM) if near_threshold < 1.0 else None

    def check_and_add(self, doc_id: str, digest: bytes, signature: np.ndarray | None) -> tuple[str, str] | None:
        """None when the document is new (and now remembered), else (`exact_duplicate`|`near_duplicate`, of-id)."""
        original = self._exact.get(digest)
        if original is not None:
            return "exact_duplicate", original
        sketch = None
        if self._lsh is not None and signature is not None:
            sketch = LeanMinHash(seed=_SEED, hashvalues=signature, scheme=SCHEME)
            similar = self._lsh.query(sketch)
            if similar:
                return "near_duplicate", min(similar)
        self._exact[digest] = doc_id
        if sketch is not None:
            self._lsh.insert(doc_id, sketch, check_duplication=False)
        return None
