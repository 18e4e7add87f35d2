"""A corpus folder holding one of each bad input of issue 13, generated in a test's tmp folder.

Bombs are sized from the limits the test reads the corpus with (a few times over), so tests stay
fast; nothing here is committed as a file. Each planted secret is unique text that must never reach
any output of a run: shards, report, card, summary, console, errors.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.corpus_files import CWE_XML, prose

CSV_ROW_SECRET = "QPlantedCsvRowSecret4417xz"
XML_TAG_SECRET = "QPlantedXmlTagSecret9931"
OUTSIDE_FILE_SECRET = "QPlantedOutsideFileSecret2203"
OUTSIDE_FOLDER_SECRET = "QPlantedOutsideFolderSecret5150"
URL_HEX_PASSWORD = hashlib.sha256(b"planted url password").hexdigest()
CLOUDANT_HEX_KEY = hashlib.sha256(b"planted cloudant key").hexdigest()


@dataclass
class BadCorpus:
    secrets: list[str]
    """Planted secret strings: none may appear in any output."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Skipped file name (relative to the corpus folder) -> a fragment of its reason."""
    skipped_records: dict[str, str] = field(default_factory=dict)
    """Document id of a skipped record -> a fragment of its reason."""


def malformed_csv(path: Path) -> tuple[str, str]:
    """Good rows around one row with an extra field holding a secret; (its document id, reason fragment)."""
    rows = [f'1,"{prose(700)}"', f'2,db_password={CSV_ROW_SECRET},"{prose(701)}"', f'3,"{prose(702)}"']
    path.write_text("id,text\n" + "\n".join(rows) + "\n")
    return f"{path.name}#1", "malformed CSV row 1"


def broken_xml_with_secret_tag(path: Path) -> None:
    """A truncated CWE catalogue whose unclosed tag is a secret: lxml's error message quotes it."""
    path.write_text(f'<?xml version="1.0"?><Weakness_Catalog xmlns="http://cwe.mitre.org/cwe-7"><{XML_TAG_SECRET}>')


