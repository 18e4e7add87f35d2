"""Hostile corpus files of issue 31 (items 2-8, 13), generated in a test's tmp folder, and a deadline runner.

Each generator writes one file and says what prepare must do with it. Planted secrets are unique text that
must reach no output (ids, report, summary, errors, console).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

from tests.support.corpus_files import pdf_bytes, prose

STIX_ID_SECRET = "QPlantedStixIdSecret6620"
MEMBER_NAME_SECRET = "ghp_QPlantedMemberNameSecret0123456789ab"
SURROGATE_SECRET = "QPlantedSurrogateSecret3391"


def lone_surrogate_jsonl(path: Path, record_bytes: int = 120_000) -> None:
    """A JSONL file whose second record (`record_bytes` long) holds a JSON `\\ud800` escape: a lone surrogate."""
    body = (prose(800) + " ") * (record_bytes // len(prose(800)) + 1)
    lines = [
        json.dumps({"text": prose(801)}),
        '{"text": "' + f"{SURROGATE_SECRET} {body} \\ud800 tail" + '"}',
        json.dumps({"text": prose(802)}),
    ]
    path.write_text("\n".join(lines) + "\n")


def stix_with_null_phase_and_no_ids(path: Path) -> None:
    """A STIX bundle: a null phase name, two objects without an id, and an id that holds a secret."""
    objects = [
        {
            "type": "attack-pattern",
            "id": "attack-pattern--1",
            "name": "Null phase",
            "description": prose(810),
            "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": None}],
        },
        {"type": "malware", "name": "No id one", "description": prose(811)},
        {"type": "malware", "name": "No id two", "description": prose(812)},
        {"type": "tool", "id": f"tool--password={STIX_ID_SECRET}", "name": "Leaky id", "description": prose(813)},
        {"type": "tool", "id": "tool--dup", "name": "Duplicate id one", "description": prose(814)},
        {"type": "tool", "id": "tool--dup", "name": "Duplicate id two", "description": prose(815)},
    ]
    path.write_text(json.dumps({"type": "bundle", "id": "bundle--1", "objects": objects}))


OVERFLOW_PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\nstartxref\n99999999999999999999999999\n%%EOF"
"""A 69-byte PDF whose `startxref` overflows a C integer in pypdf (OverflowError)."""


def overlapping_zip(path: Path, entries: int, member_bytes: int) -> None:
    """A zip of `entries` central-directory entries that all point at one compressed member of `member_bytes`
    (the overlap bomb: the archive is about one member's size, and reads as `entries` of them)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("m0000.txt", (prose(820) + "\n") * (member_bytes // len(prose(820)) + 1))
    data = buffer.getvalue()
    end = data.rindex(b"PK\x05\x06")
    directory_offset = struct.unpack("<I", data[end + 16 : end + 20])[0]
    entry = data[directory_offset:end]
    entries_bytes = b"".join(entry.replace(b"m0000.txt", f"m{i:04d}.txt".encode()) for i in range(entries))
    tail = bytearray(data[end:])
    struct.pack_into("<HHI", tail, 8, entries, entries, len(entries_bytes))
    path.write_bytes(data[:directory_offset] + entries_bytes + bytes(tail))


def wide_zip(path: Path, members: int, member_bytes: int, seed: int = 830) -> None:
    """A zip of `members` distinct deflated text members of `member_bytes` each (compresses well)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(members):
            text = (prose(seed + i) + "\n") * (member_bytes // len(prose(seed + i)) + 1)
            archive.writestr(f"part-{i:04d}.md", text[:member_bytes])


def nested_zip(path: Path, depth: int, seed: int = 840) -> list[str]:
    """A zip holding a document and a zip, `depth` archives deep; returns the documents' ids, outermost first."""
    inner: bytes | None = None
    names: list[str] = []
    for level in reversed(range(depth)):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"level-{level}.md", prose(seed + level, 60))
            if inner is not None:
                archive.writestr(f"inner-{level + 1}.zip", inner)
        inner = buffer.getvalue()
    path.write_bytes(inner)
    prefix = path.name
    for level in range(depth):
        names.append(f"{prefix}!level-{level}.md")
        prefix = f"{prefix}!inner-{level + 1}.zip"
    return names


def odd_members_zip(path: Path) -> None:
    """Members with an absolute path, a path climbing out, and a name holding a token."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("/abs/escape.md"), prose(850))
        archive.writestr(zipfile.ZipInfo("../../climb.md"), prose(851))
        archive.writestr(f"keys/token {MEMBER_NAME_SECRET}.md", prose(852))


def utf16_powershell(path: Path) -> str:
    """What Windows PowerShell 5's `>` writes: UTF-16 LE with a BOM, CRLF lines; returns a phrase of it."""
    text = f"Get-Process output for the incident.\r\n{prose(860)}\r\n"
    path.write_bytes(text.encode("utf-16"))  # Python's utf-16 writes the platform BOM (LE here)
    return prose(860)[:60]


