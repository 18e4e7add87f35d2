"""CSV files as documents, one per row, read one row at a time with the standard library's reader.

A malformed row (more or fewer fields than the header, a field or line over the size limit) is
left out on its own and named by its row and line number: one bad row does not drop the file, and
the reason never quotes the row, which may hold a secret. Every value is read as text (no type
guessing that could fail half-way through a file).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import IO

from steps.prepare.read_guard import SkipFile


class _LongLine(Exception):
    pass


class _Lines:
    """Lines of at most `limit` characters; a longer one is skipped unread and raises _LongLine once."""

    def __init__(self, text: IO[str], limit: int) -> None:
        self._text, self._limit = text, limit

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._text.readline(self._limit + 1)
        if not line:
            raise StopIteration
        if len(line) > self._limit and not line.endswith("\n"):
            while (rest := self._text.readline(1 << 20)) and not rest.endswith("\n"):
                pass
            raise _LongLine
        return line


def csv_rows(stream: IO[bytes], columns: tuple[str, ...], limit: int) -> Iterator[tuple[str, str | None, str | None]]:
    """(row key, text, None) per row, or (row key, None, reason) for a row left out.

    Rows are numbered from 0 after the header, blank lines not counted, so a row keeps its key
    whether or not the rows before it were readable.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    csv.field_size_limit(limit)  # a quoted field never closed would otherwise read on to the end of the file
    lines = _Lines(text, limit)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise SkipFile("empty file") from None
    except (csv.Error, _LongLine):
        raise SkipFile(f"unreadable CSV header row (a field or line longer than {limit} characters)") from None
    positions = [header.index(c) for c in columns if c in header]
    if not positions:
        # Not the header's names: a file without a header row has its first data row there.
        raise SkipFile(
            f"CSV header row has none of data.csv_columns {list(columns)} ({len(header)} columns); "
            "add a header row or set data.csv_columns"
        )
    row = 0
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _LongLine:
            yield str(row), None, f"CSV row {row} (line {line}): line longer than data.max_document_bytes ({limit})"
            row += 1
            continue
        except csv.Error:
            yield str(row), None, f"CSV row {row} (line {line}): field longer than data.max_document_bytes ({limit})"
            row += 1
            continue
        if not cells:
            continue
        if len(cells) != len(header):
            yield (
                str(row),
                None,
                f"malformed CSV row {row} (line {line}): {len(cells)} fields, header has {len(header)}",
            )
        else:
            yield str(row), "\n".join(cells[i] for i in positions if cells[i]), None
        row += 1
