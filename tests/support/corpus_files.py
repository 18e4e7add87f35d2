"""Small corpus files of every supported format, generated in a test's tmp folder (no binary fixtures)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import random
import zipfile
from pathlib import Path

WORDS = (
    "actor loader beacon persistence registry lateral credential dump exfiltration implant staging "
    "phishing macro payload scheduled task service token privilege escalation kernel driver rootkit "
    "command control domain fronting proxy tunnel webshell backdoor ransomware encryptor wiper "
    "sandbox evasion obfuscation packer dropper downloader stealer keylogger screenshot clipboard "
    "network share backup shadow copy deletion detection rule sigma yara hunting telemetry endpoint"
).split()


def prose(seed: int, words: int = 80) -> str:
    """Distinct pseudo-report text: different seeds share almost no word 5-grams."""
    rng = random.Random(seed)
    return f"Report {seed}. " + " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def pdf_bytes(lines: list[str], password: str | None = None) -> bytes:
    """A one-page PDF showing `lines` in Helvetica, optionally encrypted with a user password."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
    ops = ["BT /F1 9 Tf 12 TL 30 760 Td"] + [f"({line}) Tj T*" for line in lines] + ["ET"]
    stream = DecodedStreamObject()
    stream.set_data("\n".join(ops).encode("latin-1"))
    page[NameObject("/Contents")] = writer._add_object(stream)
    if password:
        writer.encrypt(password)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


JWT = _b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64({"sub": "canary"}) + ".Zq3CanarySignatureXyZ0123456789abcdEFGH"
# Each canary value is unique text that must never reach the shards, the report or the card.
CANARIES = {
    "aws_access_key": "aws_access_key_id = AKIAQCANARY7EXAMPLE1",
    "aws_secret_key": "aws_secret_access_key = wJalrCanaryK7MDENGbPxRfiCYEXAMPLEKEY99",
    "gcp_api_key": "maps key AIzaSyQCanary0123456789abcdefghijklmnop",
    "github_token": "token ghp_QCanaryCanaryCanaryCanaryCanary123456",
    "slack_token": "hook xoxb-123456789012-QCanarySlackBot",
    "private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEQCanaryPrivateKeyBody0123\n-----END RSA PRIVATE KEY-----",
    "jwt": f"session {JWT}",
    "bearer_token": "Authorization: Bearer QCanaryOpaqueBearer0123456789",
    "password_in_url": "mirror https://backup:QCanaryUrlPw77@files.example.net/dump",
    "password": "db_password = QCanaryConfigPw88",
    "api_key": 'api_key: "QCanaryGenericApiKey0123456789"',
    "stripe_key": "billing sk_live_QCanaryStripe01234567890 in use",
    "artifactory_key": "repo token AKCpQCanaryArtifactory0123456789abcdefXYZ for builds",
}
CANARY_VALUES = [
    "AKIAQCANARY7EXAMPLE1",
    "wJalrCanaryK7MDENGbPxRfiCYEXAMPLEKEY99",
    "AIzaSyQCanary",
    "ghp_QCanary",
    "QCanarySlackBot",
    "QCanaryPrivateKeyBody",
    "Zq3CanarySignature",
    _b64({"sub": "canary"}),
    "QCanaryOpaqueBearer",
    "QCanaryUrlPw77",
    "QCanaryConfigPw88",
    "QCanaryGenericApiKey",
    "QCanaryStripe",
    "QCanaryArtifactory",
]
IOCS = [
    "185.220.101.47",
    "c2.evil-updates.example",
    "https://c2.evil-updates.example/gate.php",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "d41d8cd98f00b204e9800998ecf8427e",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "CVE-2024-3094",
    "CWE-79",
    "T1059.001",
]

STIX_BUNDLE = {
    "type": "bundle",
    "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
    "objects": [
        {
            "type": "attack-pattern",
            "id": "attack-pattern--7e150503-88e7-4861-866b-ff1ac82c4475",
            "name": "Spearphishing Attachment",
            "description": prose(900),
            "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "initial-access"}],
        },
        {"type": "malware", "id": "malware--1", "name": "QakBot", "is_family": True, "description": prose(901)},
        {"type": "intrusion-set", "id": "intrusion-set--2", "name": "APT29", "description": prose(902)},
        {"type": "relationship", "id": "relationship--3", "relationship_type": "uses"},
    ],
}

