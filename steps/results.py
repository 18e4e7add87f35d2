"""What each stage hands to the next, to the flow and to the cards: stored references plus typed summaries.

A stage entrypoint writes its summary as JSON in its output folder; the stage's
controller function (`steps.<stage>.stage`) reads it back through these models
and returns a `*Result`. The flow stores `model_dump()` of each part as an
artifact, so what the Metaflow client shows stays plain dicts and lists; a
renamed or missing field fails here, where the summary is read, not in a card.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from steps.config import DataConfig
from steps.runtime.storage.manifest import StoredDir


class Record(BaseModel):
    # Every field is named here; an unknown one is drift between a writer and its readers.
    model_config = ConfigDict(extra="forbid")


# prepare


class SkippedFile(Record):
    path: str
    reason: str


class DuplicateCounts(Record):
    exact: int
    near: int


class CorpusReportSummary(Record):
    """Counts of what reading the corpus kept, dropped and changed; the events are in report.jsonl."""

    files_by_format: dict[str, int]
    documents_by_format: dict[str, int]
    documents_by_encoding: dict[str, int] = {}
    """Kept documents by the text encoding they were decoded from (`utf-8`, `utf-16`, `cp1252`, ...); PDF and XML
    documents, decoded by their parsers, are not counted."""
    dropped: dict[str, int]
    duplicates: DuplicateCounts
    redactions: dict[str, int]
    redacted_documents: int
    skipped_files: list[SkippedFile]
    """The first few skipped files, with reasons (all are counted in skipped_file_count)."""
    skipped_file_count: int
    kept_documents: int
    kept_chars: int


class SplitCounts(Record):
    train: int
    validation: int


class Histogram(Record):
    counts: list[int]
    edges: list[float]


class PrepareSummary(Record):
    corpus: str
    report: CorpusReportSummary
    documents: SplitCounts
    tokens: SplitCounts
    blocks: SplitCounts
    block_size: int
    vocab_size: int
    eos_id: int
    pad_id: int | None
    separator: str | None = None
    """The token packed between documents (data.document_separator or the tokenizer's end-of-text token)."""
    separator_id: int | None = None
    base_model_note: str | None = None
    """Set when the base model was dequantized from GGUF: its weights have lost precision."""
    prompts: int
    doc_chars_histogram: Histogram
    doc_tokens_histogram: Histogram
    shards: dict[str, dict[str, str]]
    """Arrow shard name → SHA-256, per split."""
    timings_s: dict[str, float]
    validation_doc_ids: list[str]
    config: DataConfig
    sample_blocks: list[str]
    """A few training blocks decoded back to text, for people to read."""


class PrepareResult(Record):
    dataset: StoredDir
    tokenizer: StoredDir
    summary: PrepareSummary
    base_model_copy: StoredDir | None = None
    """The run's dequantized copy of a GGUF base model, which train and evaluate load (a resumed run's too, whose
    prepare is the one of the run it resumes); None for a Hugging Face folder or no base model."""


# train


class TrainMetric(Record):
    """One logged step (a line of metrics.jsonl)."""

    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens_seen: int
    tokens_per_s: float
    step_s: float
    tflops: float
    mfu: float | None
    memory_gib: float
    time: float


class TrainSummary(Record):
    final_checkpoint: str
    steps: int
    resumed_from_step: int
    resumed_from: str | None
    final_loss: float
    tokens_seen: int
    world_size: int
    zero_stage: int
    parameters: int
    flops_per_token: float
    peak_tflops: float | None
    init_sha256: str
    """Fingerprint of the weights training started from; evaluate rebuilds the untuned model and checks it."""
    elapsed_s: float


class TrainingJobRecord(Record):
    """A finished SageMaker training job: ARN, billable seconds, final metrics."""

    arn: str
    name: str
    status: str
    billable_seconds: int | None
    training_seconds: int | None
    spot: bool
    instance_type: str | None
    instance_count: int | None
    metrics: dict[str, float]


class TrainResult(Record):
    checkpoint: StoredDir
    """The sealed train folder (`steps.formats.train_folder`)."""
    summary: TrainSummary
    metrics: list[TrainMetric]
    job: TrainingJobRecord | None = None


# convert


class TensorCheck(Record):
    name: str
    shape: list[int]
    norm: float


class ConversionRecord(Record):
    checkpoint: str
    step: int
    zero_stage: int
    trained_world_size: int
    dtype: str
    tensors: int
    parameters: int
    written_bytes: int
    shards: int
    all_tensors_checked: bool
    max_logit_difference: float
    tolerance: float
    logits_match: bool
    files: list[str]
    tensor_checks: list[TensorCheck]


class ConvertResult(Record):
    model: StoredDir
    conversion: ConversionRecord
    job: TrainingJobRecord | None = None
    """The SageMaker job that ran the stage (compute.<step>.target: sagemaker); None elsewhere."""


# evaluate


class Perplexity(Record):
    tuned: float
    untuned: float
    ratio: float


class ProbeMetrics(Record):
    probes: int
    exact_match: float | None
    answer_logprob_per_token: float
    choice_accuracy: float


class ProbeComparison(Record):
    """Probe metrics per group (`kind/split` and `all`), for the tuned and the untuned model."""

    tuned: dict[str, ProbeMetrics]
    untuned: dict[str, ProbeMetrics]


class EngineThroughput(Record):
    tokens: int
    seconds: float
    tokens_per_s: float
    latency_s_mean: float
    latency_s_p50: float


class EvalSummary(Record):
    prompts: int
    prompt_sources: dict[str, int]
    engines: list[str]
    generation: dict[str, Any]
    """The generation settings used (decoding, max_new_tokens, batch_size, ...)."""
    perplexity: Perplexity
    perplexity_blocks: int
    general_perplexity: Perplexity | None = None
    """Perplexity on general-domain text (evaluate.general_text), to see forgetting; None when skipped."""
    general_text: str | None = None
    probes: ProbeComparison
    throughput: dict[str, EngineThroughput]
    agreement_with: str
    agreement: dict[str, float]
    """Share of prompts on which each engine's tokens equal those of `agreement_with`."""
    agreement_required: bool
    engines_agree: bool
    engine_notes: dict[str, list[str]]
    world_size: int
    device: str


class GenerationRow(Record):
    """One prompt generated by one engine (a row of generations.parquet)."""

    index: int
    source: str
    doc_id: str
    engine: str
    prompt: str
    reference: str
    generation: str
    tokens: int
    token_ids: list[int]
    latency_s: float


class ProbeRow(Record):
    """One probe scored on one model (a row of probes.parquet)."""

    index: int
    model: str
    kind: str
    split: str
    prompt: str
    answer: str
    choices: list[str]
    suffix: str
    weakness: str
    answer_logprob_per_token: float
    picked: str
    choice_correct: bool
    completion: str | None
    exact_match: bool | None


class EvaluateResult(Record):
    evaluation: StoredDir
    summary: EvalSummary
    table: list[GenerationRow]
    probes: list[ProbeRow]
    job: TrainingJobRecord | None = None
    """The SageMaker job that ran the stage (compute.<step>.target: sagemaker); None elsewhere."""
