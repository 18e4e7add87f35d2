"""Benchmark: redaction time per MiB on adversarial text, and on the CWE catalogue, against the code before issue 31.

    python bench/redaction.py [--sizes 1,4,16] [--old-kib 16,32,64]

(a) adversarial texts of 1, 4 and 16 MiB (long runs of hint words, long words, long lines, token prefixes,
    headers and URLs repeated): `redact` must be linear, the seconds per MiB of the largest size within 1.5x of
    the smallest's, for each text.
(b) the same texts through the redaction of commit c330991 (before issue 31), loaded from git into a module
    of its own at bench time, at a few KiB only: it is quadratic or worse there, so its seconds per MiB grow
    with the size (1 MiB would take hours).
(c) the whole CWE catalogue as prepare redacts it (normalised documents), old against new, best of 3 each,
    and whether the two give the same text for every document (a changed document is listed by id).
An old run past --old-limit seconds is reported as null (hung) and its larger sizes are not run.
Times are CPU seconds of this process (`time.process_time`), which stay meaningful on a shared machine; the load
average is printed. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from steps.formats.cwe_catalogue import bundled_catalogue_path  # noqa: E402
from steps.prepare.clean import normalise  # noqa: E402
from steps.prepare.cwe_documents import cwe_documents  # noqa: E402
from steps.prepare.redact import redact  # noqa: E402

OLD_COMMIT = "c330991"
MIB = 1 << 20

# Each unit is repeated to the size asked; together they cover every pass's anchors.
ADVERSARIAL_UNITS = {
    "hint_words": "passkey",
    "hint_assignments": "pass=",
    "names_and_open_quotes": 'password="',
    "assignment_then_spaces": "ibm_cloud_iam_key" + " " * 2000 + "!\n",
    "jwt_prefixes": "eyJ",
    "openai_prefixes": "sk-",
    "url_schemes": "://a",
    "key_headers": "-----BEGIN RSA PRIVATE KEY-----\n",
    "long_word": "A",
    "token_prefixes": "AKIA",
    "email_like": "a.",
    "prose_line_with_secrets": "The loader, with key=Summer2023! and token ghp_0123456789abcdefABCDEF0123456789abcd. ",
}


def _old_redact() -> types.ModuleType:
    """`steps/prepare/redact.py` and the `credential_values` it imports, as they were at OLD_COMMIT."""
    modules = {}
    for name in ("credential_values", "redact"):
        source = subprocess.run(
            ["git", "show", f"{OLD_COMMIT}:steps/prepare/{name}.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        source = source.replace("from steps.prepare.credential_values import", "from _old_credential_values import")
        module = types.ModuleType(f"_old_{name}")
        sys.modules[module.__name__] = module
        exec(compile(source, f"{OLD_COMMIT}:steps/prepare/{name}.py", "exec"), module.__dict__)
        modules[name] = module
    return modules["redact"]


def _text(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def _seconds(function, text: str) -> float:
    start = time.process_time()
    function(text, True)
    return time.process_time() - start


def _seconds_or_none(function, text: str, limit: float) -> float | None:
    """`_seconds` in a forked child, None when it runs past `limit` seconds (a regular expression cannot be
    interrupted in-process, and the old code runs for hours on some of these texts)."""
    reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=lambda: writer.send(_seconds(function, text)))
    child.start()
    result = reader.recv() if reader.poll(limit) else None
    child.kill()
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,4,16", help="MiB")
    parser.add_argument("--old-kib", default="8,16,32", help="KiB for the old code")
    parser.add_argument("--old-limit", type=float, default=60.0, help="seconds before an old run counts as hung")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    old_sizes = [int(s) for s in args.old_kib.split(",")]
    old = _old_redact()
    print(f"load average at start: {os.getloadavg()}", flush=True)

    new_per_mib, old_per_mib = {}, {}
    for name, unit in ADVERSARIAL_UNITS.items():
        new_per_mib[name] = [_seconds(redact, _text(unit, mib * MIB)) / mib for mib in sizes]
        old_per_mib[name] = []
        for kib in old_sizes:
            seconds = _seconds_or_none(old.redact, _text(unit, kib * 1024), args.old_limit)
            old_per_mib[name].append(None if seconds is None else seconds / (kib / 1024))
            if seconds is None:
                break  # a larger text takes longer still
        flat = new_per_mib[name][-1] / max(new_per_mib[name][0], 1e-9)
        print(
            f"{name:26s} new s/MiB at {sizes} MiB: {[round(x, 3) for x in new_per_mib[name]]} (x{flat:.2f}); "
            f"old s/MiB at {old_sizes} KiB: {[None if x is None else round(x, 1) for x in old_per_mib[name]]}",
            flush=True,
        )

    documents = [(doc_id, normalise(text)) for doc_id, text in cwe_documents(bundled_catalogue_path())]
    cwe_seconds = {}
    for label, function in (("old", old.redact), ("new", redact)):
        runs = []
        for _ in range(3):
            start = time.process_time()
            for _, text in documents:
                function(text)
            runs.append(time.process_time() - start)
        cwe_seconds[label] = min(runs)
    changed = [doc_id for doc_id, text in documents if old.redact(text) != redact(text)]
    cwe_mib = sum(len(text.encode()) for _, text in documents) / MIB
    print(
        f"CWE catalogue: {len(documents)} documents, {cwe_mib:.2f} MiB; old {cwe_seconds['old']:.3f} s, "
        f"new {cwe_seconds['new']:.3f} s; documents whose redaction changed: {changed}"
    )
    print(f"load average at end: {os.getloadavg()}", flush=True)
    ratios = {name: round(values[-1] / max(values[0], 1e-9), 3) for name, values in new_per_mib.items()}
    print(
        json.dumps(
            {
                "sizes_mib": sizes,
                "new_seconds_per_mib": {k: [round(x, 4) for x in v] for k, v in new_per_mib.items()},
                "largest_over_smallest": ratios,
                "flat_within_1_5": all(r <= 1.5 for r in ratios.values()),
                "old_sizes_kib": old_sizes,
                "old_seconds_per_mib": {
                    k: [None if x is None else round(x, 2) for x in v] for k, v in old_per_mib.items()
                },
                "old_limit_seconds": args.old_limit,
                "cwe_documents": len(documents),
                "cwe_seconds": {k: round(v, 3) for k, v in cwe_seconds.items()},
                "cwe_changed_documents": changed,
            }
        )
    )


if __name__ == "__main__":
    main()
