"""A tiny Llama with SmolLM2-135M's awkward traits: tied embeddings, 9 attention heads over 3 key/value heads.

Small enough for 2 CPU ranks under torchrun; the same seed gives the same weights in every test that makes one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def save_tiny_tied_llama(folder: Path, vocab_size: int, max_positions: int, tokenizer=None) -> Path:
    """Write the model to `folder`; with `tokenizer`, its special ids go in the config and it is saved beside."""
    special = {}
    if tokenizer is not None:
        special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None}
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=36,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        **special,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder
