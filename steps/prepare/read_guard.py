"""Guards for reading untrusted corpus files: bounded streams and reasons that never quote the input.

Parsers put the input into their error messages (pypdf quotes objects, lxml tag names, gzip the
first bytes, a CSV reader the whole row): a row holding a secret would carry it into the report,
the card and strict mode's error. So a reason names the kind of error and where (line, row,
offset), never the parser's text; `SkipFile` messages are written by us and carry no input.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
import zlib
from typing import IO

from lxml import etree


class SkipFile(Exception):
    """A file (or zip member) left out as a whole; the message is the reason, written without any input text."""


class _Bounded(io.RawIOBase):
    """A stream that raises SkipFile as soon as more than `limit` bytes have come out of it."""

    def __init__(self, inner: IO[bytes], limit: int, reason: str) -> None:
        super().__init__()
        self._inner, self._left, self._reason = inner, limit, reason

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._inner.read(min(len(buffer), self._left + 1))
        self._left -= len(data)
        if self._left < 0:
            raise SkipFile(self._reason)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


def bounded(inner: IO[bytes], limit: int, reason: str) -> IO[bytes]:
    """`inner`, buffered, raising SkipFile(reason) once it yields more than `limit` bytes in all."""
    return io.BufferedReader(_Bounded(inner, limit, reason))


def utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def error_reason(exc: BaseException) -> str:
    """Why a file could not be read, from the exception's type and position only, never its message."""
    if isinstance(exc, SkipFile):
        return str(exc)
    if isinstance(exc, etree.XMLSyntaxError):  # a SyntaxError: must come before the generic cases
        return f"malformed XML (XMLSyntaxError at line {exc.lineno})"
    if isinstance(exc, json.JSONDecodeError):  # msg is the json module's fixed text, not the input
        return f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not {exc.encoding} text: byte offset {exc.start}"
    if isinstance(exc, zipfile.BadZipFile):
        return "damaged zip data (BadZipFile)"
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        return f"damaged or truncated compressed data ({type(exc).__name__})"
    return f"unreadable ({type(exc).__name__})"
