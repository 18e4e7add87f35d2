"""Private key blocks: PEM (every `-----BEGIN ... PRIVATE KEY-----`, encrypted or not), PGP, SSH2 and PuTTY.

detect-secrets' `PrivateKeyDetector` knows a fixed list of header lines (no `ENCRYPTED PRIVATE KEY`, PuTTY
version 2 only) and reports the header, not the key. The secret is the whole block, so the block is found here:
from the header to its END line, or, where a quoted key was cut short, over the lines that look like a key's
(base64 lines and the `Name: value` fields such as `Proc-Type` and `DEK-Info`, blank lines before the body
included) and no further. A key written on one line with escaped newlines (a service-account JSON) ends at its
END marker on that line.

Linear in the text: every search resumes past the last block, and the next newline and END marker are
remembered rather than searched again from each header.
"""

from __future__ import annotations

import re

Span = tuple[int, int, str]

_HEADER = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----"
    r"|---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----"
    r"|PuTTY-User-Key-File-\d+:"
)
_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|---- END SSH2 ENCRYPTED PRIVATE KEY ----")
_FIELD = re.compile(
    r"[ \t]*(?:Proc-Type|DEK-Info|Comment|Version|Hash|Charset|Encryption|Key-Derivation|Argon2-[\w-]+"
    r"|Public-Lines|Private-Lines|Private-MAC|Private-Hash|Subject|x-[\w-]+):[^\n]*"
)
_BASE64_LINE = re.compile(r"[ \t]*[A-Za-z0-9+/=]+[ \t]*\\?")
_LONG_ENOUGH = 16  # a shorter base64-looking line is a word unless an END line follows it


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start)
    return len(text) if end == -1 else end


def _body_end(text: str, start: int) -> int:
    """Where the key lines that start at `start` stop: after its END line, or after its last key line."""
    last, at, body_started = start, start, False
    while at < len(text):
        end = _line_end(text, at)
        if _END.match(text, at, end) or (text.startswith(" ", at) and _END.match(text, at + 1, end)):
            return end
        line = text[at:end]
        if not line.strip():
            if body_started:
                break  # a blank line after the body ends an unterminated key
        elif _FIELD.fullmatch(line):
            last = end
        elif _BASE64_LINE.fullmatch(line):
            following = _line_end(text, end + 1) if end < len(text) else end
            short = len(line.strip()) < _LONG_ENOUGH and not line.rstrip().endswith("=")
            if short and not _END.match(text, end + 1, following):
                break
            body_started, last = True, end
        else:
            break
        at = end + 1
    return last


def private_key_spans(text: str) -> list[Span]:
    """(start, end, "private_key") of each key block."""
    spans: list[Span] = []
    resume = 0
    next_newline = next_end = -2  # remembered positions (-1: none left in the text)
    for header in _HEADER.finditer(text):
        if header.start() < resume:
            continue
        if next_newline != -1 and next_newline < header.end():
            next_newline = text.find("\n", header.end())
        if next_end != -1 and next_end < header.end():
            found = _END.search(text, header.end())
            next_end = found.start() if found else -1
        if next_end != -1 and (next_newline == -1 or next_end < next_newline):
            stop = _END.match(text, next_end).end()  # the whole key on the header's own line
        elif next_newline == -1:
            stop = len(text)
        else:
            stop = max(_body_end(text, next_newline + 1), _line_end(text, header.end()))
        spans.append((header.start(), stop, "private_key"))
        resume = stop
    return spans
