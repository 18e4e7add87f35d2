"""Secret redaction with Yelp's detect-secrets plugins, keeping indicators of compromise.

Each secret is replaced by a typed placeholder such as `<SECRET:aws_access_key>`; only the counts per type
leave this module, never the secret. Four passes find them (docs/secrets.md lists which catches each format):
- vendor tokens: the plugins' own regular expressions (we need spans to cut, while their `analyze_string`
  yields bare values) and ours for the formats no plugin knows (`hf_`, `github_pat_`, `sk-ant-`, ...);
- values in a credential's position (`steps.prepare.credential_values`), every occurrence, typed by the
  IBM and Cloudant plugins' assignment patterns where they name the vendor;
- tool formats (`steps.prepare.credential_formats`): URL passwords, command lines, .netrc, crypt hashes;
- private key blocks (`steps.prepare.private_keys`).
Left out on purpose: `IPPublicDetector` and the high-entropy string plugins, because IP addresses and file
hashes are the knowledge in a threat corpus, not leaks; and detect-secrets' keyword patterns, whose
`\\w*`-after-the-name and whole-line value groups make them quadratic on long words and lines (their name list
and forms are the credential-position pass's). Every pass is linear in the text (bench/redaction.py).
"""

from __future__ import annotations

import re
from collections import Counter

from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

from steps.prepare.credential_formats import credential_format_spans
from steps.prepare.credential_values import credential_positions
from steps.prepare.private_keys import private_key_spans

Span = tuple[int, int, str]

_PLUGINS: tuple[tuple[str, type[RegexBasedDetector]], ...] = (
    ("aws_access_key", AWSKeyDetector),
    ("azure_storage_key", AzureStorageKeyDetector),
    ("ibm_cloud_key", IbmCloudIamDetector),
    ("ibm_cos_key", IbmCosHmacDetector),
    ("softlayer_key", SoftlayerDetector),
    ("cloudant_key", CloudantDetector),
    ("github_token", GitHubTokenDetector),
    ("gitlab_token", GitLabTokenDetector),
    ("slack_token", SlackDetector),
    ("stripe_key", StripeDetector),
    ("twilio_key", TwilioKeyDetector),
    ("sendgrid_key", SendGridDetector),
    ("mailchimp_key", MailchimpDetector),
    ("pypi_token", PypiTokenDetector),
    ("discord_token", DiscordBotTokenDetector),
    ("telegram_token", TelegramBotTokenDetector),
    ("square_oauth", SquareOAuthDetector),
    ("artifactory_key", ArtifactoryDetector),
)


def _is_assignment(kind: str, pattern: re.Pattern) -> bool:
    # Assignment patterns (`ibm_cloud_iam_key = "..."`, the AWS secret-key one) name the value; detect-secrets
    # builds them with `build_assignment_regex`, whose first part is a lookbehind.
    return pattern.pattern.startswith("(?:(?<=\\W)|(?<=^))") or (kind == "aws_access_key" and "aws" in pattern.pattern)


_ALL = tuple((kind, pattern) for kind, plugin in _PLUGINS for pattern in plugin.denylist)
_TOKEN_PATTERNS = tuple((k, p) for k, p in _ALL if not _is_assignment(k, p))
# The vendor assignment patterns only type what the credential-position pass finds: run over a whole line,
# their `(?: *)(?:=|:| +)(?: *)` takes time cubic in a run of spaces (an `ibm_cloud_iam_key` before 2,000
# spaces: minutes), so they see the name and value that pass found, a few hundred characters at most.
# The AWS one is left out: the position pass names AWS secrets itself (`aws_secret_key`).
_VENDOR_ASSIGNMENTS = tuple((k, p) for k, p in _ALL if _is_assignment(k, p) and k != "aws_access_key")

