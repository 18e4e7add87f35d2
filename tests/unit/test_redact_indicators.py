"""Indicators survive redaction: keys quoted from malware configuration, labelled hashes, IPs, domains, URLs.

Threat reports quote what they took apart (`RC4 key: <hex>`, `XOR key = 0x...`, `password_hash: <md5>`); those are
the knowledge a security team tunes a model on, not a leak of theirs. The hash and digest exemption holds in every
pass: a value whose name says hash, digest or checksum stays, whichever pattern sees it.
"""

from __future__ import annotations

import pytest

from steps.prepare.redact import redact
from tests.support.secret_formats import FORMATS, REPORT_INDICATORS, THREAT_REPORT


def test_the_threat_report_is_kept_whole() -> None:
    redacted, counts = redact(THREAT_REPORT)
    assert [line for line in redacted.splitlines() if "<SECRET" in line] == [], counts
    assert redacted == THREAT_REPORT


@pytest.mark.parametrize("indicator", REPORT_INDICATORS)
def test_each_indicator_survives_in_a_report_that_also_leaks_a_password(indicator: str) -> None:
    leak = FORMATS["adonet_connection_string"]
    redacted, counts = redact(f"{THREAT_REPORT}\n{leak.text}\n")
    assert indicator in redacted
    assert not any(secret in redacted for secret in leak.secrets) and counts == {"password": 1}


@pytest.mark.parametrize(
    "line",
    [
        "RC4 key: 6b3f9a2c7d4e1f08a9b0c1d2e3f40516",
        "rc4_key = '6b3f9a2c7d4e1f08a9b0c1d2e3f40516'",
        "The AES-256 key: 603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
        "XOR key = 0x3c7f9a21b4d8e605",
        '"xor_key": "0x3c7f9a21b4d8e605"',
        "password_hash: 5f4dcc3b5aa765d61d8327deb882cf99",
        "PASSWORD_HASH=5f4dcc3b5aa765d61d8327deb882cf99",
        '"password_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"',
        "api_key_digest = 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
        "secret_checksum: d41d8cd98f00b204e9800998ecf8427e",
    ],
)
def test_cipher_keys_and_named_hashes_stay(line: str) -> None:
    assert redact(line) == (line, {})


def test_an_application_key_is_still_a_secret_beside_a_cipher_key() -> None:
    text = "RC4 key: 6b3f9a2c7d4e1f08a9b0c1d2e3f40516\nSTRIPE_API_KEY=rk9x2Lq7Vb3Nm8Zt5Wc1Yh6D\n"
    redacted, counts = redact(text)
    assert "6b3f9a2c7d4e1f08a9b0c1d2e3f40516" in redacted and "rk9x2Lq7Vb3Nm8Zt5Wc1Yh6D" not in redacted
    assert counts == {"api_key": 1}
