"""The config sections of the four stages: data (prepare), model, train, deepspeed, convert, evaluate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from steps.config.base import Section

DEFAULT_CORPUS = "cwe"
"""Corpus name meaning MITRE's CWE catalogue XML shipped in the `cwe2` package."""


class DataConfig(Section):
    corpus: str = DEFAULT_CORPUS
    """`cwe` for the CWE catalogue, or a folder, glob or s3:// prefix (read recursively) of text, Markdown,
    reStructuredText, HTML, JSON/JSONL, CSV, PDF, STIX 2.1 bundle and CWE XML files, plain, .gz or in .zip."""
    text_fields: list[str] = ["text"]
    """Fields holding text in JSON/JSONL records, joined in this order."""
    csv_columns: list[str] = ["text"]
    """Columns holding text in CSV files, joined in this order."""
    min_chars: int = Field(200, ge=1)
    """Documents shorter than this after clean-up are dropped."""
    min_alnum_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """Documents whose share of letters and digits (among non-space characters) is below this are dropped."""
    max_document_bytes: int = Field(16 * 2**20, ge=1024)
    """Largest document, record or line read as text (or text extracted from a PDF); larger ones are skipped
    without being loaded whole."""
    max_file_bytes: int = Field(256 * 2**20, ge=1024)
    """Largest file parsed whole (PDF, JSON, STIX bundle, XML, zip member), and most a .gz file or zip member may
    decompress to; larger ones are skipped. (Symbolic links in a corpus folder are skipped too: not followed.)"""
    max_archive_bytes: int = Field(4 * 2**30, ge=1024)
    """Most the members of one zip archive (nested archives' members included) may declare to expand to in all;
    a larger archive is skipped whole (a zip bomb reads as many times its size)."""
    max_archive_members: int = Field(100_000, ge=1)
    """Most members one zip archive may hold, nested archives' members included; more skips it whole (each
    member's entry is held in memory while the archive is open)."""
    max_archive_depth: int = Field(3, ge=1)
    """Archives read inside one another: 1 reads no zip inside a zip, 3 reads a zip in a zip in a zip. A deeper
    one is skipped with the reason; all levels count toward the limits above."""
    pdf_content_per_byte: int = Field(4, ge=1)
    """Bytes of page content (drawing operators) a PDF may make the reader parse per byte of the file, beyond a
    first MiB: a few kB of PDF whose pages share one huge content stream would otherwise take minutes. pypdf
    parses 0.1-0.3 MB of content a second, so 4 keeps a PDF to well under a minute per MiB."""
    near_duplicate_threshold: float = Field(0.85, gt=0.0, le=1.0)
    """Estimated Jaccard similarity (word 5-grams, MinHash LSH) at or above which a document is a near duplicate;
    1.0 turns near-duplicate removal off."""
    redact_emails: bool = False
    """Replace e-mail addresses by `<PII:email>` (secrets are always redacted; indicators are always kept)."""
    strict: bool = False
    """Fail on the first file that cannot be read instead of skipping it and naming it in the report."""
    num_proc: int | None = Field(None, ge=1)
    """Processes reading the corpus at once (each reads, cleans and redacts one shard) and the tokenizer's
    threads; empty means every core this process may use."""
    vocab_size: int = Field(4096, ge=256, le=262144)
    """Vocabulary size of the BPE tokenizer trained on the corpus (ignored with a base model)."""
    tokenizer_sample_chars: int | None = Field(1_000_000, ge=10_000)
    """Characters of training-side text (whole documents, a seeded random sample drawn with `seed`) the BPE
    tokenizer is trained on; empty trains it on all of the text. On the CWE catalogue (2.4M training characters)
    the 1M default costs 0.7% more tokens per held-out character and shares 89% of the vocabulary
    (`bench/tokenizer_sample.py`), at less than half the training time."""
    block_size: int = Field(256, ge=16)
    """Tokens per packed training block."""
    document_separator: str | None = None
    """Token packed between documents; empty chooses the tokenizer's end-of-text token (`<|endoftext|>`,
    `<|end_of_text|>`, `</s>` or `<eos>` when it has one, else its EOS, which may be a chat-turn marker)."""
    validation_fraction: float = Field(0.05, gt=0.0, lt=0.5)
    """Share of documents held out for validation (split by document, never by block)."""
    seed: int = 1234
    """Seed of the document split."""
    eval_prompts: int = Field(8, ge=1)
    """Held-out documents turned into evaluation prompts."""
    prompt_tokens: int = Field(24, ge=4)
    """Tokens of a held-out document given as the prompt; the next ones are the reference."""


