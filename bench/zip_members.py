"""Reading a zip of many members: prepare's reader against the per-member-open baseline it replaced.

    python bench/zip_members.py --members 2000

The baseline reads every member the way the reader used to: a new `ZipFile` (which reads the
whole member list again) per member, so its time grows with the square of the member count.
The reader (`steps.prepare.extract`) opens the archive once. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zipfile
from pathlib import Path

from steps.prepare.extract import Limits, open_zip, read_source, zip_members
from tests.support.bad_corpus import many_member_zip


def _reader(path: Path) -> tuple[int, float]:
    limits = Limits(1 << 24, 1 << 28, ("text",), ("text",))
    started = time.perf_counter()
    with open_zip(path) as archive:  # as prepare's read phase does: once per archive, for all its members
        count = sum(1 for source in zip_members(archive, path, path.name) for _ in read_source(source, limits))
    return count, time.perf_counter() - started


def _baseline(path: Path) -> tuple[int, float]:
    started = time.perf_counter()
    with zipfile.ZipFile(path) as archive:
        names = [m.filename for m in archive.infolist() if not m.is_dir()]
    count = 0
    for name in names:
        with zipfile.ZipFile(path).open(name) as handle:
            count += bool(handle.read().decode())
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "many.zip"
        many_member_zip(path, args.members)
        baseline_docs, baseline_s = _baseline(path)
        reader_docs, reader_s = _reader(path)
    assert baseline_docs == reader_docs == args.members
    result = {"members": args.members, "baseline_s": round(baseline_s, 3), "reader_s": round(reader_s, 3)}
    print(json.dumps({**result, "speedup": round(baseline_s / reader_s, 1)}))


if __name__ == "__main__":
    main()
