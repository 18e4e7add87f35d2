"""The text of a PDF, with a bound on the text and on the drawing work one file may cost.

A PDF is small on disk and can still be large once drawn: one compressed content stream (or form) shared by
every page, or drawn thousands of times, is parsed and extracted again each time. pypdf parses a page's whole
content stream before it calls back on any operator, at about 0.1-0.3 MB of content a second on one core, so
the bound is on content bytes, charged *before* pypdf parses them: each page's decoded content stream, and for
each form drawn (`Do`) the form's content. What one file may cost is proportional to the file
(`data.pdf_content_per_byte` bytes of content per byte of PDF, after a first MiB that any PDF may use), so
that no PDF takes more than seconds per MiB of itself; the text is bounded by `data.max_document_bytes`.
Either bound passed skips the file, with the reason.
"""

from __future__ import annotations

import io
import logging

from pypdf import PdfReader
from pypdf.errors import PyPdfError
from pypdf.generic import ArrayObject

from steps.prepare.read_guard import SkipFile

# pypdf logs per broken object, quoting the object: off, the report says what matters without the input.
logging.getLogger("pypdf").setLevel(logging.CRITICAL + 1)

CONTENT_FLOOR_BYTES = 1 << 20
"""Page content any PDF may make the reader parse, whatever its size."""
_MAX_FORMS_WALKED = 10_000

# Damaged files raise a variety of types from pypdf, internal assertions and integer overflows included; each
# means "this PDF cannot be read". Their messages quote the file's objects, so only the type is reported.
_PDF_ERRORS = (
    PyPdfError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    NotImplementedError,
    OSError,
    AssertionError,
    OverflowError,
    IndexError,
    RecursionError,
    ZeroDivisionError,
)


class _TooLarge(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _stream_bytes(obj) -> int:
    """Decoded bytes of a content stream, or of an array of them; 0 for anything else."""
    obj = obj.get_object() if obj is not None else None
    if isinstance(obj, ArrayObject):
        return sum(_stream_bytes(part) for part in obj)
    return len(obj.get_data()) if hasattr(obj, "get_data") else 0


def _resolved(container, key):
    """`container[key]` resolved, or None where either is missing or not a dictionary."""
    value = container.get(key) if hasattr(container, "get") else None
    return value.get_object() if value is not None else None


def _forms(resources, seen: set[int]):
    """The form XObjects reachable from a resources dictionary (each once, at most `_MAX_FORMS_WALKED`)."""
    resources = resources.get_object() if resources is not None else None
    xobjects = resources.get("/XObject") if hasattr(resources, "get") else None
    xobjects = xobjects.get_object() if xobjects is not None else None
    for value in xobjects.values() if hasattr(xobjects, "values") else ():
        form = value.get_object()
        if id(form) in seen or len(seen) >= _MAX_FORMS_WALKED or form.get("/Subtype") != "/Form":
            continue
        seen.add(id(form))
        yield form
        yield from _forms(form.get("/Resources"), seen)


class _Budget:
    def __init__(self, reader: PdfReader, chars: int, content: int, file_bytes: int) -> None:
        self.reader, self.chars, self.content, self.file_bytes = reader, chars, content, file_bytes
        self.allowed = content
        self._largest_form: int | None = None
        self.page = None

    def text(self, text, *_) -> None:
        self.chars -= len(text)
        if self.chars < 0:
            raise _TooLarge("text")

    def charge(self, content_bytes: int) -> None:
        self.content -= content_bytes
        if self.content < 0:
            raise _TooLarge("content")

    def form_bytes(self, name) -> int:
        """A drawn form's content: the page's form of that name, else the largest form in the file (a form
        drawn from inside another form is named in that form's resources)."""
        form = _resolved(_resolved(_resolved(self.page, "/Resources"), "/XObject"), name)
        if form is not None and form.get("/Subtype") == "/Form":
            return len(form.get_data())
        if form is not None:
            return 0  # an image: drawn without parsing
        if self._largest_form is None:
            seen: set[int] = set()
            sizes = [len(f.get_data()) for page in self.reader.pages for f in _forms(page.get("/Resources"), seen)]
            self._largest_form = max(sizes, default=0)
        return self._largest_form

    def operator(self, operator, operands, *_) -> None:
        if operator == b"Do" and operands:
            self.charge(self.form_bytes(operands[0]))


def pdf_text(data: bytes, max_chars: int, content_per_byte: int) -> str:
    """All pages' text; SkipFile if it is damaged, needs a password, draws more than `max_chars` of text or
    makes the reader parse more than `CONTENT_FLOOR_BYTES + content_per_byte * len(data)` bytes of content."""
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SkipFile("encrypted PDF that needs a password")
        budget = _Budget(reader, max_chars, CONTENT_FLOOR_BYTES + content_per_byte * len(data), len(data))
        texts = []
        for page in reader.pages:
            budget.page = page
            budget.charge(_stream_bytes(page.get("/Contents")))
            texts.append(page.extract_text(visitor_text=budget.text, visitor_operand_before=budget.operator) or "")
        return "\n".join(texts)
    except _TooLarge as exc:
        if exc.reason == "text":
            raise SkipFile(
                f"PDF text larger than data.max_document_bytes ({max_chars}) when extracted; raise it to include "
                "this file"
            ) from None
        raise SkipFile(
            f"PDF whose pages draw more than {budget.allowed} bytes of page content for its {len(data)} bytes "
            "(shared or repeated content streams); raise data.pdf_content_per_byte to include this file"
        ) from None
    except SkipFile:
        raise
    except _PDF_ERRORS as exc:
        raise SkipFile(f"broken PDF ({type(exc).__name__})") from None
