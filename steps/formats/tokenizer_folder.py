"""The tokenizer folder prepare writes (a Hugging Face tokenizer: `tokenizer.json` and its config).

Train, convert and evaluate load it the same way, so that the converted model
carries a tokenizer set up for batched generation.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer saved by prepare, set up for left-padded batch generation.

    Passed to the constructor rather than set afterwards, so that the converted model's saved
    tokenizer pads on the left too: right padding makes batched `generate` continue after pads.
    """
    return AutoTokenizer.from_pretrained(str(folder), padding_side="left")
