"""Benchmark: tokenizer training and encoding time against the corpus's longest word, with and without the bound.

    python bench/tokenizer_long_words.py [--lengths 50000 100000 200000 1000000 2000000]
                                         [--before-train-up-to 200000] [--before-encode-up-to 2000000]

An ordinary corpus (`--ordinary-chars` of generated prose) plus one word of each length: prose without its
spaces (what a long CSV field or a payload dump without whitespace is to the byte-level pre-tokenizer, a word
whose BPE cost grows with the square of its length). Three tokenizers, at the default config's `data.vocab_size`:
- before: words kept whole (`train_bpe_tokenizer(..., max_word_chars=None)`, the tokenizer before the bound);
- after: words cut at `MAX_WORD_CHARS`, as prepare does now;
- short words: the same characters with a space every 8, words kept whole: what the text costs as ordinary
  words, the linear reference.
Training: each is trained on the ordinary corpus and the word (before only up to `--before-train-up-to`: longer
words take minutes to hours). Encoding (`shard_encode.encode_texts`, as prepare's encode phase): the corpus and
the word, each with a tokenizer trained on the ordinary corpus alone (the same merges before and after, since it
has no long word). Reports seconds, and seconds per MB of corpus for both together. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from steps.config import load_config
from steps.prepare.shard_encode import encode_texts
from steps.prepare.tokenizer_training import MAX_WORD_CHARS, train_bpe_tokenizer
from steps.project_files import DEFAULT_CONFIG

WAYS = {"before": (None, False), "after": (MAX_WORD_CHARS, False), "short_words": (None, True)}
"""Each tokenizer's word bound, and whether the long word is given as short words."""


def _prose(rng: random.Random, words: list[str], chars: int, separator: str) -> str:
    parts, size = [], 0
    while size < chars:
        word = rng.choice(words)
        parts.append(word)
        size += len(word) + len(separator)
    return separator.join(parts)[:chars]


def _spaced(text: str, every: int = 8) -> str:
    return " ".join(text[i : i + every] for i in range(0, len(text), every))


def _seconds(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return round(time.perf_counter() - started, 2), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[50_000, 100_000, 200_000, 1_000_000, 2_000_000])
    parser.add_argument("--before-train-up-to", type=int, default=200_000)
    parser.add_argument("--before-encode-up-to", type=int, default=2_000_000)
    parser.add_argument("--ordinary-chars", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    vocab_size = load_config(DEFAULT_CONFIG).data.vocab_size
    rng = random.Random(args.seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    ordinary = [_prose(rng, words, 2_000, " ") for _ in range(args.ordinary_chars // 2_000)]
    long_text = _prose(rng, words, max(args.lengths), "")  # each length's word is a prefix of it
    encoders, plain = {}, {"train_s": {}, "encode_s": {}}  # plain: the ordinary corpus alone
    for way, (bound, _) in WAYS.items():
        plain["train_s"][way], encoders[way] = _seconds(lambda b=bound: train_bpe_tokenizer(ordinary, vocab_size, b))
        plain["encode_s"][way] = _seconds(lambda w=way: encode_texts(ordinary, encoders[w]))[0]
    print(json.dumps(plain), flush=True)
    runs = []
    for length in args.lengths:
        run: dict = {"longest_word": length, "train_s": {}, "encode_s": {}, "s_per_mb": {}}
        for way, (bound, as_short_words) in WAYS.items():
            texts = [*ordinary, _spaced(long_text[:length]) if as_short_words else long_text[:length]]
            if way != "before" or length <= args.before_train_up_to:
                run["train_s"][way] = _seconds(lambda t=texts, b=bound: train_bpe_tokenizer(t, vocab_size, b))[0]
            if way != "before" or length <= args.before_encode_up_to:
                run["encode_s"][way] = _seconds(lambda t=texts, w=way: encode_texts(t, encoders[w]))[0]
            if way in run["train_s"] and way in run["encode_s"]:
                mb = sum(map(len, texts)) / 1e6
                run["s_per_mb"][way] = round((run["train_s"][way] + run["encode_s"][way]) / mb, 2)
        runs.append(run)
        print(json.dumps(run), flush=True)
    print(
        json.dumps(
            {
                "bench": "tokenizer_long_words",
                "vocab_size": vocab_size,
                "max_word_chars": MAX_WORD_CHARS,
                "ordinary_chars": sum(map(len, ordinary)),
                "ordinary_alone": plain,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