CWE_XML = (
    '<?xml version="1.0"?><Weakness_Catalog xmlns="http://cwe.mitre.org/cwe-7"><Weaknesses>'
    '<Weakness ID="79" Name="Cross-site Scripting" Abstraction="Base" Status="Stable">'
    f"<Description>{prose(903)}</Description></Weakness></Weaknesses></Weakness_Catalog>"
)


def write_good_corpus(root: Path) -> dict[str, str]:
    """One file of every format (plain, gzipped and zipped); returns the expected document id per format."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text(prose(1))
    (root / "docs").mkdir()
    (root / "docs" / "guide.md").write_text("# Guide\n\n" + prose(2))
    (root / "docs" / "rules.rst").write_text("Rules\n=====\n\n" + prose(3))
    (root / "page.html").write_text(
        "<html><head><script>var tracking = 'SCRIPTMARKER';</script></head><body>"
        "<nav><a href='/'>Home</a> | <a href='/about'>NAVMARKER</a></nav>"
        f"<article><h1>Threat brief</h1><p>{prose(4)}</p><p>{prose(5)}</p></article>"
        "<footer>FOOTERMARKER copyright</footer></body></html>"
    )
    (root / "records.json").write_text(json.dumps([{"title": "first", "text": prose(6)}, {"text": prose(7)}]))
    (root / "stream.jsonl").write_text("\n".join(json.dumps({"text": prose(8 + i)}) for i in range(2)))
    (root / "table.csv").write_text(f'id,body\n1,"{prose(10)}"\n2,"{prose(11)}"\n')
    (root / "report.pdf").write_bytes(pdf_bytes([prose(12, 12) for _ in range(1)] + [prose(13, 12), prose(14, 12)]))
    (root / "bundle.json").write_text(json.dumps(STIX_BUNDLE))
    (root / "cwe.xml").write_text(CWE_XML)
    (root / "notes2.txt.gz").write_bytes(gzip.compress(prose(15).encode()))
    (root / "stream2.jsonl.gz").write_bytes(gzip.compress(json.dumps({"text": prose(16)}).encode()))
    with zipfile.ZipFile(root / "archive.zip", "w") as archive:
        archive.writestr("inner/brief.md", prose(17))
        archive.writestr("inner/more.jsonl", json.dumps({"text": prose(18)}))
    return {
        "text": "notes.txt",
        "markdown": "docs/guide.md",
        "rst": "docs/rules.rst",
        "html": "page.html",
        "json": "records.json#0",
        "jsonl": "stream.jsonl#1",
        "csv": "table.csv#0",
        "pdf": "report.pdf",
        "stix": "bundle.json#malware--1",
        "cwe_xml": "cwe.xml#CWE-79",
        "text.gz": "notes2.txt.gz",
        "jsonl.gz": "stream2.jsonl.gz#0",
        "zip": "archive.zip!inner/brief.md",
    }


def write_bad_files(root: Path) -> dict[str, str]:
    """Every kind of unreadable file; returns the expected reason fragment per file name."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "binary.txt").write_bytes(b"MZ\x90\x00\x03\x00\x00\x00" * 64)
    noise = random.Random(52)
    (root / "noise.txt").write_bytes(bytes(noise.randrange(1, 256) for _ in range(16384)))
    (root / "empty.md").write_bytes(b"")
    (root / "truncated.txt.gz").write_bytes(gzip.compress(prose(50).encode() * 20)[:-30])
    (root / "broken.json").write_text('{"text": "unterminated')
    (root / "encrypted.pdf").write_bytes(pdf_bytes([prose(51, 10)], password="s3cret"))
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage without xref\n")
    (root / "truncated.xml").write_text(CWE_XML[:150])
    return {
        "binary.txt": "binary content",
        "noise.txt": "not text in any encoding",
        "empty.md": "empty file",
        "truncated.txt.gz": "",
        "broken.json": "malformed JSON",
        "encrypted.pdf": "encrypted PDF",
        "broken.pdf": "PDF",
        "truncated.xml": "XMLSyntaxError",
    }