class ModelConfig(Section):
    base_model: str | None = None
    """A Hugging Face model folder or s3:// prefix to start from; empty builds the tiny model below."""
    hidden_size: int = Field(256, ge=16)
    """Width of the Llama-style model built from this config."""
    num_layers: int = Field(4, ge=1)
    """Transformer blocks."""
    num_heads: int = Field(4, ge=1)
    """Attention heads."""
    num_kv_heads: int = Field(4, ge=1)
    """Key/value heads (grouped-query attention when fewer than num_heads)."""
    intermediate_size: int = Field(704, ge=16)
    """Width of the MLP."""
    max_position_embeddings: int = Field(512, ge=16)
    """Longest sequence the rotary embeddings are set up for."""
    init_seed: int = 42
    """Seed of the weight initialisation (also rebuilds the untrained model for comparison)."""

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by model.num_heads ({self.num_heads})"
            )
        if (self.hidden_size // self.num_heads) % 2:
            # Rotary embeddings rotate pairs of dimensions; transformers refuses an odd head_dim at model build.
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) / model.num_heads ({self.num_heads}) = "
                f"{self.hidden_size // self.num_heads}: the head dimension must be even for rotary embeddings"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_heads ({self.num_heads}) must be divisible by model.num_kv_heads ({self.num_kv_heads})"
            )
        return self


MIN_LR_FRACTION = 0.1
"""The cosine floor as a share of the peak when train.min_learning_rate is empty."""


class TrainConfig(Section):
    max_steps: int = Field(150, ge=0)
    """Optimizer steps; 0 skips continued pretraining (instruction tuning then starts from model.base_model)."""
    micro_batch_size: int = Field(8, ge=1)
    """Blocks per rank per forward pass."""
    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-batches per optimizer step."""
    learning_rate: float = Field(2e-3, gt=0.0)
    """Peak learning rate."""
    min_learning_rate: float | None = Field(None, ge=0.0)
    """Learning rate at the end of the cosine decay, at most the peak; empty means a tenth of the peak."""
    warmup_steps: int = Field(15, ge=0)
    """Linear warmup steps."""
    weight_decay: float = Field(0.1, ge=0.0)
    """AdamW weight decay."""
    gradient_clipping: float = Field(1.0, ge=0.0)
    """Gradient norm clip (0 disables)."""
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Training precision; CPU runs use fp32."""
    seed: int = 1234
    """Seed of the data order."""
    checkpoint_every: int = Field(50, ge=1)
    """Save a DeepSpeed checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Complete checkpoints kept in the run's storage; older ones are deleted once a newer one is complete."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    log_every: int = Field(5, ge=1)
    """Log metrics every this many steps."""
    num_nodes: int = Field(1, ge=1)
    """Machines for the train step (Metaflow @parallel tasks)."""
    nproc_per_node: int = Field(2, ge=1)
    """torchrun processes per machine."""
    failure_timeout_s: int = Field(300, ge=10)
    """A rank or node that stops answering fails the step after this many seconds (collectives, rendezvous)."""
    peak_tflops: float | None = Field(None, gt=0)
    """Dense peak TFLOP/s of one device at the training dtype, for MFU; empty looks it up from the device name."""
    tracker: Literal["none", "tensorboard", "wandb"] = "none"
    """Also send metrics to TensorBoard (under the train folder) or Weights & Biases (key: WANDB_API_KEY)."""

    @model_validator(mode="after")
    def _floor_below_peak(self) -> TrainConfig:
        # A floor above the peak makes the "decay" climb: 2e-4 under a 2e-5 peak ends at 10x the peak.
        if self.min_learning_rate is not None and self.min_learning_rate > self.learning_rate:
            raise ValueError(
                f"train.min_learning_rate ({self.min_learning_rate}) is above train.learning_rate "
                f"({self.learning_rate}), so the schedule would climb above its peak; lower it to at most the peak "
                "or leave it empty (a tenth of the peak)"
            )
        return self

    @property
    def lr_floor(self) -> float:
        """The learning rate the cosine decays to."""
        if self.min_learning_rate is None:
            return MIN_LR_FRACTION * self.learning_rate
        return self.min_learning_rate


class DeepSpeedConfig(Section):
    zero_stage: Literal[0, 1, 2, 3] = 2
    """ZeRO stage."""
    config_file: str | None = None
    """A DeepSpeed JSON (relative to the repository) to start from; defaults to configs/deepspeed/zero<stage>.json."""
    offload_optimizer: Literal["none", "cpu", "nvme"] | None = None
    """Where ZeRO keeps optimizer states (stages 1-3), with DeepSpeed's CPU Adam; empty: as the DeepSpeed JSON says."""
    offload_param: Literal["none", "cpu", "nvme"] | None = None
    """Where ZeRO-3 keeps parameters between uses (stage 3 only); empty: as the DeepSpeed JSON says."""
    nvme_path: str | None = None
    """A local NVMe folder for `nvme` offload (e.g. /local_nvme)."""

    @model_validator(mode="after")
    def _stage_has_file(self) -> DeepSpeedConfig:
        if self.config_file is None and self.zero_stage in (1, 2, 3):
            self.config_file = f"configs/deepspeed/zero{self.zero_stage}.json"
        if self.offload_param not in (None, "none") and self.zero_stage != 3:
            raise ValueError(
                f"deepspeed.offload_param: got {self.offload_param!r} with zero_stage {self.zero_stage}; "
                "parameter offload needs zero_stage 3"
            )
        if self.offload_optimizer not in (None, "none") and self.zero_stage == 0:
            raise ValueError("deepspeed.offload_optimizer needs zero_stage 1, 2 or 3 (got 0)")
        if "nvme" in (self.offload_optimizer, self.offload_param) and not self.nvme_path:
            raise ValueError("deepspeed.nvme_path: required when offloading to nvme; name a local NVMe folder")
        return self


_SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9}


def parse_size(text: str) -> int:
    """Bytes in a size such as `500MB` or `2GB` (decimal units, as Hugging Face uses)."""
    compact = text.strip().upper()
    number, unit = compact[:-2], compact[-2:]
    if unit not in _SIZE_UNITS or not number.isdigit() or int(number) == 0:
        raise ValueError(f"{text!r} is not a size; write a whole number followed by KB, MB or GB, e.g. 500MB")
    return int(number) * _SIZE_UNITS[unit]


class ConvertConfig(Section):
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Precision of the written weights; `auto` keeps the training precision (train.dtype)."""
    max_shard_size: str = "1GB"
    """Largest safetensors shard (KB/MB/GB); conversion holds about one shard in memory at a time."""

    @model_validator(mode="after")
    def _size_parses(self) -> ConvertConfig:
        try:
            parse_size(self.max_shard_size)
        except ValueError as exc:
            raise ValueError(f"convert.max_shard_size: {exc}") from None
        return self


class EvaluateConfig(Section):
    engines: list[Literal["hf", "deepspeed", "zero"]] = ["hf", "deepspeed", "zero"]
    """Inference engines: plain Hugging Face, DeepSpeed-Inference (tensor parallel), ZeRO-Inference."""
    decoding: Literal["greedy", "sampling", "beams"] = "greedy"
    """Search: greedy, sampling (temperature, top_p, seed) or beam search (num_beams)."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    num_beams: int = Field(4, ge=2)
    """Beams for beam search."""
    seed: int = 0
    """Seed of sampling (the same on every rank, so tensor-parallel ranks draw the same tokens)."""
    max_new_tokens: int = Field(24, ge=1)
    """Tokens generated per prompt."""
    extra_eos_ids: list[int] = []
    """Token ids that also end a generation, besides the tokenizer's end-of-sequence token."""
    batch_size: int = Field(4, ge=1)
    """Prompts per generate call."""
    nproc: int = Field(2, ge=1)
    """torchrun processes (tensor-parallel degree of DeepSpeed-Inference)."""
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Inference precision on GPU; CPU runs always use fp32."""
    kernel_inject: bool = True
    """DeepSpeed-Inference fused kernels (GPU only; off on CPU, where DeepSpeed has none)."""
    zero_offload: Literal["none", "cpu", "nvme"] = "cpu"
    """Where ZeRO-Inference keeps parameters between layers (GPU runs; on CPU they are in host memory already)."""
    nvme_path: str = "/tmp/zero-inference-nvme"
    """Folder on a fast local disk for zero_offload: nvme."""
    prompt_file: str | None = None
    """Extra prompts: a JSONL file of {"prompt": ..., "reference": ... (optional)} objects."""
    perplexity_blocks: int = Field(64, ge=1)
    """Held-out blocks scored for perplexity."""
    general_text: str | None = "auto"
    """General-domain text scored for perplexity before and after tuning, to measure forgetting: `python-docs`
    (the Python language reference shipped with Python), a UTF-8 text file, or empty to skip. `auto`:
    `python-docs` when tuning a base model, skipped for a model trained from scratch (which knows nothing
    to forget)."""
    general_blocks: int = Field(16, ge=1)
    """Blocks of data.block_size tokens of the general text scored, spread evenly over it."""
    probes: int = Field(48, ge=0)
    """Domain probes of each kind (CWE corpus: ID to name, description to name); 0 turns them off, more
    than the catalogue has probes every weakness."""
    probe_choices: int = Field(4, ge=2, le=64)
    """Candidate names per probe when scoring by log-likelihood (the right one and distractors); at most 64,
    well within the catalogue's distinct names, which the distractors are drawn from."""
    probe_file: str | None = None
    """Extra probes: a JSONL file of {"prompt": ..., "answer": ..., "choices": [...] (optional)} objects."""

    @model_validator(mode="after")
    def _engines_unique(self) -> EvaluateConfig:
        if not self.engines:
            raise ValueError("evaluate.engines must name at least one of hf, deepspeed, zero")
        if len(set(self.engines)) != len(self.engines):
            raise ValueError(f"evaluate.engines lists an engine twice: {self.engines}")
        return self
