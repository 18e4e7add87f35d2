"""prepare's tokenizer: a byte-level BPE trained on the corpus, or the base model's own.

Both are saved as the tokenizer folder of `steps.formats.tokenizer_folder`, which
every later stage loads.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from steps.formats.tokenizer_folder import bound_word_length

EOS = "<|endoftext|>"
PAD = "<|pad|>"

MAX_WORD_CHARS = 256
"""Longest word, in characters, that the BPE model of prepare's tokenizers sees; longer ones are cut into pieces.

BPE training time grows with the square of the longest word (tokenizers 0.23, byte-level pre-tokenizer, 4096
tokens: one run of 50k, 100k or 200k characters without whitespace added 1.9, 6.3 or 25 s to training on 500k
characters of prose; `bench/tokenizer_long_words.py`), so one long run of letters, digits, symbols or whitespace
(a payload dump, a 300 KB CSV field) could stall prepare for hours. Cut into pieces this long, such a run costs
about what the same characters cost as short words, in training and in encoding, which cuts the same way (the
bound is saved in tokenizer.json). Ordinary words are far shorter: the CWE catalogue's longest is 31 characters
(its tokenizer's vocabulary and its dataset are unchanged), the longest token of SmolLM2's 49k vocabulary 81 (a
newline and 80 spaces).
"""


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, max_word_chars: int | None = MAX_WORD_CHARS
) -> PreTrainedTokenizerFast:
    """A byte-level BPE over the texts, with EOS and PAD as special tokens, its words cut at `max_word_chars`
    characters in training and in every encoding (None keeps them whole, as before the bound)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bound_word_length(bpe, max_word_chars)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD, bos_token=None)


def sample_training_texts(texts: Iterable[str], char_budget: int | None, seed: int) -> Iterator[str]:
    """A seeded random sample of whole documents of at most `char_budget` characters, in their original order.

    Each document draws a random priority from `seed` and its position; the documents with the lowest
    priorities that fit the budget are kept (a bottom-k reservoir: memory is the budget, whatever the number
    of texts, and the texts are read once). When all of them fit, or the budget is None, every text is kept
    and the tokenizer is the one trained on all of the text. A document longer than the budget alone is cut.
    """
    if char_budget is None:
        yield from texts
        return
    rng = random.Random(seed)
    kept: list[tuple[float, int, str]] = []  # a max-heap on priority: (-priority, position, text)
    chars = 0
    for position, text in enumerate(texts):
        priority = rng.random()
        text = text[:char_budget]
        if chars + len(text) > char_budget and kept and -kept[0][0] < priority:
            continue  # every kept document outranks it and there is no room: it would be evicted at once
        heapq.heappush(kept, (-priority, position, text))
        chars += len(text)
        while chars > char_budget:
            chars -= len(heapq.heappop(kept)[2])
    for _, _, text in sorted(kept, key=lambda item: item[1]):
        yield text


def load_base_tokenizer(model_dir: str | Path, max_word_chars: int | None = MAX_WORD_CHARS) -> PreTrainedTokenizerBase:
    """The tokenizer of a local Hugging Face model folder, with a pad token for batching, its words cut at
    `max_word_chars` as a trained tokenizer's are (`bound_word_length`): the same ids for ordinary text, and an
    encoding cost that grows with a long word's length, not its square."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if getattr(tokenizer, "is_fast", False):
        bound_word_length(tokenizer.backend_tokenizer, max_word_chars)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer in {model_dir} has no EOS token; packing needs one between documents")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")
"""End-of-document tokens of common base-model families, preferred over an EOS that may be a chat-turn marker
(SmolLM2-Instruct's EOS is `<|im_end|>`, Llama-3-Instruct's `<|eot_id|>`; their pretraining used these)."""


def document_separator(tokenizer: PreTrainedTokenizerBase, configured: str | None) -> tuple[str, int]:
    """The token packed between documents, and its id: `data.document_separator`, or the end-of-text token."""
    vocab = tokenizer.get_vocab()
    if configured is not None:
        if configured not in vocab:
            raise ValueError(
                f"data.document_separator = {configured!r} is not a token of the tokenizer; "
                "name one of its tokens (e.g. its end-of-text token) or leave it empty to choose automatically"
            )
        return configured, vocab[configured]
    for token in END_OF_TEXT_TOKENS:
        if token in vocab:
            return token, vocab[token]
    return tokenizer.eos_token, tokenizer.eos_token_id
