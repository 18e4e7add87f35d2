"""Our conversion against DeepSpeed's own consolidation (zero_to_fp32), on the same checkpoints.

    python bench/convert.py [--stages 2 3] [--hidden 384 --layers 6 --vocab 8192] [--shard 10MB]

For each ZeRO stage: builds one checkpoint from 2 ranks (tests.support.synthetic_checkpoint),
then runs, each in its own process, (a) `python -m steps.convert` (gather shard by
shard, cast, write safetensors, config, tokenizer, then verify logits) and
(b) DeepSpeed's `convert_zero_checkpoint_to_fp32_state_dict` writing safetensors
shards of the same size (weights only, no verification). Reports wall time and
peak RSS of each, the peak above each one's no-op baseline (same imports), and
the ratios ours / DeepSpeed. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from steps.config import TuneConfig, write_config
from steps.runtime.launch import run_torchrun
from steps.runtime.peak_memory import peak_rss


def baseline_command(checkpoint_folder: Path) -> list[str]:
    """Our conversion's imports and meta model, no weights: what its peak is measured above."""
    return [sys.executable, "-m", "tests.support.convert_memory_baseline", str(checkpoint_folder)]


def deepspeed_command(checkpoint_root: Path, tag: str, out: Path, shard: str) -> list[str]:
    code = (
        "from deepspeed.utils.zero_to_fp32 import convert_zero_checkpoint_to_fp32_state_dict as c; "
        f"c({str(checkpoint_root)!r}, {str(out)!r}, max_shard_size={shard!r}, safe_serialization=True, tag={tag!r})"
    )
    return [sys.executable, "-c", code]


def deepspeed_baseline() -> list[str]:
    return [sys.executable, "-c", "import deepspeed.utils.zero_to_fp32"]


def bench_stage(stage: int, args: argparse.Namespace, work: Path) -> dict:
    out = work / f"zero{stage}"
    size = ["--hidden", str(args.hidden), "--layers", str(args.layers), "--vocab", str(args.vocab)]
    run_torchrun(
        "tests.support.synthetic_checkpoint", ["--out", str(out), "--stage", str(stage), *size], nproc_per_node=2
    )
    config = write_config(TuneConfig().with_overrides(**{"convert.max_shard_size": args.shard}), work / "c.json")
    ours = [sys.executable, "-m", "steps.convert", "--config", str(config), "--checkpoint", str(out)]
    ours += ["--tokenizer", str(out / "tokenizer"), "--out", str(work / f"ours{stage}")]
    code, ours_peak, ours_s, output = peak_rss(ours)
    if code:
        raise SystemExit(output[-3000:])
    record = json.loads(output.strip().splitlines()[-1])
    folder = out / "checkpoints" / record["checkpoint"]
    code, ds_peak, ds_s, output = peak_rss(
        deepspeed_command(out / "checkpoints", record["checkpoint"], work / f"ds{stage}", args.shard)
    )
    if code:
        raise SystemExit(output[-3000:])
    ours_base = peak_rss(baseline_command(folder))[1]
    ds_base = peak_rss(deepspeed_baseline())[1]
    model = record["written_bytes"]
    ours_over, ds_over = (ours_peak - ours_base) / model, (ds_peak - ds_base) / model
    return {
        "stage": stage,
        "model_mb": round(model / 1e6, 1),
        "ours_s": round(ours_s, 2),
        "deepspeed_s": round(ds_s, 2),
        "ours_peak_mb": round(ours_peak / 1e6),
        "deepspeed_peak_mb": round(ds_peak / 1e6),
        "ours_over_baseline_x_model": round(ours_over, 2),
        "deepspeed_over_baseline_x_model": round(ds_over, 2),
        "time_ratio_ours_vs_deepspeed": round(ours_s / ds_s, 2),
        "peak_over_baseline_ratio_ours_vs_deepspeed": round(ours_over / ds_over, 2),
        "ours_logits_match": record["logits_match"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--shard", default="10MB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as work:
        results = [bench_stage(stage, args, Path(work)) for stage in args.stages]
    print(json.dumps({"bench": "convert", "shard": args.shard, "results": results}))


if __name__ == "__main__":
    main()
