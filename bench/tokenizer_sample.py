"""Benchmark: the BPE tokenizer trained on a bounded seeded sample of the training side against one trained on all.

    python bench/tokenizer_sample.py [--corpus cwe] [--budgets 500000 1000000 2000000 4000000]

On the cleaned corpus (prepare's own reading, cleaning and split), trains `data.vocab_size` BPE
tokenizers on all of the training side and on `sample_training_texts` samples of each budget, and
reports for each: training seconds, tokens per character of the held-out side (what a smaller sample
costs in sequence length), the share of the full vocabulary it shares, and the share of held-out
tokens (as the full tokenizer splits them) that are in its vocabulary. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

from steps.config import load_config
from steps.prepare.documents import iter_documents
from steps.prepare.report import CorpusReport
from steps.prepare.split import DocumentSplit
from steps.prepare.tokenizer_training import sample_training_texts, train_bpe_tokenizer
from steps.project_files import DEFAULT_CONFIG


def _figures(tokenizer, held_out: list[str], held_chars: int, full_vocab: set[str], full_tokens: list[str]) -> dict:
    backend = tokenizer.backend_tokenizer
    encodings = backend.encode_batch_fast(held_out, add_special_tokens=False)
    vocab = set(tokenizer.get_vocab())
    return {
        "held_out_tokens_per_char": round(sum(len(e.ids) for e in encodings) / held_chars, 4),
        "vocab_shared_with_full": round(len(vocab & full_vocab) / len(full_vocab), 4),
        "full_held_out_tokens_in_vocab": round(sum(t in vocab for t in full_tokens) / len(full_tokens), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="cwe")
    parser.add_argument("--budgets", type=int, nargs="+", default=[500_000, 1_000_000, 2_000_000, 4_000_000])
    args = parser.parse_args()
    data = load_config(DEFAULT_CONFIG).data.model_copy(update={"corpus": args.corpus})
    docs = [(doc.doc_id, doc.text) for doc in iter_documents(data, CorpusReport())]
    split = DocumentSplit(data.validation_fraction, data.seed)
    for doc_id, _ in docs:
        split.observe(doc_id)
    split.finish()
    train = [text for doc_id, text in docs if not split.is_validation(doc_id)]
    held_out = [text for doc_id, text in docs if split.is_validation(doc_id)]
    held_chars = sum(map(len, held_out))
    started = time.perf_counter()
    full = train_bpe_tokenizer(train, data.vocab_size)
    full_s = time.perf_counter() - started
    full_vocab = set(full.get_vocab())
    full_tokens = [t for e in full.backend_tokenizer.encode_batch(held_out, add_special_tokens=False) for t in e.tokens]
    results = {"all": {"chars": sum(map(len, train)), "train_s": round(full_s, 3)}}
    results["all"].update(_figures(full, held_out, held_chars, full_vocab, full_tokens))
    for budget in args.budgets:
        sample = list(sample_training_texts(train, budget, data.seed))
        started = time.perf_counter()
        tokenizer = train_bpe_tokenizer(sample, data.vocab_size)
        results[str(budget)] = {"chars": sum(map(len, sample)), "train_s": round(time.perf_counter() - started, 3)}
        results[str(budget)].update(_figures(tokenizer, held_out, held_chars, full_vocab, full_tokens))
    print(
        json.dumps(
            {
                "bench": "tokenizer_sample",
                "corpus": args.corpus,
                "vocab_size": data.vocab_size,
                "train_documents": len(train),
                "held_out_documents": len(held_out),
                "held_out_chars": held_chars,
                "by_budget": results,
            }
        )
    )


if __name__ == "__main__":
    main()
