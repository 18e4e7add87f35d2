"""prepare: corpus in, tokenizer and packed Arrow datasets out.

Writes `<out>/tokenizer/` (a Hugging Face tokenizer folder) and `<out>/dataset/`
(`train/` and `validation/` Arrow datasets of `input_ids` blocks, `prompts.jsonl`
for evaluation, and `manifest.json` with counts and the config used).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, Sequence, Value, disable_progress_bars

from steps.config import DataConfig
from steps.corpus import CorpusError, Document, load_corpus
from steps.domain_tokenizer import load_base_tokenizer, train_bpe_tokenizer
from steps.packing import pack_into_blocks, split_by_document

_FEATURES = Features({"input_ids": Sequence(Value("int32"))})


def _histogram(values: list[int], bins: int = 20) -> dict[str, list[float]]:
    counts, edges = np.histogram(np.asarray(values), bins=bins)
    return {"counts": counts.tolist(), "edges": edges.round(1).tolist()}


def _write_blocks(token_lists: list[list[int]], block_size: int, eos_id: int, path: Path) -> int:
    blocks = [b.tolist() for b in pack_into_blocks(iter(token_lists), block_size, eos_id)]
    Dataset.from_dict({"input_ids": blocks}, features=_FEATURES).save_to_disk(str(path))
    return len(blocks)


def _prompts(docs: list[Document], tokens: list[list[int]], tokenizer, data: DataConfig) -> list[dict[str, Any]]:
    """Held-out documents cut into a prompt and the reference continuation."""
    rows = []
    for doc, ids in zip(docs, tokens, strict=True):
        if len(rows) == data.eval_prompts:
            break
        if len(ids) < data.prompt_tokens + 8:
            continue
        prompt_ids = ids[: data.prompt_tokens]
        reference_ids = ids[data.prompt_tokens : data.prompt_tokens * 2]
        rows.append(
            {
                "doc_id": doc.doc_id,
                "prompt": tokenizer.decode(prompt_ids),
                "prompt_ids": prompt_ids,
                "reference": tokenizer.decode(reference_ids),
            }
        )
    return rows


def run_prepare(data: DataConfig, out_dir: str | Path, base_model_dir: str | Path | None = None) -> dict[str, Any]:
    """Read, clean, tokenize, split and pack; return the statistics the card shows."""
    disable_progress_bars()
    out_dir = Path(out_dir)
    documents, report = load_corpus(data.corpus, data.text_fields, data.min_chars)

    train_idx, val_idx = split_by_document([d.doc_id for d in documents], data.validation_fraction, data.seed)
    if base_model_dir is not None:
        tokenizer = load_base_tokenizer(base_model_dir)
    else:
        # Trained on the training side only, so held-out text is truly unseen.
        tokenizer = train_bpe_tokenizer((documents[i].text for i in train_idx), data.vocab_size)
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))

    encoded = tokenizer([d.text for d in documents], add_special_tokens=False)["input_ids"]
    eos_id = tokenizer.eos_token_id
    dataset_dir = out_dir / "dataset"
    train_blocks = _write_blocks([encoded[i] for i in train_idx], data.block_size, eos_id, dataset_dir / "train")
    val_blocks = _write_blocks([encoded[i] for i in val_idx], data.block_size, eos_id, dataset_dir / "validation")
    if train_blocks == 0 or val_blocks == 0:
        raise CorpusError(
            f"too little text for data.block_size = {data.block_size}: {train_blocks} training and "
            f"{val_blocks} validation blocks; add documents, lower data.block_size or raise data.validation_fraction"
        )

    prompts = _prompts([documents[i] for i in val_idx], [encoded[i] for i in val_idx], tokenizer, data)
    with open(dataset_dir / "prompts.jsonl", "w") as handle:
        for row in prompts:
            handle.write(json.dumps(row) + "\n")

    token_counts = [len(t) for t in encoded]
    summary = {
        "corpus": data.corpus,
        "report": report.to_dict(),
        "documents": {"train": len(train_idx), "validation": len(val_idx)},
        "tokens": {
            "train": int(sum(token_counts[i] for i in train_idx)),
            "validation": int(sum(token_counts[i] for i in val_idx)),
        },
        "blocks": {"train": train_blocks, "validation": val_blocks},
        "block_size": data.block_size,
        "vocab_size": len(tokenizer),
        "eos_id": eos_id,
        "pad_id": tokenizer.pad_token_id,
        "prompts": len(prompts),
        "doc_chars_histogram": _histogram([len(d.text) for d in documents]),
        "doc_tokens_histogram": _histogram(token_counts),
        "validation_doc_ids": [documents[i].doc_id for i in val_idx],
        "config": data.model_dump(),
    }
    (dataset_dir / "manifest.json").write_text(json.dumps(summary, indent=1))
    return summary


def sample_blocks(dataset_dir: str | Path, tokenizer, count: int = 3, chars: int = 400) -> list[str]:
    """A few training blocks decoded back to text, for people to read on the card."""
    from datasets import load_from_disk

    train = load_from_disk(str(Path(dataset_dir) / "train"))
    picks = np.linspace(0, len(train) - 1, num=min(count, len(train)), dtype=int)
    return [tokenizer.decode(train[int(i)]["input_ids"])[:chars] for i in picks]
