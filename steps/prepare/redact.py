"""Secret redaction with Yelp's detect-secrets plugins, keeping indicators of compromise.

Each secret is replaced by a typed placeholder such as `<SECRET:aws_access_key>`;
only the counts per type leave this module, never the secret. The plugins'
own regular expressions find the secrets (we need spans to cut, while their
`analyze_string` yields bare values). Left out on purpose: `IPPublicDetector`
and the high-entropy string plugins, because IP addresses and file hashes are
the knowledge in a threat corpus, not leaks.
"""

from __future__ import annotations

import re
from collections import Counter

from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import CONFIG_DENYLIST_REGEX_TO_GROUP, QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

from steps.prepare.credential_values import credential_value_spans

Span = tuple[int, int, str]

_PLUGINS: tuple[tuple[str, type[RegexBasedDetector]], ...] = (
    ("aws_access_key", AWSKeyDetector),
    ("azure_storage_key", AzureStorageKeyDetector),
    ("ibm_cloud_key", IbmCloudIamDetector),
    ("ibm_cos_key", IbmCosHmacDetector),
    ("softlayer_key", SoftlayerDetector),
    ("cloudant_key", CloudantDetector),
    ("password_in_url", BasicAuthDetector),
    ("jwt", JwtTokenDetector),
    ("private_key", PrivateKeyDetector),
    ("github_token", GitHubTokenDetector),
    ("gitlab_token", GitLabTokenDetector),
    ("slack_token", SlackDetector),
    ("stripe_key", StripeDetector),
    ("twilio_key", TwilioKeyDetector),
    ("sendgrid_key", SendGridDetector),
    ("mailchimp_key", MailchimpDetector),
    ("npm_token", NpmDetector),
    ("pypi_token", PypiTokenDetector),
    ("openai_key", OpenAIDetector),
    ("discord_token", DiscordBotTokenDetector),
    ("telegram_token", TelegramBotTokenDetector),
    ("square_oauth", SquareOAuthDetector),
    ("artifactory_key", ArtifactoryDetector),
)


def _spans_whitespace(kind: str, pattern: re.Pattern) -> bool:
    # Assignment patterns (`ibm_cloud_iam_key = "..."`, the AWS secret-key one) cross spaces, so they cannot
    # run token by token; detect-secrets builds them with `build_assignment_regex`, whose first part is a lookbehind.
    return pattern.pattern.startswith("(?:(?<=\\W)|(?<=^))") or (kind == "aws_access_key" and "aws" in pattern.pattern)


_ALL = tuple((kind, pattern) for kind, plugin in _PLUGINS for pattern in plugin.denylist)
_TOKEN_PATTERNS = tuple(
    (k, p) for k, p in _ALL if not _spans_whitespace(k, p) and k not in ("private_key", "password_in_url")
)
_ASSIGNMENT_PATTERNS = tuple((k, p) for k, p in _ALL if _spans_whitespace(k, p))
_URL_AUTH = BasicAuthDetector.denylist[0]
_KEY_HEADERS = PrivateKeyDetector.denylist

# What detect-secrets lacks, written here:
# - Google API keys: no plugin covers any Google Cloud credential.
# - Bearer tokens that are not JWTs (opaque OAuth tokens in Authorization headers).
_EXTRA: tuple[tuple[str, re.Pattern], ...] = (("gcp_api_key", re.compile(r"AIza[0-9A-Za-z\-_]{35}")),)
_BEARER = re.compile(r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{16,}=*)")
# Issued tokens of every type above are at least 16 characters long (a few patterns also accept shorter
# strings no service issues): scanning only such runs keeps the scan fast on prose, where a pass of every
# plugin pattern over the whole text cost more than tokenizing it. A run can only match from its first
# character, so the look-behind (the same matches) spares the engine a try at every position inside a word.
_LONG_TOKEN = re.compile(r"(?<!\S)\S{16,}")


def _any_of(patterns: tuple[tuple[str, re.Pattern], ...]) -> re.Pattern:
    """One alternation of the patterns, each with its own flags: it matches in a window exactly when one of
    them does, so a window it rejects (nearly all of them, in prose) skips the per-pattern passes."""
    scoped = []
    for kind, pattern in patterns:
        if pattern.flags & ~(re.U | re.I | re.X | re.M | re.S):
            raise ValueError(f"{kind}: pattern flags {pattern.flags!r} cannot be scoped inside an alternation")
        flags = "".join(
            letter for flag, letter in ((re.I, "i"), (re.X, "x"), (re.M, "m"), (re.S, "s")) if pattern.flags & flag
        )
        scoped.append(f"(?{flags}:{pattern.pattern})" if flags else f"(?:{pattern.pattern})")
    return re.compile("|".join(scoped))