# What detect-secrets lacks, written here (docs/secrets.md): issuers' documented prefixes and lengths.
_EXTRA: tuple[tuple[str, re.Pattern], ...] = (
    ("gcp_api_key", re.compile(r"AIza[0-9A-Za-z\-_]{35}")),
    ("google_oauth_client_secret", re.compile(r"GOCSPX-[A-Za-z0-9_\-]{28}")),
    ("google_oauth_token", re.compile(r"ya29\.[A-Za-z0-9_\-]{30,2048}")),
    ("huggingface_token", re.compile(r"(?:hf_|api_org_)[A-Za-z]{34}(?![A-Za-z0-9])")),
    ("github_token", re.compile(r"github_pat_[A-Za-z0-9_]{82}")),
    ("anthropic_key", re.compile(r"sk-ant-[a-z]{3,5}\d{2}-[A-Za-z0-9_\-]{32,200}")),
    ("slack_token", re.compile(r"xapp-\d-[A-Z0-9]{1,32}-\d{1,20}-[a-f0-9]{16,128}")),
    ("slack_token", re.compile(r"xoxe(?:\.xox[bp])?-\d-[A-Za-z0-9]{140,170}")),
    ("discord_webhook", re.compile(r"discord(?:app)?\.com/api/webhooks/\d{5,25}/([A-Za-z0-9_\-]{40,100})")),
    ("azure_sas_token", re.compile(r"[?&]sig=([A-Za-z0-9%+/=]{30,256})")),
)
# Patterns of the plugins whose unbounded runs are retried from every position of a long word (`eyJ` * N,
# `sk-` * N): scanned from their literal start, a failed try skipping the run it read (`_skipping_matches`).
_JWT = JwtTokenDetector.denylist[0]
_OPENAI = OpenAIDetector.denylist[0]
_RUN_OF = {"jwt": re.compile(r"[A-Za-z0-9\-_=]*"), "openai_key": re.compile(r"[A-Za-z0-9\-_]*")}
_NPM_VALUE = re.compile(r"[ \t]*(npm_\S+|[A-Fa-f0-9-]{36})")
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


_ANCHORED = (("jwt", re.compile("eyJ")), ("openai_key", re.compile("sk-")), ("npm_token", re.compile(":_authToken=")))
_TOKEN_CANDIDATE = _any_of(_TOKEN_PATTERNS + _EXTRA + _ANCHORED)
# The JWT plugin's pattern ends lazily, so its match stops before the signature: extend over it.
_JWT_TAIL = re.compile(r"[A-Za-z0-9\-_.+/=]*")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
# A bare file hash (MD5, SHA-1, SHA-224, SHA-256, SHA-384, SHA-512) is an indicator, even when a token pattern
# hits it; in a credential's position (a URL's password, an assignment, a header) it is a secret all the same.
_HEX_WORD = re.compile(r"[0-9A-Fa-f]+")
_HASH_LENGTHS = {32, 40, 56, 64, 96, 128}
_LONGEST_HASH = max(_HASH_LENGTHS)


def _inside_hash(text: str, start: int, end: int) -> bool:
    # The walk stops past the longest hash: a hit inside a long run is not in a hash, and a walk over the
    # whole run for each hit in it would be quadratic.
    left = start
    while left > 0 and text[left - 1].isalnum() and end - left <= _LONGEST_HASH:
        left -= 1
    right = end
    while right < len(text) and text[right].isalnum() and right - left <= _LONGEST_HASH:
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


def _trimmed(text: str, kind: str, match: re.Match) -> Span:
    first, last = _match_span(kind, match)
    # Some patterns include their delimiters (`(?:\s|=|:|"|^)AKC...(?:\s|"|$)`): keep those in the text.
    while first < last and text[first] in _DELIMITERS:
        first += 1
    while last > first and text[last - 1] in _DELIMITERS:
        last -= 1
    return first, last, kind


def _skipping_matches(kind: str, pattern: re.Pattern, text: str, start: int, end: int) -> list[Span]:
    """`pattern` tried at each of its literal starts; a failed try resumes after the run it read, since a
    start inside that run reads the same run to the same failure."""
    spans, literal = [], "eyJ" if kind == "jwt" else "sk-"
    at = text.find(literal, start, end)
    while at != -1:
        match = pattern.match(text, at, end)
        resume = _RUN_OF[kind].match(text, at + len(literal), end).end()
        if match and (kind != "jwt" or JwtTokenDetector.is_formally_valid(match.group())):
            first, last, _ = _trimmed(text, kind, match)
            last = _JWT_TAIL.match(text, last, end).end() if kind == "jwt" else last
            spans.append((first, last, kind))
            resume = max(resume, last)
        at = text.find(literal, max(resume, at + 1), end)
    return spans