def windows_1252(path: Path) -> str:
    """A Windows-1252 text file with curly quotes, a euro sign and accents; returns a phrase of it."""
    phrase = "The analyst’s “résumé” of the café breach cost 5 000 € — naïve"
    path.write_bytes(f"{phrase}\n{prose(861)}\n".encode("cp1252"))
    return phrase


def random_binary(path: Path, size: int = 64 << 10, seed: int = 862) -> None:
    """Bytes with no NUL and no structure: not text in any encoding."""
    import random

    rng = random.Random(seed)
    path.write_bytes(bytes(rng.randrange(1, 256) for _ in range(size)))


def deep_json(path: Path, depth: int = 200_000) -> None:
    path.write_text('{"text": ' + "[" * depth + "]" * depth + "}")


def deep_jsonl(path: Path, depth: int = 200_000) -> None:
    """A JSONL file whose middle record is nested `depth` deep, between two good records."""
    deep = '{"text": ' + "[" * depth + "]" * depth + "}"
    lines = [json.dumps({"text": prose(870)}), deep, json.dumps({"text": prose(871)})]
    path.write_text("\n".join(lines) + "\n")


def huge_csv_field(path: Path, field_bytes: int) -> None:
    """A CSV whose second row has one field of `field_bytes`, between two good rows."""
    path.write_text(f'id,text\n1,"{prose(880)}"\n2,"{"A" * field_bytes}"\n3,"{prose(881)}"\n')


def nul_bytes_files(folder: Path) -> None:
    """NUL bytes late in a text file, in a JSON string escape, and in a CSV field."""
    (folder / "late-nul.txt").write_bytes(prose(890).encode() + b"\n" + b" " * 9000 + b"x\x00y\n" + prose(891).encode())
    (folder / "nul-escape.json").write_text(json.dumps([{"text": prose(892) + "\u0000" + prose(893)}]))
    (folder / "nul-field.csv").write_bytes(b'id,text\n1,"' + prose(894).encode() + b'\x00end"\n')


def empty_containers_json(path: Path, size: int) -> None:
    """`[{},{},...]` of about `size` bytes: json.loads grows ~25x its size on it."""
    count = size // 3
    with open(path, "w") as handle:
        handle.write("[" + "{}," * (count - 1) + "{}]")


def shared_stream_pdf(path: Path, pages: int, content_bytes: int) -> None:
    """A few kB of PDF whose `pages` all draw one content stream of `content_bytes` (the operator bomb)."""
    from tests.support.bad_corpus import pdf_bomb

    pdf_bomb(path, pages=pages, chars_per_page=content_bytes)


def repeated_form_pdf(path: Path, draws: int, form_lines: int) -> None:
    """A small PDF whose one page draws one form XObject of `form_lines` text lines `draws` times."""
    from pypdf import PdfWriter
    from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject, NumberObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    form = DecodedStreamObject()
    lines = " ".join(f"({prose(i, 10)}) Tj" for i in range(form_lines))
    form.set_data(f"BT /F1 9 Tf 30 760 Td {lines} ET".encode())
    fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
    form.update(
        {
            NameObject("/Type"): NameObject("/XObject"),
            NameObject("/Subtype"): NameObject("/Form"),
            NameObject("/BBox"): ArrayObject([NumberObject(0)] * 4),
            NameObject("/Resources"): DictionaryObject({NameObject("/Font"): fonts}),
        }
    )
    page = writer.add_blank_page(612, 792)
    xobjects = DictionaryObject({NameObject("/Fm1"): writer._add_object(form.flate_encode())})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/XObject"): xobjects})
    contents = DecodedStreamObject()
    contents.set_data(b"/Fm1 Do\n" * draws)
    page[NameObject("/Contents")] = writer._add_object(contents)
    buffer = io.BytesIO()
    writer.write(buffer)
    path.write_bytes(buffer.getvalue())


def small_pdf(path: Path, seed: int) -> None:
    path.write_bytes(pdf_bytes([prose(seed, 12), prose(seed + 1, 12)]))


def run_with_deadline(target: Callable[[], object], seconds: float) -> tuple[bool, int | None]:
    """Run `target` in a forked process; (finished in time, exit code). A process still running at the
    deadline is killed with its process group (what it started), and the caller's test fails on False."""
    context = multiprocessing.get_context("fork")

    def child() -> None:
        os.setpgrp()  # its own group, so that its own children go with it
        target()

    process = context.Process(target=child)
    process.start()
    process.join(seconds)
    if process.is_alive():
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.join()
        return False, None
    return True, process.exitcode
