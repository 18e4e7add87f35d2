"""Values in a credential's position: `password: x`, `DB_PASSWORD=x`, `"api_key": "..."`, `--db-password=x`, ...

The name decides. A name that clearly names a credential (password, passwd, pass, pwd, passphrase, secret and the
`*_key` names of detect-secrets' keyword list: api, auth, access, private, client, ...) makes any value a secret
where the position is unambiguous: quoted, an XML element, `NAME=value` without spaces (environment, query
string, connection string), a command-line flag, or a config line whose value is all that follows the name.
Other credential-ish names (`key`, `token`, `auth`, `session`, `cookie`) take only an opaque value: 16 or more
token characters with a letter and a digit, or 8 after an Authorization scheme. Prose stays: `Password: The
product stores ...` has words after the name, `password = getpass()` is code, `${DB_PASSWORD}` a placeholder.

Indicators are never credentials: a name with a part that says hash, digest, checksum, fingerprint or public, or
that names a cipher (`RC4 key: <hex>`, `xor_key`, `The AES key: ...`: keys quoted from malware configuration).

Every occurrence counts, and the scan is linear: each hint word is found with `str.find`, the name around it is
read once, and the search resumes after the value it read.
"""

from __future__ import annotations

import re
from typing import NamedTuple

Span = tuple[int, int, str]


class CredentialPosition(NamedTuple):
    name_start: int
    start: int
    end: int
    kind: str


