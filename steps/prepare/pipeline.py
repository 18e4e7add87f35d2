"""prepare: corpus in, tokenizer and packed Arrow datasets out, in memory that does not grow with the corpus.

Four phases over corpus shards (`steps.prepare.shard_plan`); one machine reads its shards in parallel
processes (`steps.prepare.local_reads`) and runs the other phases in turn, and the flow runs them as a
Metaflow foreach over N shards:
1. read (per shard, `shard_read`): read, clean and redact each document, fingerprint it (SHA-256, MinHash);
2. decide (join, `shard_decide`): exact and near duplicates and the train/validation split for the whole
   corpus in corpus order, from the fingerprints; then the BPE tokenizer trained on the training side (or
   the base model's);
3. encode (per shard, `shard_encode`): the tokens of each kept document;
4. pack (join, `shard_pack`): each side's tokens in corpus order into Arrow blocks, the same bytes whatever
   the number of shards.

Writes `<out>/tokenizer/` (`steps.formats.tokenizer_folder`) and `<out>/dataset/`
(`steps.formats.dataset`: Arrow blocks, held-out prompts, the report of every skipped,
dropped or redacted document, and the summary: counts, token totals, shard hashes, the
config used).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from datasets import disable_progress_bars, load_from_disk

from steps.config import DataConfig, InstructConfig
from steps.formats.dataset import DATASET_SUMMARY_FILE, REPORT_FILE, SPLITS
from steps.formats.gguf_source import read_gguf_note
from steps.formats.model_folder import check_block_fits
from steps.formats.tokenizer_folder import load_tokenizer
from steps.prepare.console import say, split_summary
from steps.prepare.corpus import CorpusError, reading_processes
from steps.prepare.instructions_write import set_up_template
from steps.prepare.local_reads import read_locally
from steps.prepare.report import CorpusReport
from steps.prepare.shard_decide import Decisions, decide, kept_texts
from steps.prepare.shard_encode import encode_shard
from steps.prepare.shard_pack import pack_dataset
from steps.prepare.shard_plan import PLAN_FILE, load_plan
from steps.prepare.shard_rows import TIMING_FILE, histogram
from steps.prepare.tokenizer_training import (
    document_separator,
    load_base_tokenizer,
    sample_training_texts,
    train_bpe_tokenizer,
)
from steps.results import PrepareSummary
from steps.runtime.progress_clock import ProgressClock
from steps.runtime.scratch import stage_scratch
from steps.runtime.storage import file_sha256


def _timed(folder: Path, phase: str, started: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TIMING_FILE).write_text(json.dumps({phase: time.perf_counter() - started}))


def _seconds(folders: list[Path]) -> dict[str, float]:
    total: dict[str, float] = {}
    for folder in folders:
        path = Path(folder) / TIMING_FILE
        for phase, seconds in (json.loads(path.read_text()) if path.is_file() else {}).items():
            total[phase] = total.get(phase, 0.0) + seconds
    return total


def _setup(data: DataConfig) -> None:
    disable_progress_bars()
    if data.num_proc and "RAYON_NUM_THREADS" not in os.environ:
        # The tokenizer's thread pool reads this once, when first used; in a fresh step process that is here.
        os.environ["RAYON_NUM_THREADS"] = str(data.num_proc)


def decide_phase(
    data: DataConfig,
    read_dirs: list[Path],
    decisions_dir: Path,
    tokenizer_dir: Path,
    base_model_dir: Path | None = None,
    progress_every_s: float = 10.0,
    instruct: InstructConfig | None = None,
) -> None:
    """Phase 2, from the read phase's folders (every shard's `plan.json` and `rows.arrow`): `decisions_dir`
    (report, split, what each shard keeps) and the tokenizer in `tokenizer_dir` (with its chat template when
    `instruct` tunes on instructions)."""
    _setup(data)
    if base_model_dir is not None:
        check_block_fits(base_model_dir, data.block_size)
    decisions_dir, started = Path(decisions_dir), time.perf_counter()
    if len({(Path(folder) / PLAN_FILE).read_bytes() for folder in read_dirs}) > 1:
        # Each worker planned from its own look at the corpus: they differ when files came or went meanwhile.
        raise CorpusError(
            f"data.corpus = {data.corpus!r} changed while prepare's workers read it (they planned different "
            "shards): files were added, removed or changed; run prepare again once the corpus is settled"
        )
    decisions_dir.mkdir(parents=True, exist_ok=True)
    with open(decisions_dir / REPORT_FILE, "w", encoding="utf-8") as rows:
        decisions = decide(
            data, load_plan(read_dirs[0]), read_dirs, decisions_dir, CorpusReport(rows=rows), progress_every_s
        )
    timings = _seconds(read_dirs)
    timings["read_clean_dedupe"] = timings.get("read_clean_dedupe", 0.0) + time.perf_counter() - started
    started = time.perf_counter()
    if base_model_dir is not None:
        say(f"tokenizer: the base model's, from {base_model_dir}")
        tokenizer = load_base_tokenizer(base_model_dir)
    else:
        train_docs, budget = decisions.documents["train"], data.tokenizer_sample_chars
        say(
            f"tokenizer: training a {data.vocab_size:,}-token BPE on {train_docs:,} training documents"
            + (f" (a sample of at most {budget:,} characters)" if budget else "")
        )
        # Trained on the training side only, so held-out text is truly unseen; in corpus order, so the sample is
        # the same whatever the number of shards.
        train_texts = (text for _, text in kept_texts(read_dirs, decisions_dir, side=0))
        tokenizer = train_bpe_tokenizer(sample_training_texts(train_texts, budget, data.seed), data.vocab_size)
    if instruct is not None and instruct.enabled:
        # Before anything is encoded or a model sized to the tokenizer: ChatML's turn markers join a scratch vocabulary.
        set_up_template(tokenizer, instruct, add_tokens=base_model_dir is None)
    document_separator(tokenizer, data.document_separator)  # a bad name fails before encoding
    tokenizer.save_pretrained(str(tokenizer_dir))
    timings["tokenizer"] = time.perf_counter() - started
    decisions.base_model_note = read_gguf_note(base_model_dir)
    decisions.save(decisions_dir)
    (decisions_dir / TIMING_FILE).write_text(json.dumps(timings))


def encode_phase(
    data: DataConfig, shard: int, read_dir: Path, decisions_dir: Path, tokenizer_dir: Path, out: Path
) -> None:
    """Phase 3 for one shard: `<out>/tokens.arrow`."""
    _setup(data)
    started = time.perf_counter()
    encode_shard(shard, Path(read_dir), Path(decisions_dir), load_tokenizer(tokenizer_dir), Path(out))
    _timed(Path(out), "encode_pack", started)


def pack_phase(
    data: DataConfig,
    decisions_dir: Path,
    tokenizer_dir: Path,
    encoded_dirs: list[Path],
    out: Path,
    require_prompts: bool = True,
    progress_every_s: float = 10.0,
) -> PrepareSummary:
    """Phase 4: `<out>/dataset/`, with the report and the summary of all shards."""
    _setup(data)
    started = time.perf_counter()
    dataset_dir = Path(out) / "dataset"
    dataset_dir.mkdir(parents=True, exist_ok=True)
    decisions = Decisions.load(decisions_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    separator = document_separator(tokenizer, data.document_separator)
    say(f"encoded {sum(decisions.documents.values()):,} documents; packing into blocks of {data.block_size} tokens")
    packed = pack_dataset(
        encoded_dirs,
        tokenizer,
        decisions.documents,
        data,
        dataset_dir,
        ProgressClock(progress_every_s),
        require_prompts,
    )
    shutil.copyfile(Path(decisions_dir) / REPORT_FILE, dataset_dir / REPORT_FILE)
    timings = _seconds([Path(decisions_dir), *encoded_dirs])
    timings["encode_pack"] = timings.get("encode_pack", 0.0) + time.perf_counter() - started
    summary = PrepareSummary(
        corpus=data.corpus,
        report=decisions.report,
        documents=decisions.documents,
        tokens=packed["tokens"],
        blocks=packed["blocks"],
        block_size=data.block_size,
        vocab_size=len(tokenizer),
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
        separator=separator[0],
        separator_id=separator[1],
        base_model_note=decisions.base_model_note,
        prompts=packed["prompts"],
        doc_chars_histogram=decisions.doc_chars_histogram,
        doc_tokens_histogram=histogram(packed["token_counts"]),
        shards={
            side: {p.name: file_sha256(p) for p in sorted((dataset_dir / side).glob("*.arrow"))} for side in SPLITS
        },
        timings_s={phase: round(seconds, 3) for phase, seconds in timings.items()},
        validation_doc_ids=decisions.validation_doc_ids,
        config=data,
        sample_blocks=sample_blocks(dataset_dir, tokenizer),
    )
    (dataset_dir / DATASET_SUMMARY_FILE).write_text(summary.model_dump_json(indent=1))
    split_summary(decisions.documents, packed["tokens"], packed["blocks"], data.block_size)
    say(f"{packed['prompts']} evaluation prompts of {data.prompt_tokens} tokens")
    if packed["prompts"] < data.eval_prompts:
        say(
            f"data.eval_prompts asks for {data.eval_prompts}; only {packed['prompts']} of the "
            f"{decisions.documents['validation']} held-out documents have the {data.prompt_tokens + 8} tokens a "
            "prompt needs (data.prompt_tokens + 8)"
        )
    say(f"took {sum(timings.values()):.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return summary


def run_prepare(
    data: DataConfig,
    out_dir: str | Path,
    base_model_dir: str | Path | None = None,
    require_prompts: bool = True,
    progress_every_s: float = 10.0,
    shards: int | None = None,
    instruct: InstructConfig | None = None,
) -> PrepareSummary:
    """Read, clean, tokenize, split and pack on this machine; return (and write into the dataset) the statistics
    the card shows. The corpus is read in `shards` shards (default: one per reading process, `data.num_proc`
    or this machine's cores), in parallel processes (`steps.prepare.local_reads`); the dataset is the same
    bytes whatever the number.

    Fails (`CorpusError`) when the held-out side yields no evaluation prompt, unless `require_prompts` is
    off (the run brings its own prompt file). Prints progress every `progress_every_s` seconds and a summary.
    """
    out_dir = Path(out_dir)
    base = Path(base_model_dir) if base_model_dir is not None else None
    if base is not None:
        check_block_fits(base, data.block_size)  # before reading the corpus
    _setup(data)
    processes = reading_processes(data)
    shards = shards or processes
    with stage_scratch("prepare-phases") as work:
        reads = [work / "read" / str(k) for k in range(shards)]
        read_locally(data, reads, processes, progress_every_s)
        decide_phase(data, reads, work / "decisions", out_dir / "tokenizer", base, progress_every_s, instruct)
        encoded = [work / "encoded" / str(k) for k in range(shards)]
        for shard, folder in enumerate(encoded):
            encode_phase(data, shard, reads[shard], work / "decisions", out_dir / "tokenizer", folder)
        return pack_phase(
            data, work / "decisions", out_dir / "tokenizer", encoded, out_dir, require_prompts, progress_every_s
        )


def sample_blocks(dataset_dir: str | Path, tokenizer, count: int = 3, chars: int = 400) -> list[str]:
    """A few training blocks decoded back to text, for people to read on the card."""
    train = load_from_disk(str(Path(dataset_dir) / "train"))
    picks = np.linspace(0, len(train) - 1, num=min(count, len(train)), dtype=int)
    return [tokenizer.decode(train[int(i)]["input_ids"])[:chars] for i in picks]