_TOKEN_CANDIDATE = _any_of(_TOKEN_PATTERNS + _EXTRA)
# The JWT plugin's pattern ends lazily, so its match stops before the signature: extend over it.
_JWT_TAIL = re.compile(r"[A-Za-z0-9\-_.+/=]*")
# The private-key plugin matches only the header line: the secret is the whole block.
_KEY_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|---- END SSH2 ENCRYPTED PRIVATE KEY ----")
_BLANK_LINE = re.compile(r"\n\s*\n")
# Keyword and assignment patterns run only on lines where a secret-sounding word is followed by an
# assignment or call (`password =`, `api_key:`, `Password(`), found with plain `str.find`.
_HINT_WORDS = ("key", "pw", "pass", "token", "secret", "contrase")
_HINT_TAIL = re.compile(r"""[\w-]*['"\]\[0-9]{0,4}\s*(?:[:=!(]|\.assign)""")
_PASSWORD_WORD = re.compile(r"(?i)pass|pwd|contrase")
_API_KEY_WORD = re.compile(r"(?i)key")
_AWS_WORD = re.compile(r"(?i)aws")
_CONFIG_LINE_START = re.compile(r"""\s*(?:export\s+|set\s+|[-*]\s+)?["']?[\w.\-]*""")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# A bare file hash (MD5, SHA-1, SHA-224, SHA-256, SHA-384, SHA-512) is an indicator, even when a token pattern
# hits it; in a credential's position (a URL's password, an assignment, a header) it is a secret all the same.
_HEX_WORD = re.compile(r"[0-9A-Fa-f]+")
_HASH_LENGTHS = {32, 40, 56, 64, 96, 128}


def _inside_hash(text: str, start: int, end: int) -> bool:
    left = start
    while left > 0 and text[left - 1].isalnum():
        left -= 1
    right = end
    while right < len(text) and text[right].isalnum():
        right += 1
    return right - left in _HASH_LENGTHS and _HEX_WORD.fullmatch(text, left, right) is not None


# Patterns whose only group is a prefix alternation (`(ghp|gho|...)_...`): the secret is the whole match.
_WHOLE_MATCH = {"github_token", "gitlab_token"}
_DELIMITERS = frozenset(" \t\n\"'=:")


def _match_span(kind: str, match: re.Match) -> tuple[int, int]:
    """The secret inside a match: the plugins put it in the last group when the pattern has groups."""
    if kind not in _WHOLE_MATCH:
        for index in range(match.re.groups, 0, -1):
            if match.group(index):
                return match.span(index)
    return match.span()