def xml_gz_bomb(path: Path, expanded_bytes: int) -> None:
    """A CWE catalogue of one weakness whose description is `expanded_bytes` long, gzipped to a few KB."""
    head, tail = CWE_XML.split("<Description>")
    description = (prose(710) + " ") * (expanded_bytes // len(prose(710)) + 1)
    path.write_bytes(
        gzip.compress(f"{head}<Description>{description}</Description>{tail.split('</Description>', 1)[1]}".encode())
    )


def big_entry_xml(path: Path, description_bytes: int) -> None:
    """A plain CWE catalogue with one weakness of `description_bytes` and one normal weakness."""
    big = (prose(711) + " ") * (description_bytes // len(prose(711)) + 1)
    path.write_text(
        '<?xml version="1.0"?><Weakness_Catalog xmlns="http://cwe.mitre.org/cwe-7"><Weaknesses>'
        f'<Weakness ID="1" Name="Big" Abstraction="Base" Status="Stable"><Description>{big}</Description></Weakness>'
        f'<Weakness ID="2" Name="Small" Abstraction="Base" Status="Stable"><Description>{prose(712)}</Description>'
        "</Weakness></Weaknesses></Weakness_Catalog>"
    )


def records_gz_bomb(path: Path, expanded_bytes: int) -> None:
    """A .jsonl.gz or .csv.gz whose records (the same few, repeated) expand to `expanded_bytes`."""
    if path.name.endswith(".csv.gz"):
        head, line = "id,text\n", f'7,"{prose(720)}"\n'
    else:
        head, line = "", json.dumps({"text": prose(720)}) + "\n"
    path.write_bytes(gzip.compress((head + line * (expanded_bytes // len(line) + 1)).encode()))


def pdf_bomb(path: Path, pages: int, chars_per_page: int) -> None:
    """A small PDF whose pages all draw one shared, compressed content stream of `chars_per_page` characters."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    resources = writer._add_object(
        DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})})
    )
    line = prose(730, 12)
    ops = ["BT /F1 9 Tf 12 TL 30 760 Td"] + [f"({line}) Tj T*"] * (chars_per_page // len(line) + 1) + ["ET"]
    stream = DecodedStreamObject()
    stream.set_data("\n".join(ops).encode("latin-1"))
    shared = writer._add_object(stream.flate_encode())
    for _ in range(pages):
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = resources
        page[NameObject("/Contents")] = shared
    buffer = io.BytesIO()
    writer.write(buffer)
    path.write_bytes(buffer.getvalue())


def many_member_zip(path: Path, members: int, first_seed: int = 1000) -> None:
    """A zip of `members` small, distinct Markdown documents."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(members):
            archive.writestr(f"notes/note-{i:04d}.md", prose(first_seed + i, 60))


def links_out(corpus: Path, outside: Path) -> tuple[str, str]:
    """A link to a file outside the corpus and a linked folder outside it; their names in the corpus."""
    (outside / "folder").mkdir(parents=True, exist_ok=True)
    (outside / "credentials.txt").write_text(f"{prose(740)}\naws_session = {OUTSIDE_FILE_SECRET}\n{prose(741)}")
    (outside / "folder" / "private.md").write_text(f"{prose(742)}\nnote {OUTSIDE_FOLDER_SECRET}\n{prose(743)}")
    os.symlink(outside / "credentials.txt", corpus / "linked-secret.txt")
    (corpus / "sub").mkdir(exist_ok=True)
    os.symlink(outside / "folder", corpus / "sub" / "linked-folder", target_is_directory=True)
    return "linked-secret.txt", "sub/linked-folder"


def short_documents(path: Path, records: int = 20) -> None:
    """A JSONL file whose documents are all too short to hold out as evaluation prompts (or to keep)."""
    path.write_text("".join(json.dumps({"text": f"IOC note {i}: see ticket."}) + "\n" for i in range(records)))


def hex_secrets(path: Path) -> None:
    """Hex credentials in a URL's password and under a key name (the file-hash exemption must not keep them)."""
    path.write_text(
        f"{prose(750)}\nReplica: https://admin:{URL_HEX_PASSWORD}@db.corp.internal/replica\n"
        f"cloudant_key: {CLOUDANT_HEX_KEY}\n{prose(751)}\n"
    )


def write_bad_corpus(corpus: Path, max_file_bytes: int, max_document_bytes: int) -> BadCorpus:
    """One of each bad input of issue 13 in `corpus` (links point into a sibling folder), plus good
    documents (a many-member zip) to train on. Bombs expand to 4x the limits given."""
    corpus.mkdir(parents=True, exist_ok=True)
    bad = BadCorpus(secrets=[CSV_ROW_SECRET, XML_TAG_SECRET, OUTSIDE_FILE_SECRET, OUTSIDE_FOLDER_SECRET])
    bad.secrets += [URL_HEX_PASSWORD, CLOUDANT_HEX_KEY]
    doc_id, reason = malformed_csv(corpus / "rows.csv")
    bad.skipped_records[doc_id] = reason
    broken_xml_with_secret_tag(corpus / "broken-tag.xml")
    bad.skipped["broken-tag.xml"] = "malformed XML"
    xml_gz_bomb(corpus / "bomb.xml.gz", 4 * max_file_bytes)
    bad.skipped["bomb.xml.gz"] = "max_file_bytes"
    for name in ("bomb.jsonl.gz", "bomb.csv.gz"):
        records_gz_bomb(corpus / name, 4 * max_file_bytes)
        bad.skipped[name] = "max_file_bytes"
    pdf_bomb(corpus / "bomb.pdf", pages=64, chars_per_page=max(1, 4 * max_document_bytes // 64))
    bad.skipped["bomb.pdf"] = "max_document_bytes"
    many_member_zip(corpus / "many.zip", 300)
    for name in links_out(corpus, corpus.parent / f"{corpus.name}-outside"):
        bad.skipped[name] = "symbolic link"
    short_documents(corpus / "short.jsonl")
    hex_secrets(corpus / "replica-notes.md")
    return bad
