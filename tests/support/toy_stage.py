"""A toy stage's work, for tests/unit/test_runner.py: what a new stage costs is this module and its spec.

    python -m tests.support.toy_stage --config C --words DIR --out DIR [--mode ok|bad-summary|no-output]

Counts the words of `<words>/words.txt` into `<out>/counts.json` and writes its summary, `<out>/summary.json`.
"""

from __future__ import annotations

import json
from collections import Counter

from steps.config import load_config
from steps.runtime.launch import entrypoint_parser


def parser():
    parser = entrypoint_parser(__doc__, ["config", "words", "out"], optional=())
    parser.add_argument("--mode", default="ok")
    return parser


def main() -> None:
    args = parser().parse_args()
    load_config(args.config)  # the runner wrote it: a stage reads its settings from there
    if args.mode == "no-output":
        return
    counts = Counter((args.words / "words.txt").read_text().split())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "counts.json").write_text(json.dumps(counts))
    summary = {"words": sum(counts.values()), "distinct": len(counts)}
    if args.mode == "bad-summary":
        summary = {"words": "many"}
    (args.out / "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
