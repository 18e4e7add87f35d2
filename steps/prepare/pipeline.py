"""prepare: corpus in, tokenizer and packed Arrow datasets out, in memory that does not grow with the corpus.

Three streaming passes:
1. read, clean, redact and deduplicate (`steps.prepare.corpus`, in worker processes) into a
   temporary JSONL of kept documents, deciding each document's side of the split;
2. train the BPE tokenizer on the training side of that file (or load the base model's);
3. batch-encode the file about 1 MB of text at a time (the tokenizer's own threads) and pack each
   side straight into Arrow shards.

Writes `<out>/tokenizer/` (`steps.formats.tokenizer_folder`) and `<out>/dataset/`
(`steps.formats.dataset`: Arrow blocks, held-out prompts, the report of every skipped,
dropped or redacted document, and the summary: counts, token totals, shard hashes, the
config used).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from datasets import disable_progress_bars, load_from_disk

from steps.config import DataConfig
from steps.formats.blocks import BlockWriter
from steps.formats.dataset import REPORT_FILE, SPLITS, SUMMARY_FILE, write_prompts
from steps.formats.gguf_source import read_gguf_note
from steps.formats.model_folder import check_block_fits
from steps.formats.tokenizer_folder import load_tokenizer
from steps.prepare.console import ProgressClock, reading_progress, reading_summary, say, split_summary
from steps.prepare.corpus import CorpusError, empty_corpus_error, iter_documents
from steps.prepare.report import CorpusReport
from steps.prepare.split import DocumentSplit
from steps.prepare.tokenizer_training import (
    document_separator,
    load_base_tokenizer,
    sample_training_texts,
    train_bpe_tokenizer,
)
from steps.results import PrepareSummary
from steps.runtime.storage import file_sha256

# Text encoded per call: enough for the tokenizer's threads to share, small enough that the Encoding
# objects (ids, offsets, token strings) held per call stay a few tens of MB whatever the corpus size.
_ENCODE_CHARS = 1 << 20


def _histogram(values: array, bins: int = 20) -> dict[str, list[float]]:
    counts, edges = np.histogram(np.frombuffer(values, dtype=np.uint32), bins=bins)
    return {"counts": counts.tolist(), "edges": edges.round(1).tolist()}


def _read_cleaned(path: Path) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            yield row["id"], row["text"]


def _chunks(rows: Iterator[tuple[str, str]], chars: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    size = 0
    for row in rows:
        chunk.append(row)
        size += len(row[1])
        if size >= chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _clean_to_file(
    data: DataConfig, report: CorpusReport, path: Path, split: DocumentSplit, progress: ProgressClock
) -> array:
    """Pass 1: kept documents to a JSONL file; returns their lengths in characters."""
    chars = array("I")
    # Every document read, dropped or kept, and every skipped file ticks the report: progress shows on long
    # corpora even where most files are skipped.
    report.on_event = lambda seen: reading_progress(seen, progress)
    with open(path, "w", encoding="utf-8") as handle:
        for doc in iter_documents(data, report):
            handle.write(json.dumps({"id": doc.doc_id, "text": doc.text}, ensure_ascii=False) + "\n")
            split.observe(doc.doc_id)
            chars.append(min(len(doc.text), 2**32 - 1))
            report.tick()
    report.on_event = None
    reading_summary(report, data.corpus)
    if report.kept == 0:
        raise empty_corpus_error(data, report)
    try:
        split.finish()
    except ValueError as exc:
        raise CorpusError(f"data.corpus = {data.corpus!r}: {exc} after cleaning; add documents") from None
    return chars


def _prompt(doc_id: str, ids: list[int], tokenizer, data: DataConfig) -> dict[str, Any]:
    """A held-out document cut into a prompt and the reference continuation."""
    prompt_ids = ids[: data.prompt_tokens]
    return {
        "doc_id": doc_id,
        "prompt": tokenizer.decode(prompt_ids),
        "prompt_ids": prompt_ids,
        "reference": tokenizer.decode(ids[data.prompt_tokens : data.prompt_tokens * 2]),
    }


def _encode(texts: list[str], tokenizer) -> list[list[int]]:
    if getattr(tokenizer, "is_fast", False):
        # The Rust batch encoder straight away, in parallel threads, without offsets or attention masks.
        return [e.ids for e in tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _encode_and_pack(
    cleaned: Path,
    tokenizer,
    split: DocumentSplit,
    data: DataConfig,
    dataset_dir: Path,
    progress: ProgressClock,
    require_prompts: bool,
) -> dict:
    """Pass 3: tokens of every document, packed into each side's Arrow shards as they come."""
    _, separator_id = document_separator(tokenizer, data.document_separator)
    writers = {side: BlockWriter(dataset_dir / side, data.block_size, separator_id) for side in SPLITS}
    tokens = {"train": 0, "validation": 0}
    token_counts = array("I")
    prompts: list[dict[str, Any]] = []
    longest_held_out = 0
    total = sum(split.counts.values())
    for chunk in _chunks(_read_cleaned(cleaned), _ENCODE_CHARS):
        by_side: dict[str, list[list[int]]] = {"train": [], "validation": []}
        for (doc_id, _), ids in zip(chunk, _encode([text for _, text in chunk], tokenizer), strict=True):
            side = "validation" if split.is_validation(doc_id) else "train"
            by_side[side].append(ids)
            tokens[side] += len(ids)
            token_counts.append(len(ids))
            if side == "validation":
                longest_held_out = max(longest_held_out, len(ids))
                if len(prompts) < data.eval_prompts and len(ids) >= data.prompt_tokens + 8:
                    prompts.append(_prompt(doc_id, ids, tokenizer, data))
        for side, token_lists in by_side.items():
            writers[side].add(token_lists)
        if progress.due():
            say(
                f"encoding: {len(token_counts):,} of {total:,} documents, {sum(tokens.values()):,} tokens, "
                f"{progress.elapsed():.0f} s"
            )
    blocks = {side: writer.close() for side, writer in writers.items()}
    if blocks["train"] == 0 or blocks["validation"] == 0:
        raise CorpusError(
            f"too little text for data.block_size = {data.block_size}: {blocks['train']} training and "
            f"{blocks['validation']} validation blocks; add documents, lower data.block_size or raise "
            "data.validation_fraction"
        )
    if not prompts and require_prompts:
        # evaluate would stop on this after training: say it now.
        raise CorpusError(
            f"no held-out document is long enough for an evaluation prompt: data.prompt_tokens = "
            f"{data.prompt_tokens} needs documents of at least {data.prompt_tokens + 8} tokens, and the longest of "
            f"the {split.counts['validation']} validation documents has {longest_held_out}; lower "
            "data.prompt_tokens, raise data.validation_fraction, add longer documents or set evaluate.prompt_file"
        )
    write_prompts(dataset_dir, prompts)
    return {"tokens": tokens, "blocks": blocks, "prompts": len(prompts), "token_counts": token_counts}