_HINT_WORDS = ("key", "secret", "token", "pass", "pw", "auth", "credential", "contrase", "cookie", "session")
_NAME_CHARS = re.compile(r"[\w.\-]*")
_NAME_LIMIT = 80
_NAME_PARTS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_PASSWORD_PARTS = frozenset(
    {"password", "passwd", "pass", "passphrase", "pwd", "pw", "contrasena", "contraseña", "passwort", "motdepasse"}
)
# detect-secrets' keyword list names these `*_key`s; a bare `key` is too common a word to take a short value.
_KEY_QUALIFIERS = frozenset(
    {"api", "auth", "service", "account", "db", "database", "priv", "private", "client", "access", "secret"}
    | {"master", "signing", "encryption", "hmac", "license", "subscription"}
)
_KEY_PARTS = frozenset({"key", "apikey", "privkey", "accesskey", "secretkey"})
_TOKEN_PARTS = frozenset(
    {"token", "auth", "authorization", "authtoken", "credential", "credentials", "cookie", "session", "sessionid"}
)
_SECRET_PARTS = frozenset({"secret", "secrets"})
# A name with any of these parts labels an indicator or a public value, not a credential.
_INDICATOR_PARTS = frozenset(
    {"hash", "hashes", "hashed", "md5", "sha", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3", "digest"}
    | {"checksum", "fingerprint", "thumbprint", "imphash", "ssdeep", "tlsh", "ioc", "iocs", "public", "pub", "pubkey"}
)
# A name ending in one of these is about a credential (its file, length, policy), not one.
_NOT_A_VALUE_SUFFIXES = frozenset(
    {"id", "ids", "name", "names", "type", "file", "path", "dir", "url", "uri", "endpoint", "length", "len", "size"}
    | {"bits", "policy", "expiry", "expires", "expiration", "ttl", "lifetime", "age", "hint", "prompt", "label"}
    | {"field", "header", "format", "alg", "algorithm", "version", "count", "mode", "enabled", "required", "reset"}
    | {"change", "rotation", "strength", "min", "max", "regex", "pattern", "location", "env", "var", "ref", "arn"}
)
_CIPHER = re.compile(
    r"(?i)(?<![a-z])(?:rc4|rc5|rc6|xor|aes|3des|des|blowfish|twofish|chacha(?:20)?|salsa20|serpent|camellia|xtea)"
    r"(?![a-z])"
)
_PREVIOUS_WORD = re.compile(r"([\w\-]{1,24})[ \t]{1,4}$")
_SUFFIXES = (
    ("password", "password"),
    ("passwd", "password"),
    ("passphrase", "password"),
    ("secret", "secret"),
    ("apikey", "api_key"),
    ("token", "token"),
)
_ASSIGN = re.compile(r"""["'\]]{0,2}([ \t]{0,8})(:=|=>|::|=|:)([ \t]{0,8})""")
_FLAG_GAP = re.compile(r"[ \t]{1,8}")
_SCHEME = re.compile(r"(?i)(?:basic|bearer|token|apikey|sso-key)[ \t]+")
_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
_QUOTES = "\"'`"
_QUOTED_LIMIT = 1024
_UNQUOTED = re.compile(r"""[^\s"'`,;&<>]+""")
_TOKEN_VALUE = re.compile(r"[A-Za-z0-9+/=_\-~]+")
_DELIMITERS = frozenset(" \t\r\n\"'`,;)}]&<")
_LETTER = re.compile(r"[A-Za-z]")
_DIGIT = re.compile(r"\d")
_LINE_START = re.compile(r"""[ \t]*(?:export[ \t]+|set[ \t]+|[-*][ \t]+)?["']?""")
_REST_OF_LINE = re.compile(r"[ \t]*(?:[ \t]#[^\n]{0,256})?(?:\n|$)")
_PLACEHOLDER = re.compile(
    r"""(?ix)[*.?#_\-]+|x{3,}|<.*|\$.*|%\w+%?|\{\{.*|\{\w*\}|\[.*
    |null|none|nil|true|false|yes|no|on|off|undefined|empty|required|optional|redacted|removed|hidden|masked
    |secret|password|passwd|changeme|n/?a|tbd|todo|example|dummy|sample|placeholder|string|str|text|value
    |your[\w\-]*|[\w\-]*here"""
)
_CODE = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*[(\[].*|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def _names_a_cipher(text: str, name_start: int) -> bool:
    """Whether the word before the name names a cipher (`RC4 key: ...`, `The AES-256 key = ...`)."""
    previous = _PREVIOUS_WORD.search(text, max(0, name_start - 30), name_start)
    return previous is not None and _CIPHER.search(previous.group(1)) is not None


def _classify(name: str) -> tuple[str, bool] | None:
    """(type, strong) for a credential's name; strong names take short values. None for other names."""
    parts = {part.lower() for part in _NAME_PARTS.findall(name)}
    whole = name.lower()
    if parts & _INDICATOR_PARTS or _CIPHER.search(name):
        return None
    last = _NAME_PARTS.findall(name)[-1].lower() if parts else ""
    if last in _NOT_A_VALUE_SUFFIXES:
        return None
    aws = "aws" in parts
    for part in parts | {whole}:
        for suffix, kind in _SUFFIXES:
            if part.endswith(suffix):
                if aws and kind in ("secret", "api_key"):
                    return "aws_secret_key", True
                return kind, kind != "token"
    if parts & _PASSWORD_PARTS:
        return "password", True
    if parts & _SECRET_PARTS:
        return ("aws_secret_key" if aws else "secret"), True
    if parts & _KEY_PARTS:
        strong = bool(parts & _KEY_QUALIFIERS) or bool(parts & (_KEY_PARTS - {"key"}))
        return ("aws_secret_key" if aws and strong else "api_key"), strong
    if parts & _TOKEN_PARTS:
        return "token", False
    return None


def _is_opaque(value: str) -> bool:
    return (
        len(value) >= 16
        and _TOKEN_VALUE.fullmatch(value) is not None
        and _LETTER.search(value) is not None
        and _DIGIT.search(value) is not None
    )


def _is_short_secret(value: str, unquoted: bool) -> bool:
    return bool(value) and not _PLACEHOLDER.fullmatch(value) and not (unquoted and _CODE.fullmatch(value))


def _at_line_start(text: str, name_start: int) -> bool:
    line_start = text.rfind("\n", max(0, name_start - _NAME_LIMIT), name_start) + 1
    if line_start == 0 and name_start > _NAME_LIMIT:
        return False
    return _LINE_START.fullmatch(text, line_start, name_start) is not None


def _quoted(text: str, at: int) -> tuple[int, int] | None:
    close = text.find(text[at], at + 1, at + 1 + _QUOTED_LIMIT)
    if close == -1 or text.find("\n", at + 1, close) != -1:
        return None
    return at + 1, close


def _value(text: str, name_start: int, name_end: int, strong: bool) -> tuple[tuple[int, int] | None, int]:
    """The (start, end) of the secret assigned to the name at text[name_start:name_end], if any, and where the
    search for the next name goes on: past the value read, accepted or not, so that no run is read twice."""
    name = text[name_start:name_end]
    opener = text[name_start - 1] if name_start else ""
    if opener == "<" and text.startswith(">", name_end):  # <password>value</password>
        close = text.find("<", name_end + 1, name_end + 1 + _QUOTED_LIMIT)
        if close == -1 or not text.startswith("</", close) or text.find("\n", name_end, close) != -1:
            return None, name_end
        return ((name_end + 1, close) if _accepts(text[name_end + 1 : close], strong) else None), close
    flag = name.startswith("--")
    assign = _ASSIGN.match(text, name_end)
    if flag and not (assign and assign.group(2) == "="):
        gap = _FLAG_GAP.match(text, name_end)
        if not gap or gap.end() >= len(text) or text[gap.end()] == "-":
            return None, name_end
        at, tight = gap.end(), True
    elif assign:
        at = assign.end()
        tight = not assign.group(1) and not assign.group(3) and assign.group(2) == "="
    else:
        return None, name_end
    if name.lower() in _AUTH_HEADERS and (scheme := _SCHEME.match(text, at)):
        token = _TOKEN_VALUE.match(text, scheme.end())
        return ((token.span() if token and len(token.group()) >= 8 else None), token.end() if token else at)
    if at < len(text) and text[at] in _QUOTES:
        quoted = _quoted(text, at)
        if not quoted:
            return None, at + 1
        return (quoted if _accepts(text[quoted[0] : quoted[1]], strong) else None), quoted[1] + 1
    unquoted = _UNQUOTED.match(text, at)
    if not unquoted:
        return None, at
    start, end = unquoted.span()
    token = _TOKEN_VALUE.match(text, start)
    if token and _is_opaque(token.group()) and (token.end() == len(text) or text[token.end()] in _DELIMITERS):
        return token.span(), end
    if not strong or not _is_short_secret(text[start:end], unquoted=True):
        return None, end
    line_start_at = name_start - 1 if opener and opener in _QUOTES else name_start
    whole_line = _REST_OF_LINE.match(text, end) is not None and _at_line_start(text, line_start_at)
    return ((start, end) if tight or flag or whole_line else None), end


def _accepts(value: str, strong: bool) -> bool:
    return _is_opaque(value) or (strong and _is_short_secret(value, unquoted=False))


def _lowered(text: str) -> str:
    """`text` in lower case, position for position (`str.lower` lengthens a few characters, such as U+0130)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c if len(low := c.lower()) != 1 else low for c in text)


def credential_positions(text: str) -> list[CredentialPosition]:
    """Each value in a credential's position, with where its name starts."""
    lowered = _lowered(text)
    found: set[CredentialPosition] = set()
    for word in _HINT_WORDS:
        at = lowered.find(word)
        while at != -1:
            name_end = _NAME_CHARS.match(text, at).end()
            while name_end > at and text[name_end - 1] in ".-":
                name_end -= 1  # a sentence's full stop or a dash is not part of the name
            name_start = at
            while name_start > max(at - _NAME_LIMIT, 0) and (
                text[name_start - 1].isalnum() or text[name_start - 1] in "_.-"
            ):
                name_start -= 1
            resume = max(name_end, at + 1)
            name = text[name_start:name_end].lstrip("-")
            classified = _classify(name) if name else None
            if classified and _names_a_cipher(text, name_start):
                classified = None
            if classified:
                value, read_to = _value(text, name_start, name_end, classified[1])
                if value:
                    found.add(CredentialPosition(name_start, *value, classified[0]))
                resume = max(resume, read_to)
            at = lowered.find(word, resume)
    return sorted(found)


def credential_value_spans(text: str) -> list[Span]:
    """(start, end, type) of each value in a credential's position, hex or not."""
    return sorted({(p.start, p.end, p.kind) for p in credential_positions(text)})
