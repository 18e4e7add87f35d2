"""Which encoding a corpus file's text is in: a byte-order mark first, then UTF-8, then a detector.

Real exports are not all UTF-8: Windows PowerShell 5's `>` writes UTF-16 with a BOM, and older Windows tools
write Windows-1252. Skipping those silently lost readable documents. The order of the checks:
1. a BOM names its encoding (UTF-32 before UTF-16: their little-endian marks share a prefix);
2. NUL bytes without a BOM mean binary (executables, images): skipped, as before;
3. UTF-8, when it decodes;
4. else charset-normalizer's best match, if its mess ratio is at most `MAX_CHAOS`; Windows-1252 is preferred
   among single-byte code pages that fit equally well (short Western text fits several, and cp1250 or
   cp1257 would turn `ï` into `ď`). Bytes that fit no encoding well are not text, and are skipped.
Names are Python's codec names (`utf-8`, `utf-16`, `cp1252`), as counted on the card.
"""

from __future__ import annotations

import codecs
import io
import logging
from typing import IO

from charset_normalizer import from_bytes

from steps.prepare.read_guard import SkipFile

MAX_CHAOS = 0.1
"""Largest mess ratio (charset-normalizer's share of unlikely characters) of a detected decoding."""
SNIFF_BYTES = 8192
"""Bytes looked at for NUL (binary) before any decoding."""
STREAM_SAMPLE_BYTES = 64 << 10
"""Bytes of a streamed file (CSV, JSON Lines) the encoding is decided from."""
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_PREFERRED = "cp1252"
logging.getLogger("charset_normalizer").setLevel(logging.CRITICAL + 1)  # it logs what it tries, quoting bytes


def _bom(data: bytes) -> tuple[str, int] | None:
    for mark, encoding in _BOMS:
        if data.startswith(mark):
            return encoding, len(mark)
    return None


def counted_name(encoding: str) -> str:
    """The name shown on the card: the byte order is an accident of the file, not an encoding of its own."""
    name = codecs.lookup(encoding).name
    return name.removesuffix("-le").removesuffix("-be")


def detect(data: bytes, complete: bool = True) -> tuple[str, int]:
    """(codec name, bytes of BOM to drop) of `data`; SkipFile when it is not text. `complete` False: `data` is the
    head of a longer file (a multi-byte character may be cut at its end)."""
    bom = _bom(data)
    if bom is not None:
        return bom
    if b"\x00" in data[:SNIFF_BYTES]:
        raise SkipFile("binary content (NUL bytes), not text")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=complete)
        return "utf-8", 0
    except UnicodeDecodeError as exc:
        offset = exc.start
    matches = [m for m in from_bytes(data, threshold=MAX_CHAOS) if m.chaos <= MAX_CHAOS]
    if not matches:
        raise SkipFile(f"not text in any encoding detected: not UTF-8 (byte 0x{data[offset]:02x} at offset {offset})")
    best = min(matches, key=lambda m: m.chaos)
    preferred = [m for m in matches if m.encoding == _PREFERRED and m.chaos <= best.chaos]
    return (preferred[0] if preferred else best).encoding, 0


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding) of a whole file's bytes; SkipFile naming why they are not text."""
    encoding, skip = detect(data)
    try:
        return data[skip:].decode(encoding), counted_name(encoding)
    except UnicodeDecodeError as exc:  # a detected single-byte page with a hole, say
        raise SkipFile(f"not {counted_name(encoding)} text: byte offset {exc.start + skip}") from None


class _Recoded(io.RawIOBase):
    """UTF-8 bytes of a text stream in another encoding, decoded strictly as it is read."""

    def __init__(self, text: IO[str]) -> None:
        super().__init__()
        self._text, self._pending = text, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = self._text.read(max(len(buffer) // 4, 1))
            if not chunk:
                return 0
            self._pending = chunk.encode("utf-8", "surrogatepass")
        size = min(len(buffer), len(self._pending))
        buffer[:size], self._pending = self._pending[:size], self._pending[size:]
        return size

    def close(self) -> None:
        if not self.closed:
            self._text.close()
        super().close()


class _Rejoined(io.RawIOBase):
    """The bytes already read for sniffing, then the rest of the stream."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        super().__init__()
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size], self._head = self._head[:size], self._head[size:]
            return size
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._rest.close()
        super().close()


def utf8_stream(stream: IO[bytes]) -> tuple[IO[bytes], str]:
    """(the stream as UTF-8 bytes without a BOM, its encoding's counted name), from a sample of its head;
    SkipFile when the head is not text. UTF-8 passes through as it is; other encodings are decoded strictly
    as read (a later byte that does not decode raises UnicodeDecodeError there)."""
    head = stream.read(STREAM_SAMPLE_BYTES)
    encoding, skip = detect(head, complete=len(head) < STREAM_SAMPLE_BYTES)
    rejoined = io.BufferedReader(_Rejoined(head[skip:], stream))
    if codecs.lookup(encoding).name == "utf-8":
        return rejoined, "utf-8"
    text = io.TextIOWrapper(rejoined, encoding=encoding, newline="")
    return io.BufferedReader(_Recoded(text)), counted_name(encoding)
