"""prepare's per-document fast paths give exactly what the plain code they replace gives.

References: the regex-only `normalise` and `alnum_fraction`, datasketch's own `MinHash.update_batch`,
and `find_secrets` with its multi-pattern pre-filter turned off (every pattern on every long token).
"""

from __future__ import annotations

import re
import unicodedata
from itertools import islice

import numpy as np
import pytest
from datasketch import MinHash

from steps.formats.cwe_catalogue import bundled_catalogue_path
from steps.prepare import clean, near_dedupe, redact
from steps.prepare.cwe_documents import cwe_documents
from tests.support.corpus_files import CANARIES, IOCS, prose


def _normalise_reference(text: str) -> str:
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = re.sub(r"[^\S\n]+", " ", text.translate(clean._CONTROLS))
    return re.sub(r"\n{3,}", "\n\n", re.sub(r" ?\n ?", "\n", text)).strip()


def _alnum_reference(text: str) -> float:
    visible = len(text) - text.count(" ") - text.count("\n") - text.count("\t")
    return len(re.sub(r"[\W_]+", "", text)) / visible if visible > 0 else 0.0


def _signature_reference(text: str) -> np.ndarray:
    sketch = MinHash(num_perm=near_dedupe.NUM_PERM, seed=1, scheme="affine32", hashfunc=int)
    sketch.update_batch(near_dedupe.shingle_hashes(text).tolist())
    return sketch.hashvalues


CWE_TEXTS = [text for _, text in islice(cwe_documents(bundled_catalogue_path()), 40)]  # read once


EDGE_TEXTS = [
    "",
    "   ",
    "plain single spaces only, one line",
    "tabs\tand  double  spaces \n\n\n\nand blank runs \n trailing ",
    "crlf\r\nline\rbreaks\r\n\r\n\r\n\r\nend",
    "non-breaking\u00a0space, ideographic\u3000space, em\u2003space \u2028 line separator",
    "zero\u200bwidth, bidi\u202eoverride, soft\u00adhyphen, bell\x07, vertical\x0btab, form\x0cfeed",
    "ﬁ ligature, full-width ＡＢＣ１２３, café naïve — “quotes”",
    "___---...!!!",
    "x" * 5 + " \n" * 10,
]


@pytest.mark.parametrize("text", EDGE_TEXTS + CWE_TEXTS)
def test_normalise_and_alnum_fraction_match_the_regex_only_code(text: str) -> None:
    assert clean.normalise(text) == _normalise_reference(text)
    assert clean.alnum_fraction(text) == _alnum_reference(text)
    assert clean.alnum_fraction(clean.normalise(text)) == _alnum_reference(_normalise_reference(text))


def test_minhash_signatures_are_datasketchs_including_long_documents() -> None:
    long_text = prose(3, 3 * near_dedupe._PERMUTE_ROWS)  # several chunks of permuted shingles
    for text in ["", "one", "five words and no more", long_text, *CWE_TEXTS[:30]]:
        ours = near_dedupe.minhash_signatures([text])[0]
        assert ours.dtype == np.uint32 and np.array_equal(ours, _signature_reference(text))


def test_minhash_signatures_of_a_batch_are_each_documents_own() -> None:
    # Documents cross the blocks of permuted rows at every kind of boundary: inside, at its edge, several blocks.
    rows = near_dedupe._PERMUTE_ROWS
    lengths = [3, rows - 10, 8, rows + 4, 1, 2 * rows + 100, 40, 0, rows // 2]
    texts = [prose(10 + n, words) if words else "" for n, words in enumerate(lengths)] + CWE_TEXTS[:20]
    batch = near_dedupe.minhash_signatures(texts)
    assert len(batch) == len(texts)
    for text, ours in zip(texts, batch, strict=True):
        assert np.array_equal(ours, _signature_reference(text))


@pytest.mark.parametrize(
    "text", [*EDGE_TEXTS, *CWE_TEXTS, "snake_case_name x86_64 CVE-2024-3094 O'Brien's", "\x1c\x1f\x7f|~"]
)
def test_words_are_the_regex_words_of_the_lower_cased_text(text: str) -> None:
    assert near_dedupe.words(text) == [word.encode() for word in re.findall(r"\w+", text.lower())]


def test_word_hash_memo_emptied_when_full_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = CWE_TEXTS[:5]
    expected = [near_dedupe.shingle_hashes(text) for text in texts]
    monkeypatch.setattr(near_dedupe._WordHashes, "LIMIT", 10)
    near_dedupe._WORD_HASHES.clear()
    assert all(np.array_equal(near_dedupe.shingle_hashes(t), e) for t, e in zip(texts, expected, strict=True))
    assert len(near_dedupe._WORD_HASHES) <= 10


def _secret_texts() -> list[str]:
    canaries = list(CANARIES.values())
    return [
        *(f"{prose(i, 20)}\n{value}\n{prose(i + 1, 20)}" for i, value in enumerate(canaries)),
        *canaries,  # at the very start and end of the text, where windows are cut short
        " ".join(canaries),
        "\n".join(f'key="{value}"' for value in canaries),
        " ".join(IOCS),
        *CWE_TEXTS[:20],
    ]


def test_secret_finder_with_pre_filter_finds_what_every_pattern_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _secret_texts()
    fast = [redact.find_secrets(text) for text in texts]
    assert sum(map(len, fast)) >= len(CANARIES)  # the comparison is about texts that do hold secrets
    monkeypatch.setattr(redact, "_TOKEN_CANDIDATE", re.compile(""))  # matches every window: no filtering
    assert fast == [redact.find_secrets(text) for text in texts]


def test_long_token_windows_are_every_run_of_sixteen_or_more() -> None:
    texts = [*_secret_texts(), *EDGE_TEXTS, "a" * 15 + " " + "b" * 16 + "\n" + "c" * 40 + "\t" + "d" * 15]
    spans = [[m.span() for m in redact._LONG_TOKEN.finditer(text)] for text in texts]
    assert spans == [[m.span() for m in re.finditer(r"\S{16,}", text)] for text in texts]
    assert sum(map(len, spans)) > len(CANARIES)


def test_pre_filter_rejects_prose_windows() -> None:
    text = prose(5, 200) + " misconfiguration-related vulnerabilities https://cwe.mitre.org/data/definitions/79"
    windows = [m for m in redact._LONG_TOKEN.finditer(text)]
    assert windows and all(redact._TOKEN_CANDIDATE.search(text, m.start(), m.end()) is None for m in windows)
