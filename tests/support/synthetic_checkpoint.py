"""A train folder with a ZeRO checkpoint of a model of chosen size, in seconds, without training.

    python -m torch.distributed.run --nproc_per_node 2 -m tests.support.synthetic_checkpoint \
        --out DIR --stage 2 --hidden 384 --layers 6 --vocab 8192

Training a model of 50+ MB to a checkpoint would take minutes on CPU; conversion
does not care whether the weights learned anything, only about their layout.
So this builds the Llama of the pipeline, takes one optimizer step under
DeepSpeed (so that Adam's states exist as in a real checkpoint) and saves it
with `CheckpointManager`, plus the logits of the verify batch and a tokenizer
sized to the vocabulary, in the layout of `steps.formats.train_folder`. For
conversion's tests and benchmarks (tests/distributed, bench/convert.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import deepspeed
import torch
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from steps.config import ModelConfig, TrainConfig
from steps.formats.model import build_model
from steps.formats.train_folder import CHECKPOINTS, VERIFY_LOGITS_FILE
from steps.runtime.distributed import init_distributed, shutdown
from steps.train.checkpoints import CheckpointManager, CheckpointPlace, TrainingPosition


def _tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer for the model folder: conversion copies it and never reads its vocabulary."""
    vocabulary = {"<|endoftext|>": 0, "<|pad|>": 1, "<|unk|>": 2}
    words = Tokenizer(models.WordLevel(vocabulary, unk_token="<|unk|>"))
    return PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<|endoftext|>", pad_token="<|pad|>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stage", type=int, default=2, choices=[0, 1, 2, 3])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8192)
    args = parser.parse_args()

    ctx = init_distributed()
    tokenizer = _tokenizer()
    model_config = ModelConfig(
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=8,
        num_kv_heads=8,
        intermediate_size=args.hidden * 3,
    )
    model = build_model(model_config, args.vocab, tokenizer.eos_token_id, tokenizer.pad_token_id)
    ds_config = {
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": {"stage": args.stage},
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    ids = torch.randint(0, args.vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()
    place = CheckpointPlace(str(args.out / CHECKPOINTS), args.out / "staging")
    manager = CheckpointManager(place, TrainConfig(max_steps=1, keep_checkpoints=1), ctx)
    manager.save(engine, 1, "synthetic", TrainingPosition(tokens_seen=16, blocks_seen=1), metrics_file=None)
    engine.eval()
    with torch.no_grad():
        logits = engine(input_ids=ids).logits.float()
    if ctx.is_main:
        torch.save({"input_ids": ids, "logits": logits}, args.out / VERIFY_LOGITS_FILE)
        tokenizer.save_pretrained(str(args.out / "tokenizer"))
    shutdown()


if __name__ == "__main__":
    main()
