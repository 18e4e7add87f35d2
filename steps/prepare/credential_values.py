"""Opaque values in a credential's position: `cloudant_key: <hex>`, `GITHUB_TOKEN=...`, `Authorization: Basic ...`.

`steps.prepare.redact` keeps a bare file hash (32 to 128 hex digits) as an indicator of compromise, even
where a token pattern hits it. Position decides instead: a value assigned to a name that says password, key,
token or secret (and not hash, digest or checksum) is a credential whatever its alphabet, so a hex password
is redacted like any other; `sha256: <hex>`, `MD5 <hex>` and lists of hashes stay.

Forms: `name = value`, `name: value`, `name := value`, `name => value` (quotes around either optional), an
HTTP header (`X-Api-Key: value`, `Authorization: Bearer value`), a command-line flag (`--token value`) and an
XML element (`<password>value</password>`).
"""

from __future__ import annotations

import re

Span = tuple[int, int, str]

# Found with `str.find` first (cheap on prose); the name around each hit is then checked part by part.
_HINT_WORDS = ("key", "secret", "token", "pass", "pwd", "pw", "auth", "credential", "contrase", "cookie", "session")
_NAME_CHARS = re.compile(r"[\w.\-]*")
_NAME_LIMIT = 80
_NAME_PARTS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_PASSWORD_PARTS = frozenset({"password", "passwd", "pass", "passphrase", "pwd", "pw", "contrasena", "contraseña"})
_KEY_PARTS = frozenset({"key", "apikey", "privkey", "accesskey", "secretkey"})
_TOKEN_PARTS = frozenset(
    {"token", "auth", "authorization", "authtoken", "credential", "credentials", "cookie", "session", "sessionid"}
)
_SECRET_PARTS = frozenset({"secret", "secrets"})
# A name with any of these parts labels an indicator or a public value, not a credential.
_INDICATOR_PARTS = frozenset(
    {"hash", "hashes", "md5", "sha", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3", "digest", "checksum"}
    | {"fingerprint", "thumbprint", "imphash", "ssdeep", "tlsh", "ioc", "iocs", "public", "pub", "pubkey"}
)
_ASSIGN = re.compile(r"""["'\]]{0,2}[ \t]*(?::=|=>|::|=|:)[ \t]*""")
_FLAG_GAP = re.compile(r"[ \t]+")
# Authorization schemes whose value is the credential itself.
_SCHEME = re.compile(r"(?i)(?:basic|bearer|token|apikey|sso-key)[ \t]+")
_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
_QUOTE = re.compile(r"""["'`]?""")
# An opaque value: a run of token characters ending at a delimiter, at least 16 long with a letter and a digit
# (hex keys, base64 and vendor tokens), or at least 8 long after an Authorization scheme.
_VALUE = re.compile(r"""[A-Za-z0-9+/=_\-~]+(?=$|[\s"'`,;)}\]&<])""")
_LETTER = re.compile(r"[A-Za-z]")
_DIGIT = re.compile(r"\d")


# Run-together names (`PGPASSWORD`, `githubtoken`) end in one of these; shorter words (`key`, `pass`) must
# stand alone, or `monkey` and `bypass` would count.
_SUFFIXES = (
    ("password", "password"),
    ("passwd", "password"),
    ("secret", "secret"),
    ("apikey", "api_key"),
    ("token", "token"),
)


def _kind(parts: set[str]) -> str | None:
    if parts & _INDICATOR_PARTS:
        return None
    for part in parts:
        for suffix, kind in _SUFFIXES:
            if part.endswith(suffix):
                return kind
    if parts & _PASSWORD_PARTS:
        return "password"
    if parts & _SECRET_PARTS:
        return "secret"
    if parts & _KEY_PARTS:
        return "api_key"
    if parts & _TOKEN_PARTS:
        return "token"
    return None


def _value_after(text: str, name_start: int, name_end: int) -> tuple[int, int, bool] | None:
    """(start, end, after_scheme) of the value assigned to the name at text[name_start:name_end], if any."""
    opener = text[name_start - 1] if name_start else ""
    if opener == "<" and text.startswith(">", name_end):
        at = name_end + 1
    elif text.startswith("--", name_start) and (gap := _FLAG_GAP.match(text, name_end)) and gap.end() < len(text):
        at = gap.end() if text[gap.end()] != "-" else -1
    elif assign := _ASSIGN.match(text, name_end):
        at = assign.end()
    else:
        return None
    if at < 0:
        return None
    scheme = _SCHEME.match(text, at) if text[name_start:name_end].lower() in _AUTH_HEADERS else None
    at = _QUOTE.match(text, scheme.end() if scheme else at).end()
    value = _VALUE.match(text, at)
    return (value.start(), value.end(), scheme is not None) if value else None


def _is_opaque(value: str, after_scheme: bool) -> bool:
    if after_scheme:
        return len(value) >= 8
    return len(value) >= 16 and _LETTER.search(value) is not None and _DIGIT.search(value) is not None


def credential_value_spans(text: str) -> list[Span]:
    """(start, end, type) of each opaque value in a credential's position, hex or not."""
    lowered = text.lower()
    spans: set[Span] = set()
    for word in _HINT_WORDS:
        at = lowered.find(word)
        while at != -1:
            name_end = _NAME_CHARS.match(text, at).end()
            name_start = at
            while name_start > max(at - _NAME_LIMIT, 0) and (
                text[name_start - 1].isalnum() or text[name_start - 1] in "_.-"
            ):
                name_start -= 1
            at = lowered.find(word, name_end)
            name = text[name_start:name_end].lstrip("-")
            kind = _kind({part.lower() for part in _NAME_PARTS.findall(name)} | {name.lower()})
            found = _value_after(text, name_start, name_end) if kind else None
            if found and _is_opaque(text[found[0] : found[1]], found[2]):
                spans.add((found[0], found[1], kind))
    return sorted(spans)
