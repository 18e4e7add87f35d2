"""Exact and near-duplicate detection at document level.

Exact duplicates share the SHA-256 of their cleaned text. Near duplicates are
found with MinHash signatures of word 5-grams and an LSH index (`datasketch`):
the signature is computed where the document is cleaned (in a worker), the
index lives in the one process that decides, in corpus order, what to keep.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence

import numpy as np
import xxhash
from datasketch import MinHash, MinHashLSH

NUM_PERM = 128
SHINGLE_WORDS = 5
_SEED = 1
SCHEME = "affine32"
_WORD = re.compile(r"\w+")
# For ASCII text `\w` is exactly [A-Za-z0-9_]: every other byte becomes a space, and bytes.split() gives the words.
_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_NOT_WORD_TO_SPACE = bytes(byte if byte in _WORD_BYTES else 32 for byte in range(256))


_FNV_PRIME = np.uint64(1099511628211)
_LOW32 = np.uint64(0xFFFFFFFF)
# The permutations depend only on (num_perm, seed): made once per process, not once per document.
_A, _B = MinHash(num_perm=NUM_PERM, seed=_SEED, scheme=SCHEME).permutations
_A_COLUMN, _B_COLUMN = _A[:, None], _B[:, None]
# Shingles permuted per numpy call: bounds the (128 x shingles) work array to 4 MB however long the document.
_PERMUTE_ROWS = 8192


class _WordHashes(dict):
    """xxh32 of each word, memoised: words repeat (a few thousand make most of any text), and a dict lookup from
    `map` costs a fraction of encoding and hashing the word again. Emptied when large, so memory stays flat."""

    LIMIT = 200_000

    def __missing__(self, word: bytes) -> int:
        if len(self) >= self.LIMIT:
            self.clear()
        value = self[word] = xxhash.xxh32_intdigest(word)
        return value


_WORD_HASHES = _WordHashes()


def content_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def words(text: str) -> list[bytes]:
    """The document's lower-cased words (`\\w+`), UTF-8 encoded. ASCII text (nearly all of it) takes a bytes
    translate and split, three times faster than the regex, which the rest still goes through."""
    if text.isascii():
        return text.encode().lower().translate(_NOT_WORD_TO_SPACE).split()
    return [word.encode() for word in _WORD.findall(text.lower())]


def shingle_hashes(text: str) -> np.ndarray:
    """32-bit hashes of the document's lower-cased word 5-grams (one hash of all words when shorter), repeats and all.

    Each word is hashed once (xxhash) and the 5-gram hashes are combined from them with numpy:
    hashing every 5-gram string in Python was most of the cost of near-duplicate detection.
    """
    found = words(text)
    hashes = np.fromiter(map(_WORD_HASHES.__getitem__, found), dtype=np.uint64, count=len(found))
    count = max(len(hashes) - SHINGLE_WORDS + 1, 1)
    combined = np.zeros(count, dtype=np.uint64)
    for offset in range(min(SHINGLE_WORDS, len(hashes))):
        combined = combined * _FNV_PRIME + hashes[offset : offset + count]
    # Repeats are kept: a MinHash is a minimum, which a repeated value does not change (sorting them out cost
    # a tenth of reading the catalogue).
    return (combined ^ (combined >> np.uint64(32))) & _LOW32


def _fmix32(values: np.ndarray) -> np.ndarray:
    # MurmurHash3's 32-bit finalizer, which datasketch's affine32 scheme applies before its permutations.
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def minhash_signatures(texts: Sequence[str]) -> list[np.ndarray]:
    """MinHash values (datasketch's affine32 scheme, computed here in numpy) of each document's word 5-gram hashes.

    The same values as `datasketch.MinHash(num_perm=128, seed=1, scheme="affine32").update_batch(...)` (a unit
    test holds them equal), without its per-value Python conversion. The documents' shingles are permuted
    together, in blocks of rows that bound memory however long a document, and each document's minimum taken
    with `reduceat`: a document of a few hundred words paid more in numpy calls than in arithmetic.
    """
    if not texts:
        return []
    shingles = [shingle_hashes(text) for text in texts]
    counts = np.fromiter(map(len, shingles), dtype=np.int64, count=len(shingles))  # at least 1 each
    ends = np.cumsum(counts)
    starts = ends - counts
    mixed = _fmix32(np.concatenate(shingles).astype(np.uint32))
    signatures = np.full((len(texts), NUM_PERM), np.iinfo(np.uint32).max, dtype=np.uint32)
    for low in range(0, len(mixed), _PERMUTE_ROWS):
        high = min(low + _PERMUTE_ROWS, len(mixed))
        # The documents with shingles in [low, high): each one's rows there start at its start or at `low`.
        first, last = np.searchsorted(ends, low, side="right"), np.searchsorted(starts, high)
        # One row per permutation, the shingles along it: numpy's inner loops then run over thousands of values
        # instead of 128 (three times faster, and `reduceat` along rows is fast where along columns it is not).
        permuted = _A_COLUMN * mixed[None, low:high]  # wraps mod 2^32, as the scheme does
        permuted += _B_COLUMN  # in place: a second (128 x rows) array cost a quarter of the arithmetic
        minima = np.minimum.reduceat(permuted, np.maximum(starts[first:last], low) - low, axis=1)
        np.minimum(signatures[first:last], minima.T, out=signatures[first:last])
    return list(signatures)


@functools.lru_cache(maxsize=8)
def band_ranges(threshold: float) -> tuple[tuple[int, int], ...]:
    """The LSH bands (start, end of each slice of the signature) datasketch chooses for this threshold."""
    return tuple(MinHashLSH(threshold=threshold, num_perm=NUM_PERM).hashranges)


def jaccard(one: np.ndarray, other: np.ndarray) -> float:
    # As datasketch's MinHash.jaccard estimates it: the share of equal values.
    return float(np.count_nonzero(one == other)) / float(len(one))


class DuplicateIndex:
    """Remembers kept documents; says which earlier document a new one duplicates, if any.

    LSH only proposes candidates (its banding lets through pairs well below the threshold), so each
    candidate is confirmed with the Jaccard similarity its signature estimates. The banding is datasketch's
    `MinHashLSH` (its bands, its exact-match buckets, its Jaccard estimate) kept in plain dicts of band bytes:
    its storage layer and per-band byte swaps were most of the time of deciding, which one process does for
    the whole corpus. Memory grows with the number of kept documents (a digest, the band keys and a 128-value
    signature each, about 1 KB), not with their length: that is the price of a corpus-wide dedupe.
    """

    def __init__(self, near_threshold: float) -> None:
        self.near_threshold = near_threshold
        self._exact: dict[bytes, str] = {}
        self._signatures: dict[str, np.ndarray] = {}
        self._bands = band_ranges(near_threshold) if near_threshold < 1.0 else ()
        self._buckets: list[dict[bytes, list[str]]] = [{} for _ in self._bands]

    def check_and_add(self, doc_id: str, digest: bytes, signature: np.ndarray | None) -> tuple[str, str] | None:
        """None when the document is new (and now remembered), else (`exact_duplicate`|`near_duplicate`, of-id)."""
        original = self._exact.get(digest)
        if original is not None:
            return "exact_duplicate", original
        keys: list[bytes] = []
        if self._bands and signature is not None:
            keys = [signature[start:end].tobytes() for start, end in self._bands]
            candidates = {doc for key, bucket in zip(keys, self._buckets, strict=True) for doc in bucket.get(key, ())}
            for candidate in sorted(candidates):
                if jaccard(signature, self._signatures[candidate]) >= self.near_threshold:
                    return "near_duplicate", candidate
        self._exact[digest] = doc_id
        if keys:
            for key, bucket in zip(keys, self._buckets, strict=True):
                bucket.setdefault(key, []).append(doc_id)
            self._signatures[doc_id] = signature
        return None
