"""Credentials in the fixed formats of tools, which no detect-secrets plugin knows (see docs/secrets.md).

- a URL's password, the user empty or not (`redis://:pw@host`, `https://admin:Summer2023!@host`): detect-secrets'
  `BasicAuthDetector` needs a user and rejects `! $ & ' ( ) * + , ; =` in the password;
- command lines: `sshpass -p pw`, `mysql -ppw` (also mysqldump, mysqladmin), `curl -u user:pw`;
- `.netrc` lines (`machine h login u password pw`, one per line or the keywords on lines of their own);
- crypt(3) password hashes as htpasswd and /etc/shadow hold them (`$apr1$`, `$2y$`, `$5$`, `$6$`, yescrypt
  `$y$`, `{SHA}`): salted hashes of real passwords, unlike the bare file hashes a report quotes as indicators;
- an AWS secret access key without its name: 40 base64 characters beside an access key ID (a CSV pair, the
  same sentence) or after the word "secret". A 40-digit hex string is a SHA-1, not an AWS secret: it stays.

Every pattern is anchored on a literal (`://`, `sshpass`, `$`, ...) and reads a bounded window from it, so the
pass is linear in the text.
"""

from __future__ import annotations

import re

Span = tuple[int, int, str]

_WINDOW = 512  # how far a command's options or a URL's userinfo may run
_USERINFO = re.compile(r"[^\s:/?#\[\]@\"'<>]{0,256}:([^\s/?#\[\]@\"'<>]{1,256})@[\w\[]")
_SSHPASS_PASSWORD = re.compile(r"""(?<!\S)-p[ \t]*(?:'([^'\n]{1,256})'|"([^"\n]{1,256})"|([^\s'"]{1,256}))""")
_MYSQL = re.compile(r"\bmysql(?:dump|admin|import|show|check|slap)?\b")
_MYSQL_PASSWORD = re.compile(r"""(?<!\S)-p(?:'([^'\n]{1,256})'|"([^"\n]{1,256})"|([^\s'"-][^\s'"]{0,255}))""")
_CURL_USER = re.compile(r"""(?<!\S)(?:-u|--user)(?:[ \t]+|=)(['"]?)[^\s:'"]{0,256}:([^\s'"]{1,256})\1(?=\s|$)""")
_NETRC_BEFORE = re.compile(r"[ \t]*(?:(?:machine|login|account)[ \t]+\S+[ \t]+|default[ \t]+)*")
_NETRC_KEYWORD_LINE = re.compile(r"[ \t]*(?:machine|login|account|default)\b")
_NETRC_VALUE = re.compile(r"[ \t]+(\S{1,256})(?=[ \t]*$|[ \t]+(?:machine|login|account|macdef|default)\b)", re.M)
_CRYPT_HASH = re.compile(
    r"(?<![\w$])(?:\$(?:1|5|6|apr1|md5)\$(?:rounds=\d{1,9}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{22,86}"
    r"|\$2[abxy]?\$\d\d\$[./0-9A-Za-z]{53}"
    r"|\$(?:y|gy|7)\$[./0-9A-Za-z]{1,64}\$[./0-9A-Za-z]{1,86}\$[./0-9A-Za-z]{43})(?![./0-9A-Za-z])"
    r"|\{S?SHA\}[A-Za-z0-9+/]{27,80}={0,2}"
)
_AWS_SECRET_SHAPE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_KEY_ID = re.compile(r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_AWS_NEAR = 256  # an access key ID this close makes a 40-character base64 word its secret


def _group_span(match: re.Match) -> tuple[int, int]:
    for index in range(match.re.groups, 0, -1):
        if match.group(index):
            return match.span(index)
    return match.span()


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start, start + _WINDOW)
    return min(len(text), start + _WINDOW) if end == -1 else end


def _anchored(text: str, anchor: str, pattern: re.Pattern, kind: str) -> list[Span]:
    """Each `pattern` hit in the rest of the line after each `anchor`, the window bounded."""
    spans, at = [], text.find(anchor)
    while at != -1:
        stop = _line_end(text, at)
        for match in pattern.finditer(text, at + len(anchor), stop):
            spans.append((*_group_span(match), kind))
        at = text.find(anchor, stop)
    return spans


def _url_passwords(text: str) -> list[Span]:
    spans, at = [], text.find("://")
    while at != -1:
        match = _USERINFO.match(text, at + 3, min(len(text), at + 3 + _WINDOW))
        if match:
            spans.append((*match.span(1), "password_in_url"))
        at = text.find("://", at + 3)
    return spans


def _mysql_passwords(text: str) -> list[Span]:
    spans, at = [], 0
    while found := _MYSQL.search(text, at):
        stop = _line_end(text, found.end())
        spans += [(*_group_span(m), "password") for m in _MYSQL_PASSWORD.finditer(text, found.end(), stop)]
        at = max(stop, found.end())
    return spans


def _netrc_passwords(text: str) -> list[Span]:
    spans, at = [], text.find("password")
    while at != -1:
        line_start = text.rfind("\n", max(0, at - _WINDOW), at) + 1
        if line_start or at < _WINDOW:
            before = text[line_start:at]
            keywords_before = _NETRC_BEFORE.fullmatch(before) is not None
            previous_start = text.rfind("\n", max(0, line_start - 1 - _WINDOW), max(line_start - 1, 0)) + 1
            after_keyword_line = line_start > 0 and _NETRC_KEYWORD_LINE.match(text, previous_start, line_start)
            if keywords_before and (before.strip() or after_keyword_line):
                value = _NETRC_VALUE.match(text, at + len("password"), _line_end(text, at))
                if value:
                    spans.append((*value.span(1), "password"))
        at = text.find("password", at + len("password"))
    return spans


def _aws_secret_keys(text: str) -> list[Span]:
    """Looked for only near an access key ID or after the word "secret": windows of bounded size around each."""
    windows = [(max(0, m.start() - _AWS_NEAR), m.end() + _AWS_NEAR) for m in _AWS_KEY_ID.finditer(text)]
    for word in ("ecret", "ECRET"):  # "secret", "Secret", "SECRET", found with str.find (a regex is 15x slower)
        at = text.find(word)
        while at != -1:
            windows.append((at + len(word), at + len(word) + 64 + 40))
            at = text.find(word, at + len(word))
    spans: list[Span] = []
    reached = 0
    for start, end in sorted(windows):
        for match in _AWS_SECRET_SHAPE.finditer(text, max(start, reached), min(end, len(text))):
            if not _HEX.fullmatch(match.group()):  # a 40-digit hex string is a SHA-1: an indicator
                spans.append((*match.span(), "aws_secret_key"))
        reached = max(reached, end)
    return spans


def credential_format_spans(text: str) -> list[Span]:
    """(start, end, type) of each credential in one of the tool formats above."""
    spans = _url_passwords(text) if "://" in text else []
    if "sshpass" in text:
        spans += _anchored(text, "sshpass", _SSHPASS_PASSWORD, "password")
    if "mysql" in text:
        spans += _mysql_passwords(text)
    if "curl" in text:
        spans += _anchored(text, "curl", _CURL_USER, "password")
    if "password" in text:
        spans += _netrc_passwords(text)
    if "$" in text or "SHA}" in text:
        spans += [(*m.span(), "password_hash") for m in _CRYPT_HASH.finditer(text)]
    spans += _aws_secret_keys(text)
    return spans
