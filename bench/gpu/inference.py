"""Parts 3 and 4 of bench/gpu/run.sh: generation on one GPU with each engine of steps.evaluate.engines.

    python bench/gpu/inference.py engines OUT.json [--new-tokens 64]
    python bench/gpu/inference.py offload OUT.json [--budget-gib 1.0]

`engines` (part 3): a ~1.1B Llama (TinyLlama's shape, random weights: speed does not depend
on what the weights learned) in fp16; HF generate, DeepSpeed-Inference with kernel injection
(or the automatic tensor parallelism it falls back to, named in `ran`), and ZeRO-Inference
with parameters on the GPU; greedy, batch 1 and batch 16, tokens/s and latency per call
(median of 3 after a warm-up). Target: DeepSpeed-Inference >= 2x HF at batch 1.

`offload` (part 4): the same model under a GPU memory budget smaller than its weights
(`torch.cuda.set_per_process_memory_fraction`): ZeRO-Inference with parameters offloaded to
CPU generates; plain HF is tried under the same budget to show that the budget binds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch

from steps.config import EvaluateConfig, ModelConfig
from steps.evaluate.engines import build_engine
from steps.formats.model import build_model
from steps.runtime.distributed import init_distributed, shutdown
from tests.support.synthetic_dataset import word_tokenizer

VOCAB = 32000
TINYLLAMA = ModelConfig(
    hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4, intermediate_size=5632, max_position_embeddings=2048
)

SMOKE = ModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=128)


def single_rank_environment() -> None:
    """What torchrun would set for one rank, so that init_distributed works in this process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))


def model_folder(folder: Path, shape: ModelConfig) -> int:
    """Saves the fp16 model and its tokenizer, once (parts 3 and 4 share it); returns the weights' bytes."""
    done = folder / "weights_bytes"
    if not done.is_file():
        tokenizer = word_tokenizer(VOCAB)
        model = build_model(shape, VOCAB, tokenizer.eos_token_id, tokenizer.pad_token_id).half()
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        done.write_text(str(sum(p.numel() * p.element_size() for p in model.parameters())))
    return int(done.read_text())


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_generate(engine, batch: int, settings: EvaluateConfig, device) -> dict:
    """Median of 3 timed generations of `settings.max_new_tokens` after a warm-up."""
    ids = torch.randint(3, VOCAB, (batch, 32), generator=torch.Generator().manual_seed(batch)).to(device)
    mask = torch.ones_like(ids)
    engine.generate(ids, mask, settings, eos_ids=[0], pad_id=1)  # warm-up: kernels, allocator, caches
    times, tokens = [], 0
    for _ in range(3):
        synchronize()
        start = time.perf_counter()
        out = engine.generate(ids, mask, settings, eos_ids=[0], pad_id=1)
        synchronize()
        times.append(time.perf_counter() - start)
        tokens = out.numel()
    latency = statistics.median(times)
    return {
        "batch": batch,
        "new_tokens": tokens // batch,
        "latency_s": round(latency, 4),
        "tokens_per_s": round(tokens / latency, 1),
    }


def engines(args, folder: Path, ctx) -> dict:
    settings = EvaluateConfig(max_new_tokens=args.new_tokens, dtype="fp16", kernel_inject=True, zero_offload="none")
    figures = {}
    for name in ("hf", "deepspeed", "zero"):
        try:
            engine = build_engine(name, folder, ctx, settings)
            runs = [timed_generate(engine, b, settings, ctx.device) for b in (1, 16)]
            ran = name
            if name == "deepspeed":
                ran = "kernel-injection"
                if any("kernel injection off" in n for n in engine.notes):
                    ran = "autotp"  # CPU: no fused kernels to inject
                elif any("kernel injection unavailable" in n for n in engine.notes):
                    ran = "autotp-fallback"
            figures[name] = {"ran": ran, "runs": runs, "notes": engine.notes}
            del engine
        except Exception as exc:  # one engine failing must not lose the others' figures
            figures[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        torch.cuda.empty_cache()
    ratio = None
    if "runs" in figures.get("hf", {}) and "runs" in figures.get("deepspeed", {}):
        ratio = round(figures["deepspeed"]["runs"][0]["tokens_per_s"] / figures["hf"]["runs"][0]["tokens_per_s"], 2)
    return {
        "bench": "gpu_inference",
        "dtype": "fp16",
        "engines": figures,
        "deepspeed_vs_hf_batch1": ratio,
        "target": {"deepspeed_vs_hf_batch1": 2.0},
        "meets_target": ratio is not None and ratio >= 2.0,
    }


def offload(args, folder: Path, ctx, weights: int) -> dict:
    budget = int(args.budget_gib * 2**30)
    total = torch.cuda.get_device_properties(ctx.device).total_memory
    torch.cuda.set_per_process_memory_fraction(budget / total, ctx.device)
    settings = EvaluateConfig(max_new_tokens=args.new_tokens, dtype="fp16", zero_offload="cpu")
    result = {"bench": "gpu_zero_inference_offload", "budget_gib": args.budget_gib, "weights_gib": weights / 2**30}
    try:
        engine = build_engine("zero", folder, ctx, settings)
        result["zero_cpu_offload"] = timed_generate(engine, 1, settings, ctx.device)
        result["zero_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        del engine
    except Exception as exc:
        result["zero_cpu_offload"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    torch.cuda.empty_cache()
    try:
        engine = build_engine("hf", folder, ctx, settings)
        timed_generate(engine, 1, settings, ctx.device)
        result["hf_under_budget"] = "ran (the budget does not bind)"
    except torch.OutOfMemoryError:
        result["hf_under_budget"] = "out of memory, as expected"
    except Exception as exc:  # the figure above is what this part is for; keep it
        result["hf_under_budget"] = f"{type(exc).__name__}: {exc}"[:500]
    result["meets_target"] = weights > budget and "tokens_per_s" in result["zero_cpu_offload"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["engines", "offload"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--budget-gib", type=float, default=1.0)
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # a tiny model, to check the script
    args = parser.parse_args()
    single_rank_environment()
    ctx = init_distributed()
    folder = Path(tempfile.gettempdir()) / ("bench-gpu-model-smoke" if args.smoke else "bench-gpu-model")
    weights = model_folder(folder, SMOKE if args.smoke else TINYLLAMA)
    result = engines(args, folder, ctx) if args.part == "engines" else offload(args, folder, ctx, weights)
    result["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    args.out.write_text(json.dumps(result))
    print(json.dumps(result))
    shutdown()


if __name__ == "__main__":
    main()
