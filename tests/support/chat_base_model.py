"""A tiny base model that chats: a BPE tokenizer with ChatML's turn markers and template, and a tiny Llama sized
to it, saved together as a Hugging Face folder, for flow runs that instruction-tune a base model alone."""

from __future__ import annotations

from pathlib import Path

from steps.formats.chat_template import ensure_chat_template
from steps.prepare.tokenizer_training import train_bpe_tokenizer
from tests.support.corpus_files import prose
from tests.support.tiny_llama import save_tiny_tied_llama


def save_chat_base_model(folder: Path, vocab_size: int = 512, max_positions: int = 256) -> Path:
    tokenizer = train_bpe_tokenizer([prose(seed, 200) for seed in range(40)], vocab_size)
    ensure_chat_template(tokenizer, add_tokens=True)
    return save_tiny_tied_llama(folder, len(tokenizer), max_positions, tokenizer)
