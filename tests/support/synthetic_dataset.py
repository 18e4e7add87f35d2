"""A prepared dataset and tokenizer of any vocabulary and block size, in seconds, without a corpus.

For the GPU benchmarks and tests (bench/gpu/, tests/gpu/): preparing a real corpus needs
prepare's whole stack (HTML/PDF extraction, dedupe, secret scanning) and minutes, while
training throughput depends only on shapes. The token stream is learnable (each token
determines the next, 9 times in 10, among 64 words in use), so a few steps show the loss
falling. Writes the layout of `steps.formats.dataset` (train/, validation/, prompts.jsonl)
plus a tokenizer folder.

    python -m tests.support.synthetic_dataset --out DIR --vocab 32000 --block 2048 --train-blocks 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from steps.formats.blocks import BlockWriter
from steps.formats.dataset import write_prompts

EOS, PAD, UNK = "<|endoftext|>", "<|pad|>", "<|unk|>"
_SPECIAL = 3


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of exactly `vocab_size` entries: the 3 special tokens, then `t3` … `t{n-1}`."""
    vocabulary = {EOS: 0, PAD: 1, UNK: 2, **{f"t{i}": i for i in range(_SPECIAL, vocab_size)}}
    words = Tokenizer(models.WordLevel(vocabulary, unk_token=UNK))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=words, eos_token=EOS, pad_token=PAD, unk_token=UNK)


ALPHABET = 64
"""Tokens in use: few enough that a small model learns the rule in tens of steps (the vocabulary stays full size)."""


def token_stream(count: int, vocab_size: int, seed: int) -> np.ndarray:
    """`count` tokens of the first ALPHABET words; 9 in 10 follow from the previous by a fixed rule, the rest random."""
    rng = np.random.default_rng(seed)
    span = min(ALPHABET, vocab_size - _SPECIAL)
    noise = rng.integers(0, span, count)
    keep = rng.random(count) < 0.9
    out = np.empty(count, dtype=np.int64)
    out[0] = noise[0]
    for i in range(1, count):  # about a second per million tokens
        out[i] = (out[i - 1] * 7 + 13) % span if keep[i] else noise[i]
    return (out + _SPECIAL).astype(np.int32)


def write_synthetic_dataset(
    out: Path, vocab_size: int, block_size: int, train_blocks: int, validation_blocks: int = 8, seed: int = 0
) -> tuple[Path, Path]:
    """Writes `<out>/dataset` and `<out>/tokenizer`; returns both folders."""
    dataset, tokenizer_dir = Path(out) / "dataset", Path(out) / "tokenizer"
    dataset.mkdir(parents=True, exist_ok=True)
    tokenizer = word_tokenizer(vocab_size)
    tokenizer.save_pretrained(str(tokenizer_dir))
    for split, blocks, split_seed in (("train", train_blocks, seed), ("validation", validation_blocks, seed + 1)):
        # One document per block minus its separator, so the packer yields exactly `blocks` blocks.
        stream = token_stream(blocks * (block_size - 1), vocab_size, split_seed).reshape(blocks, block_size - 1)
        writer = BlockWriter(dataset / split, block_size, tokenizer.eos_token_id)
        writer.add(stream.tolist())
        writer.close()
    prompts = token_stream(8 * 48, vocab_size, seed + 2).reshape(8, 48)
    write_prompts(
        dataset,
        [
            {
                "doc_id": f"synthetic#{i}",
                "prompt": tokenizer.decode(row[:32].tolist()),
                "prompt_ids": row[:32].tolist(),
                "reference": tokenizer.decode(row[32:].tolist()),
            }
            for i, row in enumerate(prompts)
        ],
    )
    return dataset, tokenizer_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--train-blocks", type=int, default=256)
    args = parser.parse_args()
    write_synthetic_dataset(args.out, args.vocab, args.block, args.train_blocks)


if __name__ == "__main__":
    main()