def run_prepare(
    data: DataConfig,
    out_dir: str | Path,
    base_model_dir: str | Path | None = None,
    require_prompts: bool = True,
    progress_every_s: float = 10.0,
) -> PrepareSummary:
    """Read, clean, tokenize, split and pack; return (and write into the dataset) the statistics the card shows.

    Fails (`CorpusError`) when the held-out side yields no evaluation prompt, unless `require_prompts` is
    off (the run brings its own prompt file). Prints progress every `progress_every_s` seconds and a summary.
    """
    disable_progress_bars()
    if base_model_dir is not None:
        check_block_fits(base_model_dir, data.block_size)
    if data.num_proc and "RAYON_NUM_THREADS" not in os.environ:
        # The tokenizer's thread pool reads this once, when first used; in a fresh step process that is here.
        os.environ["RAYON_NUM_THREADS"] = str(data.num_proc)
    out_dir = Path(out_dir)
    dataset_dir = out_dir / "dataset"
    dataset_dir.mkdir(parents=True, exist_ok=True)
    split = DocumentSplit(data.validation_fraction, data.seed)
    with (
        tempfile.TemporaryDirectory(prefix="tune-cleaned-") as scratch,
        open(dataset_dir / REPORT_FILE, "w", encoding="utf-8") as rows,
    ):
        report = CorpusReport(rows=rows)
        cleaned = Path(scratch) / "cleaned.jsonl"
        started = time.perf_counter()
        doc_chars = _clean_to_file(data, report, cleaned, split, ProgressClock(progress_every_s))
        timings = {"read_clean_dedupe": time.perf_counter() - started}
        if base_model_dir is not None:
            say(f"tokenizer: the base model's, from {base_model_dir}")
            tokenizer = load_base_tokenizer(base_model_dir)
        else:
            budget = data.tokenizer_sample_chars
            say(
                f"tokenizer: training a {data.vocab_size:,}-token BPE on {split.counts['train']:,} training documents"
                + (f" (a sample of at most {budget:,} characters)" if budget else "")
            )
            # Trained on the training side only, so held-out text is truly unseen.
            train_texts = (text for doc_id, text in _read_cleaned(cleaned) if not split.is_validation(doc_id))
            sample = sample_training_texts(train_texts, budget, data.seed)
            tokenizer = train_bpe_tokenizer(sample, data.vocab_size)
        separator = document_separator(tokenizer, data.document_separator)  # a bad name fails before packing
        tokenizer.save_pretrained(str(out_dir / "tokenizer"))
        timings["tokenizer"] = time.perf_counter() - started - sum(timings.values())
        say(f"encoding and packing {sum(split.counts.values()):,} documents into blocks of {data.block_size} tokens")
        packed = _encode_and_pack(
            cleaned, tokenizer, split, data, dataset_dir, ProgressClock(progress_every_s), require_prompts
        )
        timings["encode_pack"] = time.perf_counter() - started - sum(timings.values())
        validation_ids = [doc_id for doc_id, _ in _read_cleaned(cleaned) if split.is_validation(doc_id)]

    summary = PrepareSummary(
        corpus=data.corpus,
        report=report.summary(),
        documents=split.counts,
        tokens=packed["tokens"],
        blocks=packed["blocks"],
        block_size=data.block_size,
        vocab_size=len(tokenizer),
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
        separator=separator[0],
        separator_id=separator[1],
        base_model_note=read_gguf_note(base_model_dir),
        prompts=packed["prompts"],
        doc_chars_histogram=_histogram(doc_chars),
        doc_tokens_histogram=_histogram(packed["token_counts"]),
        shards={
            side: {p.name: file_sha256(p) for p in sorted((dataset_dir / side).glob("*.arrow"))} for side in SPLITS
        },
        timings_s={phase: round(seconds, 3) for phase, seconds in timings.items()},
        validation_doc_ids=validation_ids,
        config=data,
        sample_blocks=sample_blocks(dataset_dir, load_tokenizer(out_dir / "tokenizer")),
    )
    (dataset_dir / SUMMARY_FILE).write_text(summary.model_dump_json(indent=1))
    split_summary(split.counts, packed["tokens"], packed["blocks"], data.block_size)
    say(f"{packed['prompts']} evaluation prompts of {data.prompt_tokens} tokens")
    if packed["prompts"] < data.eval_prompts:
        say(
            f"data.eval_prompts asks for {data.eval_prompts}; only {packed['prompts']} of the "
            f"{split.counts['validation']} held-out documents have the {data.prompt_tokens + 8} tokens a prompt "
            "needs (data.prompt_tokens + 8)"
        )
    say(f"took {sum(timings.values()):.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return summary


def sample_blocks(dataset_dir: str | Path, tokenizer, count: int = 3, chars: int = 400) -> list[str]:
    """A few training blocks decoded back to text, for people to read on the card."""
    train = load_from_disk(str(Path(dataset_dir) / "train"))
    picks = np.linspace(0, len(train) - 1, num=min(count, len(train)), dtype=int)
    return [tokenizer.decode(train[int(i)]["input_ids"])[:chars] for i in picks]
