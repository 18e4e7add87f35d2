"""Redaction finishes on adversarial text: no pattern retries a long run from every position inside it.

Each text below once made a pass quadratic or worse (`redact("passkey" * 10000)` took 47 s; an `ibm_cloud_iam_key`
followed by 2,000 spaces took minutes). They run in a child process so that a regression fails the test, naming the
text it was on, instead of hanging the suite. The limit is two orders of magnitude above what linear code needs
(bench/redaction.py measures the time per MiB); the test asserts completion, not speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ADVERSARIAL = {
    "hint_words": '"passkey" * 40_000',
    "hint_words_with_assignments": '"pass=" * 50_000',
    "open_quotes_after_names": "'password=\"' * 30_000",
    "assignment_then_spaces": '("ibm_cloud_iam_key" + " " * 2_000 + "!\\n") * 20',
    "jwt_prefixes": '"eyJ" * 80_000',
    "openai_prefixes": '"sk-" * 80_000',
    "npm_rc_line": '"//a" * 50_000 + "/:_authToken=zz"',
    "url_schemes": '"://a" * 60_000',
    "private_key_headers": '"-----BEGIN RSA PRIVATE KEY-----\\n" * 8_000',
    "long_word": '"A" * 1_000_000',
    "hex_run_with_token_prefixes": '"AKIA" * 200_000',
    "email_like_run": '"a." * 100_000',
}

_CHILD = textwrap.dedent(
    """
    import json, sys
    from steps.prepare.redact import redact
    for name, expression in json.loads(sys.argv[1]).items():
        print(name, flush=True)
        redact(eval(expression), redact_emails=True)
    print("done", flush=True)
    """
)


def test_redaction_finishes_on_adversarial_text() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(ADVERSARIAL)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        out, _ = child.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.communicate()
        started = out.split()
        raise AssertionError(f"redaction still running after 240 s on {started[-1]!r}") from None
    assert child.returncode == 0 and out.split()[-1] == "done", out


def test_the_email_finder_finds_what_the_plain_regex_finds() -> None:
    """`_emails` reads around each `@` instead of letting the regex retry every start; on addresses with local
    parts of at most 64 characters it must find exactly the spans the plain pattern's `finditer` finds."""
    import random
    import re

    from steps.prepare.redact import _emails

    plain = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
    rng = random.Random(5)
    texts = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        for alphabet in ("ab.@-_+ %x1\n", "ab.@x1", "a@b.co m_-", "é_a@b.c1 ")
        for _ in range(1500)
    ]
    assert sum(bool(plain.search(text)) for text in texts) > 300  # the comparison is about texts with addresses
    assert [_emails(text) for text in texts] == [[m.span() for m in plain.finditer(text)] for text in texts]
