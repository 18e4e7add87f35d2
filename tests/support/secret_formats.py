"""Credentials in every format prepare must redact, and threat-report text whose indicators it must keep.

The values are made up, drawn from a seeded generator so that none is a sequence or a dictionary word, in the
exact shape each issuer documents (prefix, alphabet, length). `FORMATS` names each format as `docs/secrets.md`
does; `THREAT_REPORT` is real-looking report prose whose every indicator (IPs, domains, URLs, hashes, keys
quoted from malware configuration) must survive redaction unchanged.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

_RNG = random.Random(31)


def _draw(alphabet: str, n: int) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))


_ALNUM = string.ascii_letters + string.digits
_URLSAFE = _ALNUM + "-_"
_B64 = _ALNUM + "+/"
_HEX = "0123456789abcdef"
_CRYPT = _ALNUM + "./"


@dataclass(frozen=True)
class SecretSample:
    text: str  # a line or block as it appears in a document
    secrets: tuple[str, ...]  # what must not survive redaction


AKIA = "AKIA" + _draw(string.ascii_uppercase + "234567", 16)
AWS_SECRET = _draw(_B64, 40)
PASSWORD = "Summer2023!"

FORMATS: dict[str, SecretSample] = {}


def _add(name: str, text: str, *secrets: str) -> None:
    FORMATS[name] = SecretSample(text, secrets)


HF_TOKEN = "hf_" + _draw(string.ascii_letters, 34)
GITHUB_PAT = "github_pat_" + _draw(_ALNUM + "_", 82)
_add("huggingface_token", f"export HF_HOME=/data; login with {HF_TOKEN}", HF_TOKEN)
_add("github_fine_grained_pat", f"git clone https://{GITHUB_PAT}@github.com/o/r", GITHUB_PAT)
_add("anthropic_key", f"client = Anthropic() # {(ant := 'sk-ant-api03-' + _draw(_URLSAFE, 93) + 'AA')}", ant)
GOCSPX = "GOCSPX-" + _draw(_URLSAFE, 28)
_add("google_oauth_client_secret", f"The desktop app ships {GOCSPX} in its bundle", GOCSPX)
_add("google_oauth_access_token", f"curl -H 'x-goog: {(ya29 := 'ya29.a0' + _draw(_URLSAFE, 150))}' https://x", ya29)
XAPP = f"xapp-1-A0{_draw(string.ascii_uppercase + string.digits, 9)}-{_draw(string.digits, 13)}-{_draw(_HEX, 64)}"
_add("slack_app_token", f"socket mode with {XAPP}", XAPP)
_add(
    "discord_webhook",
    "The stealer posts to https://discord.com/api/webhooks/1187463291047593062/"
    f"{(hook := _draw(_URLSAFE, 68))} every minute",
    hook,
)
_add(
    "azure_sas_signature",
    "https://acct.blob.core.windows.net/backups/db.bak?sv=2022-11-02&ss=b&srt=co&sp=rl&se=2024-05-01T00:00:00Z"
    f"&spr=https&sig={(sig := _draw(_ALNUM, 40) + '%2B' + _draw(_ALNUM, 2) + '%3D')}",
    sig,
)
_add("aws_secret_key_in_prose", f"They used the key pair {AKIA} / {AWS_SECRET} from the leaked laptop.", AWS_SECRET)
_add("aws_secret_key_csv_pair", f"Access key ID,Secret access key\n{AKIA},{AWS_SECRET}", AWS_SECRET)
REDIS_PASSWORD = "r3dis" + _draw(_ALNUM, 6)
_add("redis_url_without_user", f"broker_url = redis://:{REDIS_PASSWORD}@cache.internal:6379/0", REDIS_PASSWORD)
_add("url_password_with_symbols", f"mirror https://admin:{PASSWORD}@files.corp.example/dump", PASSWORD)
_add("adonet_connection_string", f"Server=db01;Database=app;User Id=sa;Password={PASSWORD};Encrypt=true", PASSWORD)
_add("jdbc_url", f"jdbc:mysql://db01:3306/app?user=app&password={PASSWORD}&useSSL=true", PASSWORD)
_add("xml_element_short", "<Credentials><Username>svc</Username><Password>hunter2</Password></Credentials>", "hunter2")
_add("json_pass", '{"user": "svc", "pass": "Tr0ub4dor"}', "Tr0ub4dor")
_add("ansible_become_pass", f"ansible_user: deploy\nansible_become_pass: {PASSWORD}", PASSWORD)
_add("cli_flag_with_equals", f"./migrate --db-password={PASSWORD} --host db01", PASSWORD)
_add("sshpass", f"sshpass -p '{PASSWORD}' ssh root@10.0.0.5 uptime", PASSWORD)
_add("mysql_attached_password", f"mysql -u root -p{PASSWORD} app < dump.sql", PASSWORD)
_add("curl_user", f"curl -u admin:{PASSWORD} https://jenkins.internal/api/json", PASSWORD)
_add("netrc", f"machine api.example.com login alice password {PASSWORD}", PASSWORD)
_add("netrc_multiline", f"machine git.corp.example\n  login deploy\n  password {PASSWORD}\n", PASSWORD)
APR1, BCRYPT = "$apr1$" + _draw(_CRYPT, 8) + "$" + _draw(_CRYPT, 22), "$2y$05$" + _draw(_CRYPT, 53)
_add("htpasswd_apr1", f"alice:{APR1}\nbob:{BCRYPT}", APR1, BCRYPT)
_add(
    "shadow_sha512_crypt",
    f"root:{(shadow := '$6$' + _draw(_CRYPT, 16) + '$' + _draw(_CRYPT, 86))}:19448:0:99999:7:::",
    shadow,
)
_add(
    "encrypted_private_key",
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
    f"{(pkcs8 := _draw(_B64, 64))}\n{_draw(_B64, 40)}==\n-----END ENCRYPTED PRIVATE KEY-----",
    pkcs8,
)
_add(
    "putty_key_v3",
    "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: eddsa-key-20240101\nPublic-Lines: 2\n"
    f"AAAAC3NzaC1lZDI1NTE5AAAAI{_draw(_B64, 40)}\n{_draw(_B64, 20)}\nPrivate-Lines: 1\n"
    f"{(putty := _draw(_B64, 44))}\nPrivate-MAC: {_draw(_HEX, 64)}",
    putty,
)
_add(
    "legacy_encrypted_pem_unterminated",
    "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,"
    f"{_draw('0123456789ABCDEF', 32)}\n\n{(pem := _draw(_B64, 64))}\n{_draw(_B64, 64)}\n",
    pem,
)

# Every credential on a line, not the first only; short values where the name says password.
EVERY_OCCURRENCE: dict[str, SecretSample] = {
    "json_two_passwords": SecretSample(
        '{"db": {"password": "a"}, "smtp": {"password": "Summer2023!"}}', ("Summer2023!",)
    ),
    "env_two_passwords": SecretSample("DB_PASSWORD=x9 SMTP_PASSWORD=Summer2023! ./run.sh", ("x9", "Summer2023!")),
    "yaml_short_passwords": SecretSample("db:\n  password: hunter2\nsmtp:\n  pass: s3cret!\n", ("hunter2", "s3cret!")),
    "two_tokens_one_line": SecretSample(
        f"old {(a := 'ghp_' + _draw(_ALNUM, 36))} new {(b := 'ghp_' + _draw(_ALNUM, 36))}", (a, b)
    ),
    "two_api_keys_one_line": SecretSample(
        f'{{"api_key": "{(k1 := _draw(_ALNUM, 24))}", "backup_api_key": "{(k2 := _draw(_ALNUM, 24))}"}}', (k1, k2)
    ),
    "two_urls_one_line": SecretSample(
        "primary https://u:pw1@a.example/x and replica https://u:Pw2long@b.example/y", ("pw1", "Pw2long")
    ),
}

# Malware-analysis prose and configuration dumps: everything here is knowledge, nothing is redacted.
MD5, SHA1, SHA256 = _draw(_HEX, 32), _draw(_HEX, 40), _draw(_HEX, 64)
RC4_KEY, AES_KEY, XOR_KEY = _draw(_HEX, 32), _draw(_HEX, 64), "0x" + _draw(_HEX, 16)
IMPHASH, JA3 = _draw(_HEX, 32), _draw(_HEX, 32)
THREAT_REPORT = "\n".join(
    [
        f"The loader decrypts its configuration with the RC4 key: {RC4_KEY} before contacting 185.220.101.47:443.",
        f"Strings are XOR-encoded; XOR key = {XOR_KEY}, and the second stage uses XOR key 0x5A.",
        f"The AES key: {AES_KEY} (AES-256-CBC, IV 000102030405060708090a0b0c0d0e0f) protects the payload.",
        f'Extracted config: {{"c2": "hxxps://cdn.evil-updates[.]example/api/v2", "rc4_key": "{RC4_KEY}", "sleep": 60}}',
        f"password_hash: {MD5}",
        f"SHA256: {SHA256}",
        f"MD5 {MD5} / SHA1 {SHA1} / imphash: {IMPHASH}",
        f"The implant's TLS client hello matches JA3 {JA3}.",
        "ssdeep: 3072:Zx9bT4kQ2mR7vW1nL8pY5cH3gF6dJ0sA:Zx9bT4kQ2mR7vW1nL8pY5cH3g",
        "Beacon config: C2Server cdn.evil-updates.example,/jquery-3.3.1.min.js; watermark 305419896; jitter 37",
        r"It creates the mutex Global\MSCTF.Asm.{5f7e0a21-9c3b-4d8e-a1f2-7b6c5d4e3f20} and the Run key "
        r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run\OneDriveUpdater.",
        "Victims paid to bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh and 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa.",
        "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)",
        "Exploitation of CVE-2024-3094 (CWE-506) maps to T1195.002; persistence via T1547.001.",
        "The dropper fetches https://files.evil-updates.example/dl/update.bin?id=7731&arch=x64 over port 8443.",
        "Session cookies are stolen from %APPDATA%\\Mozilla\\Firefox\\Profiles and the token cache.",
        "The stealer reads the password store of 42 browsers and the keychain of macOS.",
        "Password spraying against OWA: 3 passwords per account per hour.",
        "Certificate thumbprint: " + _draw(_HEX, 40),
        "The sample's PublicKeyToken=b03f5f7f11d50a3a and RSA public key modulus starts 00c3a1.",
        "Authorization: token based, rotated by the helpdesk.",
        '$s1 = "keylogger_stealer" ascii wide',
    ]
)
# The indicators above, each of which must appear verbatim in the redacted report.
REPORT_INDICATORS = (
    RC4_KEY,
    AES_KEY,
    XOR_KEY,
    MD5,
    SHA1,
    SHA256,
    IMPHASH,
    JA3,
    "185.220.101.47:443",
    "hxxps://cdn.evil-updates[.]example/api/v2",
    "cdn.evil-updates.example",
    "305419896",
    "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
    "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
    "https://files.evil-updates.example/dl/update.bin?id=7731&arch=x64",
    "b03f5f7f11d50a3a",
)
