"""The text of a PDF, with a bound on how much text and how many drawing operators it may expand to.

A PDF is small on disk and can still be large once drawn: one compressed content stream (or form)
shared by thousands of pages, or drawn thousands of times by one page, is extracted again each
time. pypdf calls back on every operator and text run, so extraction stops as soon as either bound
is passed, before the work is done, and the file is skipped with the reason.
"""

from __future__ import annotations

import io
import logging

from pypdf import PdfReader
from pypdf.errors import PyPdfError

from steps.prepare.read_guard import SkipFile

# pypdf logs per broken object, quoting the object: off, the report says what matters without the input.
logging.getLogger("pypdf").setLevel(logging.CRITICAL + 1)

# Damaged files raise a variety of types from pypdf; each means "this PDF cannot be read". Their
# messages quote the file's objects, so only the type is reported.
_PDF_ERRORS = (PyPdfError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError, OSError)


class _TooLarge(Exception):
    pass


class _Budget:
    def __init__(self, chars: int, operators: int) -> None:
        self.chars, self.operators = chars, operators

    def text(self, text, *_) -> None:
        self.chars -= len(text)
        if self.chars < 0:
            raise _TooLarge

    def operator(self, *_) -> None:
        self.operators -= 1
        if self.operators < 0:
            raise _TooLarge


def pdf_text(data: bytes, max_chars: int) -> str:
    """All pages' text; SkipFile if it is damaged, needs a password, or draws more than `max_chars`.

    Operators are bounded by the same number: each one costs work even when it draws no text.
    """
    budget = _Budget(max_chars, max_chars)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SkipFile("encrypted PDF that needs a password")
        return "\n".join(
            page.extract_text(visitor_text=budget.text, visitor_operand_before=budget.operator) or ""
            for page in reader.pages
        )
    except _TooLarge:
        raise SkipFile(
            f"PDF text larger than data.max_document_bytes ({max_chars}) when extracted; raise it to include this file"
        ) from None
    except SkipFile:
        raise
    except _PDF_ERRORS as exc:
        raise SkipFile(f"broken PDF ({type(exc).__name__})") from None
