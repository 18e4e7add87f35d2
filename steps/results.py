"""What each stage hands to the next, to the flow and to the cards: stored references plus typed summaries.

A stage entrypoint writes its summary as JSON in its output folder; the runner
(`steps.dispatch.runner`) reads it back through these models and returns the
stage's `*Result`, whose fields are named as the flow's artifacts: the flow keeps
each field of its `model_dump()` as one artifact, so what the Metaflow client
shows stays plain dicts and lists; a renamed or missing field fails here, where
the summary is read, not in a card. Fields marked `exclude` are for the card only.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer

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

    def headline(self) -> dict[str, Any]:
        """What a person opens first in the Metaflow UI: counts by name, one level deep, small enough for the UI to
        show (it shows an artifact's value below 4 KB). The whole summary is the dataset's summary.json and the card."""
        report = self.report
        return {
            "corpus": self.corpus,
            "documents_kept": report.kept_documents,
            "documents_dropped": dict(report.dropped),
            "duplicates_exact": report.duplicates.exact,
            "duplicates_near": report.duplicates.near,
            "documents_redacted": report.redacted_documents,
            "redactions": dict(report.redactions),
            "files_skipped": report.skipped_file_count,
            "documents_by_encoding": dict(report.documents_by_encoding),
            **{f"{what}_{side}": getattr(getattr(self, what), side) for what in SPLIT_COUNTS for side in SIDES},
            "block_size": self.block_size,
            "vocab_size": self.vocab_size,
            "separator": self.separator,
            "separator_id": self.separator_id,
            "prompts": self.prompts,
            "base_model_note": self.base_model_note,
            "details": "the dataset's summary.json (references.dataset) and the prepare card",
        }


SPLIT_COUNTS, SIDES = ("documents", "tokens", "blocks"), ("train", "validation")


class InstructionSummary(Record):
    source: str
    """instruct.instructions as configured (`cwe`, a folder, glob or s3:// prefix)."""
    report: CorpusReportSummary
    """What reading kept, dropped and redacted; `kept_documents` counts conversations."""
    conversations: SplitCounts
    tokens: SplitCounts
    """All tokens of the stored conversations, template included."""
    label_tokens: SplitCounts
    """Tokens that carry loss (assistant turns and their end-of-turn tokens)."""
    longest: int
    """Tokens of the longest stored conversation (at most instruct.seq_length)."""
    questions: int
    held_out_subjects: list[str]
    """CWE keys of the held-out weaknesses (empty for files, which are split by conversation)."""
    chat_template: str
    """`own` (the tokenizer's), `chatml` (given to a tokenizer without one) or `file` (instruct.chat_template)."""
    end_of_turn_id: int


class PrepareResult(Record):
    dataset: StoredDir
    tokenizer: StoredDir
    base_model: StoredDir | None = None
    """The base model as this run stored it (a Hugging Face folder, a copy of an s3:// prefix or a GGUF file
    dequantized), which train and evaluate load; None when training starts from `model`'s architecture."""
    prepare_summary: PrepareSummary
    instructions: StoredDir | None = None
    """The instruction dataset folder (`steps.formats.instruction_dataset`); None without instruct.instructions."""
    instruction_summary: InstructionSummary | None = None

    @model_serializer(mode="wrap")
    def _as_artifacts(self, handler) -> dict[str, Any]:
        # The artifact is the headline; the card takes the whole typed summary from this result.
        return handler(self) | {"prepare_summary": self.prepare_summary.headline()}


class ShardRead(Record):
    """One foreach task's read shard (documents, fingerprints, plan), for the join that decides."""

    read: StoredDir


class PrepareDecisions(Record):
    """The join's decisions for the whole corpus (duplicates, split), the tokenizer and the stored base model."""

    decisions: StoredDir
    tokenizer: StoredDir
    base_model: StoredDir | None = None


class ShardEncoded(Record):
    """One foreach task's tokens of its shard's kept documents."""

    encoded: StoredDir


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
    held_out_loss: float | None = None
    """Instruction tuning, every instruct.eval_every steps: the loss on held-out conversations."""
    held_out_choice_accuracy: float | None = None
    """Instruction tuning, every instruct.eval_every steps: held-out questions answered right by likelihood."""


class TrainSummary(Record):
    objective: str = "pretrain"
    """`pretrain` (continued pretraining on packed blocks) or `sft` (instruction tuning on conversations)."""
    method: str = "full"
    """`full` (every weight trains) or `lora` (adapters on frozen weights)."""
    final_checkpoint: str
    steps: int
    resumed_from_step: int
    resumed_from: str | None
    final_loss: float
    tokens_seen: int
    world_size: int
    zero_stage: int
    parameters: int
    trainable_parameters: int | None = None
    """Parameters the optimizer steps (all of them, or LoRA's adapters)."""
    flops_per_token: float
    peak_tflops: float | None
    init_sha256: str
    """Fingerprint of the weights training started from; evaluate rebuilds the untuned model and checks it."""
    elapsed_s: float


class SageMakerJobRecord(Record):
    """A finished SageMaker job that ran a stage (SageMaker runs every stage as a training job): ARN, billable
    seconds, final metrics."""

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
    train_summary: TrainSummary
    train_metrics: list[TrainMetric]
    train_job: SageMakerJobRecord | None = None
    """The SageMaker job that ran the stage (compute.<step>.target: sagemaker); None elsewhere."""


class InstructResult(Record):
    """Instruction tuning: the train folder, as `TrainResult`'s, under the names the flow keeps it by."""

    instruct_checkpoint: StoredDir
    instruct_summary: TrainSummary
    instruct_metrics: list[TrainMetric]
    instruct_job: SageMakerJobRecord | None = None


# convert


class TensorCheck(Record):
    name: str
    shape: list[int]
    norm: float


class ConversionRecord(Record):
    checkpoint: str
    step: int
    init_sha256: str
    """Fingerprint of the weights training started from (from the checkpoint's record), which evaluate checks
    its rebuilt untuned model against: it travels in the model folder, beside the weights."""
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
    lora_merged: bool = False
    """The checkpoint held LoRA adapters, merged here into the model they were trained on."""
    adapter: str | None = None
    """The subfolder holding the adapter in PEFT's format (`PeftModel.from_pretrained(base, <model>/adapter)`)."""
    files: list[str] = []
    tensor_checks: list[TensorCheck] = []
    """One row per tensor: in conversion.json and on the card, not in the flow's artifact (it grows with the model)."""


class ConvertResult(Record):
    model: StoredDir
    conversion: ConversionRecord
    convert_job: SageMakerJobRecord | None = None
    """The SageMaker job that ran the stage (compute.<step>.target: sagemaker); None elsewhere."""

    @model_serializer(mode="wrap")
    def _as_artifacts(self, handler) -> dict[str, Any]:
        # The per-tensor rows and file list stay in conversion.json and on the card.
        return handler(self) | {"conversion": self.conversion.model_dump(exclude={"tensor_checks", "files"})}


class InstructConvertResult(Record):
    """The instruction-tuned model (LoRA merged, the PEFT adapter in its `adapter/` subfolder)."""

    instructed_model: StoredDir
    instruct_conversion: ConversionRecord
    instruct_convert_job: SageMakerJobRecord | None = None

    @model_serializer(mode="wrap")
    def _as_artifacts(self, handler) -> dict[str, Any]:
        # As ConvertResult: the per-tensor rows and file list stay in conversion.json and on the card.
        conversion = self.instruct_conversion.model_dump(exclude={"tensor_checks", "files"})
        return handler(self) | {"instruct_conversion": conversion}


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


class AnswerMetrics(Record):
    """Held-out questions asked through the chat template (`steps.evaluate.answers`), for one group of them."""

    questions: int
    exact_match: float
    contains_reference: float
    """Share of answers holding the reference's fact (the name, the ID) as a whole word."""
    choice_accuracy: float | None
    """Share of questions whose reference answer is the most likely option; None without choices."""
    stopped: float
    """Share of answers that ended their turn within instruct.max_new_tokens."""


class ModelScores(Record):
    """One model of the run, scored as the others: the base, after continued pretraining, after instruction
    tuning."""

    perplexity: float
    """Held-out corpus perplexity."""
    general_perplexity: float | None
    answers: dict[str, AnswerMetrics]
    """By question kind and for `all`."""


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
    questions: int = 0
    """Held-out questions asked (instruction tuning); their answers are in generations.parquet with source
    `question` and count in `agreement`."""
    by_model: dict[str, ModelScores] | None = None
    """With instruction tuning: `base`, `pretrained` (when continued pretraining ran) and `instructed`, in that
    order; `perplexity.untuned`/`tuned` are the first and the last of them."""


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


class AnswerRow(Record):
    """One held-out question answered by one model (a row of answers.parquet)."""

    model: str
    question_id: str
    kind: str
    subject: str
    question: str
    reference: str
    answer: str
    stopped: bool
    exact_match: bool
    contains_reference: bool
    picked: str | None
    choice_correct: bool | None


class EvaluateResult(Record):
    evaluation: StoredDir
    eval_summary: EvalSummary
    eval_table: list[GenerationRow]
    probes: list[ProbeRow] = Field(default=[], exclude=True)
    """For the card; every row is in the evaluation folder's probes.parquet."""
    answers: list[AnswerRow] = Field(default=[], exclude=True)
    """For the card; every row is in the evaluation folder's answers.parquet."""
    evaluate_job: SageMakerJobRecord | None = None
    """The SageMaker job that ran the stage (compute.<step>.target: sagemaker); None elsewhere."""
