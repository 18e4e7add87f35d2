"""Generation throughput of each engine against plain Hugging Face generate, in one run.

    python bench/inference.py [--prompts 16 --batch 4 --new-tokens 32] [--gpu]

Builds the pipeline's default-size Llama (random weights: throughput does not
depend on what the weights learned) as a Hugging Face folder, then launches
itself under torchrun on 2 ranks and runs every engine of `steps.inference_engines`
through `steps.evaluate.run_engine` on the same prompts, batch size and greedy
settings. The baseline is the `hf` engine: plain `generate`, each rank on its
own share of prompts. `--gpu` uses fp16 with DeepSpeed kernel injection
(needs CUDA). Prints one JSON line with tokens/s per engine and the ratios to hf.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from steps.config import EvaluateConfig, TuneConfig
from steps.evaluate.engines import build_engine
from steps.evaluate.generation import run_engine
from steps.formats.model import build_model
from steps.formats.tokenizer_folder import load_tokenizer
from steps.prepare.tokenizer_training import train_bpe_tokenizer
from steps.runtime.distributed import barrier, init_distributed, shutdown
from steps.runtime.launch import run_torchrun

ENGINES = ["hf", "deepspeed", "zero"]


def _settings(args: argparse.Namespace) -> EvaluateConfig:
    return EvaluateConfig(
        engines=ENGINES,
        max_new_tokens=args.new_tokens,
        batch_size=args.batch,
        dtype="fp16" if args.gpu else "fp32",
        kernel_inject=args.gpu,
    )


def build_model_folder(folder: Path) -> None:
    tokenizer = train_bpe_tokenizer(["CWE-79: Improper Neutralization of Input " * 8] * 8, 300)
    tokenizer.save_pretrained(str(folder))
    model = build_model(TuneConfig().model, 4096, tokenizer.eos_token_id, tokenizer.pad_token_id)
    model.save_pretrained(str(folder))


def measure(args: argparse.Namespace) -> None:
    """One rank's part: every engine on the same prompts; rank 0 writes the figures."""
    ctx = init_distributed()
    settings = _settings(args)
    tokenizer = load_tokenizer(args.model)
    generator = torch.Generator().manual_seed(0)
    # Uneven prompt lengths (16 to 48 tokens), as held-out prompts have; EOS kept out so lengths stay put.
    prompts = [
        {"prompt_ids": torch.randint(2, 4096, (16 + (i * 7) % 33,), generator=generator).tolist()}
        for i in range(args.prompts)
    ]
    figures = {}
    for name in ENGINES:
        engine = build_engine(name, args.model, ctx, settings)
        run_engine(engine, prompts[: settings.batch_size], settings, tokenizer, ctx)  # warm-up
        barrier()
        started = time.perf_counter()
        results = run_engine(engine, prompts, settings, tokenizer, ctx)
        elapsed = time.perf_counter() - started
        tokens = sum(len(r["tokens"]) for r in results)
        figures[name] = {"tokens": tokens, "seconds": round(elapsed, 3), "tokens_per_s": round(tokens / elapsed, 1)}
        figures[name]["notes"] = engine.notes
        del engine
    if ctx.is_main:
        Path(args.result).write_text(json.dumps(figures))
    shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--gpu", action="store_true", help="fp16 with kernel injection (CUDA machines)")
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "LOCAL_RANK" in os.environ:
        measure(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench-inference-") as work:
        model, result = Path(work) / "model", Path(work) / "result.json"
        build_model_folder(model)
        passed = ["--prompts", str(args.prompts), "--batch", str(args.batch), "--new-tokens", str(args.new_tokens)]
        passed += ["--model", str(model), "--result", str(result)] + (["--gpu"] if args.gpu else [])
        run_torchrun(__file__, passed, nproc_per_node=2)
        figures = json.loads(result.read_text())
    hf = figures["hf"]["tokens_per_s"]
    print(
        json.dumps(
            {
                "bench": "inference",
                "device": "cuda-fp16-kernel-inject" if args.gpu else "cpu-fp32",
                "ranks": 2,
                "prompts": args.prompts,
                "batch": args.batch,
                "new_tokens": args.new_tokens,
                "engines": figures,
                "ratio_to_hf": {name: round(f["tokens_per_s"] / hf, 2) for name, f in figures.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
