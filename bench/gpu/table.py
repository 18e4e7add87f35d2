"""The summary of bench/gpu/run.sh: part 1's JSON from pytest's JUnit XML, and the closing table.

    python bench/gpu/table.py tests JUNIT.xml OUT.json   # part 1: passed/failed/skipped and failing test names
    python bench/gpu/table.py summary OUTDIR [1,2,3,4,5]  # the table, and OUTDIR/results.jsonl (one line per part)

results.jsonl is what goes to bench/results/<device>-<date>.jsonl once a run completed.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

PARTS = [
    ("1 GPU tests", "gpu_tests.json"),
    ("2 training throughput", "train.json"),
    ("3 inference engines", "inference.json"),
    ("4 ZeRO-Inference beyond GPU memory", "offload.json"),
    ("5 conversion at size", "convert.json"),
]


def junit_summary(junit: Path) -> dict:
    root = ElementTree.parse(junit).getroot()
    cases = root.iter("testcase")
    outcome: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome["failed"].append(name)
        elif case.find("skipped") is not None:
            outcome["skipped"].append(name)
        else:
            outcome["passed"].append(name)
    counts = {key: len(names) for key, names in outcome.items()}
    return {
        "bench": "gpu_tests",
        **counts,
        "failed_tests": outcome["failed"],
        "meets_target": counts["failed"] == 0 and counts["passed"] > 0,
    }


def figures(name: str, result: dict) -> str:
    """The part's headline figures next to its target."""
    if "error" in result:
        return f"did not finish: {result['error']}"
    if name == "gpu_tests.json":
        return f"{result['passed']} passed, {result['failed']} failed, {result['skipped']} skipped"
    if name == "train.json":
        return (
            f"{result['tokens_per_s']:.0f} tokens/s, {result['tflops_per_device']} TFLOP/s, "
            f"MFU {result['mfu']:.1%} of {result['peak_tflops_measured']} (target 45%), {result['memory_gib']} GiB"
        )
    if name == "inference.json":
        parts = []
        for engine, data in result["engines"].items():
            if "runs" in data:
                speeds = "/".join(f"{run['tokens_per_s']:.0f}" for run in data["runs"])
                parts.append(f"{data['ran']} {speeds} tok/s (b1/b16)")
            else:
                parts.append(f"{engine} failed")
        return "; ".join(parts) + f"; ds/hf at b1 {result['deepspeed_vs_hf_batch1']} (target 2)"
    if name == "offload.json":
        run = result.get("zero_cpu_offload", {})
        speed = f"{run['tokens_per_s']:.1f} tok/s" if "tokens_per_s" in run else "failed"
        return f"{result['weights_gib']:.2f} GiB weights in a {result['budget_gib']} GiB budget: {speed}"
    if name == "convert.json":
        rows = [
            f"ZeRO-{r['stage']}: peak {r['ours_over_baseline_x_model']}x model vs zero_to_fp32 "
            f"{r['deepspeed_over_baseline_x_model']}x, {r['ours_s']}s vs {r['deepspeed_s']}s"
            for r in result["results"]
        ]
        return "; ".join(rows)
    return json.dumps(result)[:200]


def summary(outdir: Path, parts: str = "1,2,3,4,5") -> int:
    """Prints the table; 1 when a part of `parts` (numbers, comma-separated) has no result or failed."""
    lines, missing = [], 0
    print("| part | figures | target met |\n|---|---|---|")
    for number, (title, name) in enumerate(PARTS, start=1):
        if str(number) not in parts.split(","):
            continue
        path = outdir / name
        if not path.is_file():
            print(f"| {title} | no result (not run, or failed before writing it) | - |")
            missing += 1
            continue
        result = json.loads(path.read_text())
        missing += "error" in result
        lines.append(json.dumps({"part": title, **result}))
        print(f"| {title} | {figures(name, result)} | {result.get('meets_target', '-')} |")
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "results.jsonl").write_text("".join(line + "\n" for line in lines))
    return 1 if missing else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["tests"] and len(argv) == 3:
        result = junit_summary(Path(argv[1])) if Path(argv[1]).is_file() else {"error": "pytest wrote no report"}
        Path(argv[2]).write_text(json.dumps(result))
        print(json.dumps(result))
        return 0
    if argv[:1] == ["summary"] and len(argv) in (2, 3):
        return summary(Path(argv[1]), *argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