def _npm_tokens(text: str, start: int, end: int) -> list[Span]:
    """The npm plugin's `//registry/:_authToken=<token>`, read from the literal (its `.+` retries each `//`)."""
    spans, at = [], text.find(":_authToken=", start, end)
    while at != -1:
        value = _NPM_VALUE.match(text, at + len(":_authToken="), end)
        if value and text.find("//", start, at) != -1:
            spans.append((*value.span(1), "npm_token"))
        at = text.find(":_authToken=", at + 1, end)
    return spans


def _token_spans(text: str) -> list[Span]:
    """Vendor tokens, looked for only in runs of 16 or more non-space characters that hold a candidate."""
    spans: list[Span] = []
    for token in _LONG_TOKEN.finditer(text):
        # One character of context each side: some patterns start or end with `(?:\s|=|:|"|^)`.
        start, end = max(token.start() - 1, 0), min(token.end() + 1, len(text))
        if _TOKEN_CANDIDATE.search(text, start, end) is None:
            continue
        for kind, pattern in _TOKEN_PATTERNS + _EXTRA:
            for match in pattern.finditer(text, start, end):
                first, last, _ = _trimmed(text, kind, match)
                if not _inside_hash(text, first, last):
                    spans.append((first, last, kind))
        spans += _skipping_matches("jwt", _JWT, text, start, end)
        openai = _skipping_matches("openai_key", _OPENAI, text, start, end)
        spans += [span for span in openai if not _inside_hash(text, span[0], span[1])]
        spans += _npm_tokens(text, start, end)
    return spans


def _vendor_type(text: str, name_start: int, start: int, end: int, kind: str) -> str:
    """The vendor a credential-position value belongs to, where an IBM/Cloudant/SoftLayer pattern names it."""
    for vendor, pattern in _VENDOR_ASSIGNMENTS:
        match = pattern.search(text, max(name_start - 2, 0), min(end + 1, len(text)))
        if match and _match_span(vendor, match)[0] < end and start < _match_span(vendor, match)[1]:
            return vendor
    return kind


def find_secrets(text: str) -> list[Span]:
    """(start, end, type) of every secret in `text`, overlapping spans merged."""
    spans = _token_spans(text) + credential_format_spans(text)
    if "PRIVATE KEY" in text or "PuTTY-User-Key-File" in text:
        spans += private_key_spans(text)
    if "earer" in text:
        spans += [(*m.span(1), "bearer_token") for m in _BEARER.finditer(text)]
    positions = [(p.start, p.end, _vendor_type(text, *p)) for p in credential_positions(text)]
    # A named plugin's type wins over the generic one where both find the same value.
    ranked = sorted([(s, 0, e, k) for s, e, k in spans] + [(s, 1, e, k) for s, e, k in positions])
    merged: list[Span] = []
    for start, _, end, kind in ranked:
        if merged and start < merged[-1][1]:
            last_start, last_end, last_kind = merged[-1]
            merged[-1] = (last_start, max(end, last_end), last_kind)
        else:
            merged.append((start, end, kind))
    return merged


def _is_word(character: str) -> bool:
    return character.isalnum() or character == "_"


def _emails(text: str) -> list[tuple[int, int]]:
    """E-mail addresses, read around each `@` (a local part of at most 64 characters, as RFC 5321 allows)."""
    found, at, floor = [], text.find("@"), 0
    while at != -1:
        left = at
        while left > max(at - 64, floor) and text[left - 1] in _EMAIL_LOCAL:
            left -= 1
        # The address starts at a word boundary, as `\b` before the local part requires.
        while left < at and (left > 0 and _is_word(text[left - 1])) == _is_word(text[left]):
            left += 1
        match = _EMAIL.match(text, left, min(len(text), at + 256)) if left < at else None
        if match and match.end() > at:
            found.append(match.span())
            floor = match.end()  # the next address starts after this one, as `finditer`'s would
        at = text.find("@", match.end() if match else at + 1)
    return found


def redact(text: str, redact_emails: bool = False) -> tuple[str, Counter]:
    """`text` with secrets (and e-mail addresses if asked) replaced by typed placeholders, and counts per type."""
    counts: Counter = Counter()
    spans = [(s, e, f"<SECRET:{k}>") for s, e, k in find_secrets(text)]
    if redact_emails and "@" in text:
        secrets, kept, index = spans, [], 0
        for start, end in _emails(text):
            while index < len(secrets) and secrets[index][1] <= start:
                index += 1
            if index == len(secrets) or end <= secrets[index][0]:
                kept.append((start, end, "<PII:email>"))
        spans = sorted(spans + kept)
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
