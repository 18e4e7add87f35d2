"""The tokenizer folder prepare writes (a Hugging Face tokenizer: `tokenizer.json` and its config).

Train, convert and evaluate load it the same way, so that the converted model
carries a tokenizer set up for batched generation.

Its pre-tokenizer may bound the length of a word (`bound_word_length`): BPE training time grows with the square
of a word's length, so a word longer than a limit is cut into pieces before the BPE model sees it, in training
and in every encoding. The bound is part of the folder: `load_tokenizer` keeps it where transformers drops it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tokenizers import Regex, Tokenizer, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase

TOKENIZER_FILE = "tokenizer.json"

BYTE_LEVEL_WORDS = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
"""The words of tokenizers' byte-level pre-tokenizer (GPT-2's regex, `ByteLevel(use_regex=True)`)."""

PROBE = "one two three"
"""Text that a pre-tokenizer splitting text into words cuts into several pieces."""


def bounded_byte_level_words(max_chars: int) -> str:
    """`BYTE_LEVEL_WORDS` with each run of letters, digits, other symbols or spaces at most `max_chars` long.

    Words no longer than that are matched exactly as before; a longer run is matched `max_chars` characters at a
    time. (`\\s{1,N}(?!\\S)` leaves a long run's last space to the word after it, as `\\s+(?!\\S)` does.)
    """
    return BYTE_LEVEL_WORDS.replace("+", f"{{1,{max_chars}}}")


def word_bound(max_chars: int) -> pre_tokenizers.Split:
    """A pre-tokenizer step that cuts each piece into pieces of at most `max_chars` characters, from its start.

    `[\\s\\S]{1,N}` matches wherever it is tried, so the cut is linear in the text; a pattern that must be N long
    (`.{N}`) would be retried at each position of a shorter piece: quadratic in pieces just under N.
    """
    return pre_tokenizers.Split(Regex(rf"[\s\S]{{1,{max_chars}}}"), behavior="isolated")


def _state(pre_tokenizer: pre_tokenizers.PreTokenizer | None) -> dict | None:
    return None if pre_tokenizer is None else json.loads(pre_tokenizer.__getstate__())


def _split_limit(state: dict, pattern) -> int | None:
    """The limit of a `Split` step made from `pattern(limit)`, as tokenizer.json holds it; else None."""
    if state.get("type") != "Split" or state.get("behavior") != "Isolated" or state.get("invert"):
        return None
    regex = state.get("pattern", {}).get("Regex", "")
    found = re.search(r"\{1,(\d+)\}", regex)
    return int(found.group(1)) if found and regex == pattern(int(found.group(1))) else None


def _is_plain_byte_level(state: dict) -> bool:
    # With use_regex off, add_prefix_space would prefix every piece a step before it cut, not the text's first.
    return state.get("type") == "ByteLevel" and state.get("use_regex") and not state.get("add_prefix_space")


def word_bound_limit(state: dict | None) -> int | None:
    """The word bound of a pre-tokenizer as tokenizer.json holds it (`bound_word_length`'s limit), or None."""
    steps = (state or {}).get("pretokenizers") or []
    if len(steps) == 2 and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex"):
        limit = _split_limit(steps[0], bounded_byte_level_words)
        if limit is not None:
            return limit
    return _split_limit(steps[-1], lambda n: rf"[\s\S]{{1,{n}}}") if steps else None


def bound_word_length(backend: Tokenizer, max_chars: int | None) -> bool:
    """Make the tokenizer cut each word longer than `max_chars` characters into pieces of at most that many (a
    word's leading space apart) before its model sees it; return whether it now does.

    The bound is saved in tokenizer.json, so that training and every later encoding cut the same way. A
    byte-level pre-tokenizer's own regex is bounded (`bounded_byte_level_words`): the same pieces for ordinary
    text at the same cost. Any other pre-tokenizer that splits text into words gets a last step that cuts its
    pieces (`word_bound`, counting bytes after a byte-level step; a pass of its own over every piece). A bound
    already there is replaced. A pre-tokenizer that keeps the whole text as one piece (none, or a Metaspace that
    does not split) is left as it is: cutting it would cut ordinary text. `max_chars` None leaves every tokenizer
    as it is.
    """
    current = backend.pre_tokenizer
    if max_chars is None or current is None or len(current.pre_tokenize_str(PROBE)) < 2:
        return False
    state = _state(current)
    if word_bound_limit(state) is not None:
        if state["pretokenizers"][-1]["type"] == "ByteLevel":  # a bounded byte-level regex: back to the plain one
            byte_level = state["pretokenizers"][-1]
            current = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=byte_level["trim_offsets"])
        else:
            kept = len(state["pretokenizers"]) - 1
            current = pre_tokenizers.Sequence([current[i] for i in range(kept)]) if kept > 1 else current[0]
        state = _state(current)
    if _is_plain_byte_level(state):
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(bounded_byte_level_words(max_chars)), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=state["trim_offsets"], use_regex=False),
            ]
        )
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([current, word_bound(max_chars)])
    return True


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer saved by prepare, set up for left-padded batch generation, with its saved word bound.

    Passed to the constructor rather than set afterwards, so that the converted model's saved
    tokenizer pads on the left too: right padding makes batched `generate` continue after pads.
    """
    tokenizer = AutoTokenizer.from_pretrained(str(folder), padding_side="left")
    saved = Path(folder) / TOKENIZER_FILE
    if getattr(tokenizer, "is_fast", False) and saved.is_file():
        backend = tokenizer.backend_tokenizer
        if word_bound_limit(_state(backend.pre_tokenizer)) is None:
            # transformers 5 rebuilds the pipeline of a class with its own __init__ (GPT2Tokenizer, the class a
            # Hugging Face SmolLM2 folder names) from the vocabulary, dropping the saved pre-tokenizer's bound.
            limit = word_bound_limit(json.loads(saved.read_text(encoding="utf-8")).get("pre_tokenizer"))
            bound_word_length(backend, limit)
    return tokenizer