def _hinted_lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line where a secret-sounding word is followed by an assignment or a call."""
    lowered = text.lower()
    lines: set[tuple[int, int]] = set()
    for word in _HINT_WORDS:
        at = lowered.find(word)
        while at != -1:
            if _HINT_TAIL.match(lowered, at + len(word)):
                start = text.rfind("\n", 0, at) + 1
                end = text.find("\n", at)
                lines.add((start, len(text) if end == -1 else end))
            at = lowered.find(word, at + 1)
    return sorted(lines)


def _keyword_spans(text: str, line_start: int, line_end: int) -> list[Span]:
    """Secrets assigned to secret-sounding names: `password = "x"` anywhere, `password: x` as a config line."""
    line = text[line_start:line_end]
    spans = []
    for table, config_form in (
        (QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP, False),
        (CONFIG_DENYLIST_REGEX_TO_GROUP, True),
    ):
        for pattern, group in table.items():
            found = pattern.search(line)
            if not found or not found.group(group):
                continue
            start, end = found.span(group)
            if config_form:
                # Unquoted values count only on a line that starts with the name, and end at the first
                # space, so that prose such as "The password policy: rotate yearly" stays readable.
                if not _CONFIG_LINE_START.fullmatch(line, 0, found.start()):
                    continue
                end = start + len(found.group(group).split(None, 1)[0])
            before = line[:start]
            kind = (
                "aws_secret_key"
                if _AWS_WORD.search(before)
                else "password"
                if _PASSWORD_WORD.search(before)
                else "api_key"
                if _API_KEY_WORD.search(before)
                else "secret"
            )
            spans.append((line_start + start, line_start + end, kind))
    return spans


def _pattern_spans(
    kind: str, pattern: re.Pattern, text: str, start: int = 0, end: int | None = None, keep_hashes: bool = True
) -> list[Span]:
    """Secrets `pattern` finds; with `keep_hashes`, a hit inside a bare file hash is left as an indicator."""
    spans = []
    for match in pattern.finditer(text, start, len(text) if end is None else end):
        first, last = _match_span(kind, match)
        # Some patterns include their delimiters (`(?:\s|=|:|"|^)AKC...(?:\s|"|$)`): keep those in the text.
        while first < last and text[first] in _DELIMITERS:
            first += 1
        while last > first and text[last - 1] in _DELIMITERS:
            last -= 1
        if kind == "jwt":
            if not JwtTokenDetector.is_formally_valid(match.group()):
                continue
            last = _JWT_TAIL.match(text, last).end()
        elif kind == "private_key":
            dashes = text.rfind("-----", max(0, first - 10), first)
            first = dashes if dashes != -1 else first
            stop = _KEY_END.search(text, match.end()) or _BLANK_LINE.search(text, match.end())
            last = stop.end() if stop else len(text)
        if not (keep_hashes and _inside_hash(text, first, last)):
            spans.append((first, last, kind))
    return spans


def find_secrets(text: str) -> list[Span]:
    """(start, end, type) of every secret in `text`, overlapping spans merged."""
    spans: list[Span] = []
    for token in _LONG_TOKEN.finditer(text):
        # One character of context each side: some patterns start or end with `(?:\s|=|:|"|^)`.
        start, end = max(token.start() - 1, 0), min(token.end() + 1, len(text))
        if _TOKEN_CANDIDATE.search(text, start, end) is None:
            continue
        for kind, pattern in _TOKEN_PATTERNS + _EXTRA:
            spans += _pattern_spans(kind, pattern, text, start, end)
    # The patterns below match a value together with the name, URL or header that makes it a credential.
    for line_start, line_end in _hinted_lines(text):
        for kind, pattern in _ASSIGNMENT_PATTERNS:
            spans += _pattern_spans(kind, pattern, text, line_start, line_end, keep_hashes=False)
        spans += _keyword_spans(text, line_start, line_end)
    if "://" in text:
        spans += _pattern_spans("password_in_url", _URL_AUTH, text, keep_hashes=False)
    if "PRIVATE KEY" in text or "PuTTY-User-Key-File" in text:
        for pattern in _KEY_HEADERS:
            spans += _pattern_spans("private_key", pattern, text)
    if "earer" in text:
        spans += [
            (s, e, "bearer_token") for s, e, _ in _pattern_spans("bearer_token", _BEARER, text, keep_hashes=False)
        ]
    # A named plugin's type wins over the generic one where both find the same value.
    ranked = sorted([(s, 0, e, k) for s, e, k in spans] + [(s, 1, e, k) for s, e, k in credential_value_spans(text)])
    merged: list[Span] = []
    for start, _, end, kind in ranked:
        if merged and start < merged[-1][1]:
            last_start, last_end, last_kind = merged[-1]
            merged[-1] = (last_start, max(end, last_end), last_kind)
        else:
            merged.append((start, end, kind))
    return merged


def redact(text: str, redact_emails: bool = False) -> tuple[str, Counter]:
    """`text` with secrets (and e-mail addresses if asked) replaced by typed placeholders, and counts per type."""
    counts: Counter = Counter()
    spans = [(s, e, f"<SECRET:{k}>") for s, e, k in find_secrets(text)]
    if redact_emails:
        spans += [
            (m.start(), m.end(), "<PII:email>")
            for m in _EMAIL.finditer(text)
            if not any(s < m.end() and m.start() < e for s, e, _ in spans)
        ]
        spans.sort()
    if not spans:
        return text, counts
    parts, cursor = [], 0
    for start, end, placeholder in spans:
        parts.append(text[cursor:start])
        parts.append(placeholder)
        counts[placeholder[1:-1].split(":", 1)[1] if placeholder.startswith("<SECRET") else "email"] += 1
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts), counts
