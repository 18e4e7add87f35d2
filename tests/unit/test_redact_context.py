"""A hex string is a secret or an indicator by its position: credentials are redacted, file hashes stay."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from pathlib import Path

import pytest

from steps.config import DataConfig
from steps.formats.blocks import load_blocks
from steps.formats.tokenizer_folder import load_tokenizer
from steps.prepare.pipeline import run_prepare
from steps.prepare.redact import redact
from tests.support.corpus_files import prose


def _hex(label: str, digits: int) -> str:
    """A distinct hex string of a file hash's length (32, 40, 64 or 128 digits)."""
    return hashlib.sha512(label.encode()).hexdigest()[:digits]


SECRET_HEX = _hex("secret", 64)
HASH_HEX = _hex("indicator", 64)

# Each line puts the hex string where a credential goes; the expected placeholder type follows.
CREDENTIAL_POSITIONS = {
    "url_password": (f"replica https://admin:{SECRET_HEX}@db.corp.internal/prod", "password_in_url"),
    "cloudant_assignment": (f"cloudant_key: {SECRET_HEX}", "cloudant_key"),
    "yaml_token": (f"token: {_hex('yaml', 40)}", "token"),
    "env_token": (f"export GITHUB_TOKEN={_hex('env', 40)}", "token"),
    "json_secret": (f'{{"client_secret": "{_hex("json", 32)}"}}', "secret"),
    "api_key_header": (f"X-API-Key: {_hex('header', 32)}", "api_key"),
    "bearer_header": (f"Authorization: Bearer {_hex('bearer', 64)}", "bearer_token"),
    "basic_header": (f"Authorization: Basic {_hex('basic', 40)}", "token"),
    "cli_flag": (f"tool sync --password {_hex('flag', 32)} --verbose", "password"),
    "xml_element": (f"<config><password>{_hex('xml', 128)}</password></config>", "password"),
    "query_string": (f"GET /v1/export?access_token={_hex('query', 40)}&page=2", "token"),
    "camel_case": (f'authToken = "{_hex("camel", 64)}";', "token"),
    "assignment": (f"db_password = {_hex('assign', 32)}", "password"),
    "run_together_env": (f"PGPASSWORD={_hex('pg', 40)} psql -h db", "password"),
}

# Each line names the hex string as a hash or lists it as an indicator.
INDICATOR_POSITIONS = {
    "sha256_label": f"sha256: {HASH_HEX}",
    "md5_space": f"MD5 {_hex('md5', 32)}",
    "sha1_equals": f"SHA1={_hex('sha1', 40)}",
    "hash_field": f'"file_hash": "{HASH_HEX}"',
    "key_hash": f"key_hash: {HASH_HEX}",
    "bullet_list": f"Hashes:\n- {HASH_HEX}\n- {_hex('md5', 32)}\n- {_hex('sha512', 128)}",
    "csv_row": f"indicator_type,value\nsha256,{HASH_HEX}",
    "prose": f"The keylogger dropped {HASH_HEX} into the token cache folder.",
    "fingerprint": f"Certificate fingerprint: {_hex('fp', 40)}",
    "word_ending_in_pass": f"UAC bypass: {_hex('uac', 64)}",
    "dotnet_assembly": "System.Web, Version=4.0.0.0, PublicKeyToken=b03f5f7f11d50a3a",
    # Words, not values, after a credential's name.
    "token_words": "The stealer reads token= token registry keylogger output",
    "auth_scheme_words": "Authorization: token based, rotated by the helpdesk",
    "key_path": r"Run key: HKLM\Software\Microsoft\Windows\CurrentVersion\Run",
}


@pytest.mark.parametrize("name", sorted(CREDENTIAL_POSITIONS))
def test_hex_in_a_credential_position_is_redacted(name: str) -> None:
    line, kind = CREDENTIAL_POSITIONS[name]
    (secret,) = re.findall(r"[0-9a-f]{32,}", line)
    text = f"{prose(1, 20)}\n{line}\n{prose(2, 20)}"
    redacted, counts = redact(text)
    assert secret not in redacted, redacted
    assert counts == {kind: 1} and f"<SECRET:{kind}>" in redacted, (counts, redacted)
    assert prose(1, 20) in redacted and prose(2, 20) in redacted  # only the value goes


@pytest.mark.parametrize("name", sorted(INDICATOR_POSITIONS))
def test_hex_in_an_indicator_position_stays(name: str) -> None:
    text = f"{prose(3, 20)}\n{INDICATOR_POSITIONS[name]}\n{prose(4, 20)}"
    assert redact(text) == (text, {})


def test_one_document_with_both_keeps_the_hash_and_drops_the_password() -> None:
    text = f"Dropper sha256: {HASH_HEX}\nIt exfiltrates to https://svc:{SECRET_HEX}@10.0.0.5/upload\n"
    redacted, counts = redact(text)
    assert HASH_HEX in redacted and SECRET_HEX not in redacted
    assert counts == {"password_in_url": 1}


def test_prepared_dataset_and_console_hold_no_hex_credential_and_keep_the_hashes(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, (line, _) in enumerate(CREDENTIAL_POSITIONS.values()):
        (corpus / f"config-{i}.md").write_text(f"{prose(500 + i, 60)}\n{line}\n{prose(600 + i, 60)}")
    iocs = "\n".join(INDICATOR_POSITIONS.values())
    (corpus / "iocs.md").write_text(f"{prose(700, 60)}\n{iocs}\n{prose(701, 60)}")
    data = DataConfig(corpus=str(corpus), min_chars=40, vocab_size=300, block_size=32, num_proc=1)
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        run_prepare(data, tmp_path / "out")
    dataset = tmp_path / "out" / "dataset"
    tokenizer = load_tokenizer(tmp_path / "out" / "tokenizer")
    decoded = [tokenizer.decode(load_blocks(dataset / side).reshape(-1).tolist()) for side in ("train", "validation")]
    texts = [*decoded, console.getvalue(), *(p.read_text() for p in dataset.glob("*.json*"))]
    for line, _ in CREDENTIAL_POSITIONS.values():
        (secret,) = re.findall(r"[0-9a-f]{32,}", line)
        assert not any(secret in text for text in texts), line
    assert HASH_HEX in "".join(decoded) and _hex("sha512", 128) in "".join(decoded)
