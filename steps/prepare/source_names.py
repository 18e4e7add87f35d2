"""Names that reach prepare's outputs (file names, zip member names, record keys), made safe once, where they
enter: no lone surrogate, no secret, no two alike.

A document id is its source's name and its key inside the source (`steps.formats.dataset.document_id`); it is
written to report.jsonl, prompts.jsonl and the summary's `validation_doc_ids`, and the duplicate index and the
split are keyed by it. So:
- a lone surrogate (a JSON `\\ud800` escape; a file name that is not UTF-8, which Python decodes with
  surrogate escapes) becomes U+FFFD, the replacement character, in names and in document text alike: the
  rest of the text is good, and nothing downstream (hashing, Arrow, the tokenizer) accepts a surrogate;
- a secret in a name (`token=ghp_...` as a member name, `password=...` as a STIX id) is redacted as in text;
- two documents never share an id: a key met again in the same source gets `~<its document number>`, a name
  met again (two names that redaction made alike) gets `~<n>`.
"""

from __future__ import annotations

import re

from steps.prepare.redact import redact

_SURROGATES = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def without_surrogates(text: str) -> str:
    """`text` with every surrogate code point (in a str, always a lone one) replaced by U+FFFD."""
    if text.isascii() or not _SURROGATES.search(text):
        return text
    return _SURROGATES.sub(REPLACEMENT, text)


def safe_name(raw: str, redact_emails: bool = False) -> str:
    """A name as reports and ids may show it: surrogates replaced, secrets redacted."""
    return redact(without_surrogates(raw), redact_emails)[0]


def unique_names(names: list[str]) -> list[str]:
    """`names` with each repeat made distinct by `~2`, `~3`, ... in order (names already distinct unchanged)."""
    seen: set[str] = set(names)
    counts: dict[str, int] = {}
    result: list[str] = []
    for name in names:
        if name not in counts:
            counts[name] = 1
            result.append(name)
            continue
        while True:
            counts[name] += 1
            candidate = f"{name}~{counts[name]}"
            if candidate not in seen:
                break
        seen.add(candidate)
        result.append(candidate)
    return result


class UniqueKeys:
    """Keys of the documents of one source, made safe and distinct (a repeat gets `~<document number>`)."""

    def __init__(self, redact_emails: bool = False) -> None:
        self._seen: set[str] = set()
        self._redact_emails = redact_emails

    def __call__(self, key: str, number: int) -> str:
        if not key:
            return key
        if not key.isdigit():  # a record's number (most keys) holds nothing to redact
            key = safe_name(key, self._redact_emails)
        if key in self._seen:
            key = f"{key}~{number}"
        self._seen.add(key)
        return key
