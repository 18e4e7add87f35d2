"""prepare's filters called directly: the secret finder and the duplicate index."""

from __future__ import annotations

import pytest

from steps.prepare.near_dedupe import DuplicateIndex, content_digest, minhash_signatures
from steps.prepare.redact import find_secrets, redact
from tests.support.corpus_files import CANARIES, CANARY_VALUES, IOCS, prose


@pytest.mark.parametrize("kind", sorted(CANARIES))
def test_each_kind_of_secret_is_found_with_its_type(kind: str) -> None:
    text = f"{prose(1, 30)}\n{CANARIES[kind]}\n{prose(2, 30)}"
    found = find_secrets(text)
    assert kind in {k for _, _, k in found}, found
    redacted, counts = redact(text)
    assert counts[kind] >= 1 and f"<SECRET:{kind}>" in redacted
    assert not any(value in redacted for value in CANARY_VALUES)


def test_indicators_of_compromise_are_not_secrets() -> None:
    text = f"The implant beaconed to {' and '.join(IOCS)} during the intrusion."
    assert find_secrets(text) == []
    assert redact(text) == (text, {})


def test_overlapping_findings_are_one_span() -> None:
    key = CANARIES["aws_access_key"]
    spans = find_secrets(f"{key} {key}")
    assert all(a_end <= b_start for (_, a_end, _), (b_start, _, _) in zip(spans, spans[1:], strict=False))


def _add(index: DuplicateIndex, doc_id: str, text: str):
    return index.check_and_add(doc_id, content_digest(text), minhash_signatures([text])[0])


def test_exact_and_near_duplicates_name_the_document_they_repeat() -> None:
    index = DuplicateIndex(near_threshold=0.85)
    original = prose(10, 300)
    words = original.split()
    words[150] = "zeroday"  # one word in 300 changed
    assert _add(index, "a", original) is None
    assert _add(index, "b", original) == ("exact_duplicate", "a")
    assert _add(index, "c", " ".join(words)) == ("near_duplicate", "a")
    assert _add(index, "d", prose(11, 300)) is None  # different text stays


def test_threshold_one_keeps_near_duplicates() -> None:
    index = DuplicateIndex(near_threshold=1.0)
    original = prose(10, 300)
    words = original.split()
    words[150] = "zeroday"
    assert index.check_and_add("a", content_digest(original), None) is None
    assert index.check_and_add("c", content_digest(" ".join(words)), None) is None
    assert index.check_and_add("b", content_digest(original), None) == ("exact_duplicate", "a")


def _datasketch_decisions(texts: list[str], threshold: float) -> list[tuple[str, str] | None]:
    """What datasketch's own LSH index decides, document by document in order (exact duplicates first)."""
    from datasketch import LeanMinHash, MinHashLSH

    lsh, sketches, exact, decisions = MinHashLSH(threshold=threshold, num_perm=128), {}, {}, []
    for number, text in enumerate(texts):
        doc_id, digest = f"d{number:03d}", content_digest(text)
        if digest in exact:
            decisions.append(("exact_duplicate", exact[digest]))
            continue
        sketch = LeanMinHash(seed=1, hashvalues=minhash_signatures([text])[0], scheme="affine32")
        near = [c for c in sorted(lsh.query(sketch)) if sketch.jaccard(sketches[c]) >= threshold]
        if near:
            decisions.append(("near_duplicate", near[0]))
            continue
        exact[digest], sketches[doc_id] = doc_id, sketch
        lsh.insert(doc_id, sketch)
        decisions.append(None)
    return decisions


def test_near_duplicate_decisions_are_datasketchs_own() -> None:
    """The index keeps its LSH buckets in plain dicts; what it decides must be what `MinHashLSH` decides,
    candidates that banding proposes but the Jaccard estimate rejects included."""
    texts = []
    for base in range(12):
        words = prose(100 + base, 240).split()
        texts.append(" ".join(words))
        for edits in (2, 6, 12, 20, 30):  # from clearly near (~0.9 similar) to clearly not
            changed = list(words)
            for k in range(edits):
                changed[(k * 37 + base) % len(changed)] = f"edit{base}x{k}"
            texts.append(" ".join(changed))
        texts.append(" ".join(words))  # an exact repeat
    expected = _datasketch_decisions(texts, 0.85)
    index = DuplicateIndex(near_threshold=0.85)
    signatures = minhash_signatures(texts)
    decided = [
        index.check_and_add(f"d{n:03d}", content_digest(t), s)
        for n, (t, s) in enumerate(zip(texts, signatures, strict=True))
    ]
    assert decided == expected
    kinds = [d[0] if d else "kept" for d in decided]
    assert kinds.count("near_duplicate") >= 12 and kinds.count("exact_duplicate") == 12 and kinds.count("kept") > 12
