"""The one typed configuration of the pipeline, nested by concern.

Every field has a default and a short docstring. `parse_config_text` is what the
flow hands to Metaflow's `Config(parser=...)`, so a bad file fails before any
step runs; `load_config` reads the same schema from a path for the torchrun
entrypoints, which run without Metaflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = "cwe"
"""Corpus name meaning MITRE's CWE catalogue XML shipped in the `cwe2` package."""


class ConfigError(ValueError):
    """A configuration value that the schema does not allow."""


class _Section(BaseModel):
    # Unknown keys are typos until proven otherwise: name them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class DataConfig(_Section):
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
    """Largest document, record or line read as text; larger ones are skipped without being loaded whole."""
    max_file_bytes: int = Field(256 * 2**20, ge=1024)
    """Largest file parsed whole (PDF, JSON, STIX bundle, zip member); larger ones are skipped."""
    near_duplicate_threshold: float = Field(0.85, gt=0.0, le=1.0)
    """Estimated Jaccard similarity (word 5-grams, MinHash LSH) at or above which a document is a near duplicate;
    1.0 turns near-duplicate removal off."""
    redact_emails: bool = False
    """Replace e-mail addresses by `<PII:email>` (secrets are always redacted; indicators are always kept)."""
    strict: bool = False
    """Fail on the first file that cannot be read instead of skipping it and naming it in the report."""
    num_proc: int | None = Field(None, ge=1)
    """Worker processes for cleaning and tokenizer threads; empty means every core."""
    vocab_size: int = Field(4096, ge=256, le=262144)
    """Vocabulary size of the BPE tokenizer trained on the corpus (ignored with a base model)."""
    block_size: int = Field(256, ge=16)
    """Tokens per packed training block."""
    validation_fraction: float = Field(0.05, gt=0.0, lt=0.5)
    """Share of documents held out for validation (split by document, never by block)."""
    seed: int = 1234
    """Seed of the document split."""
    eval_prompts: int = Field(8, ge=1)
    """Held-out documents turned into evaluation prompts."""
    prompt_tokens: int = Field(24, ge=4)
    """Tokens of a held-out document given as the prompt; the next ones are the reference."""


class ModelConfig(_Section):
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
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_heads ({self.num_heads}) must be divisible by model.num_kv_heads ({self.num_kv_heads})"
            )
        return self


class TrainConfig(_Section):
    max_steps: int = Field(150, ge=1)
    """Optimizer steps."""
    micro_batch_size: int = Field(8, ge=1)
    """Blocks per rank per forward pass."""
    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-batches per optimizer step."""
    learning_rate: float = Field(2e-3, gt=0.0)
    """Peak learning rate."""
    min_learning_rate: float = Field(2e-4, ge=0.0)
    """Learning rate at the end of the cosine decay."""
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
    log_every: int = Field(5, ge=1)
    """Log metrics every this many steps."""
    num_nodes: int = Field(1, ge=1)
    """Machines for the train step (Metaflow @parallel tasks)."""
    nproc_per_node: int = Field(2, ge=1)
    """torchrun processes per machine."""


class DeepSpeedConfig(_Section):
    zero_stage: Literal[0, 1, 2, 3] = 2
    """ZeRO stage."""
    config_file: str | None = None
    """A DeepSpeed JSON (relative to the repository) to start from; defaults to configs/deepspeed/zero<stage>.json."""

    @model_validator(mode="after")
    def _stage_has_file(self) -> DeepSpeedConfig:
        if self.config_file is None and self.zero_stage in (1, 2, 3):
            self.config_file = f"configs/deepspeed/zero{self.zero_stage}.json"
        return self


class EvaluateConfig(_Section):
    engines: list[Literal["hf", "deepspeed", "zero"]] = ["hf", "deepspeed", "zero"]
    """Inference engines: plain Hugging Face, DeepSpeed-Inference (tensor parallel), ZeRO-Inference."""
    max_new_tokens: int = Field(24, ge=1)
    """Tokens generated per prompt (greedy)."""
    batch_size: int = Field(4, ge=1)
    """Prompts per generate call."""
    nproc: int = Field(2, ge=1)
    """torchrun processes (tensor-parallel degree of DeepSpeed-Inference)."""
    perplexity_blocks: int = Field(64, ge=1)
    """Held-out blocks scored for perplexity."""

    @model_validator(mode="after")
    def _engines_unique(self) -> EvaluateConfig:
        if not self.engines:
            raise ValueError("evaluate.engines must name at least one of hf, deepspeed, zero")
        if len(set(self.engines)) != len(self.engines):
            raise ValueError(f"evaluate.engines lists an engine twice: {self.engines}")
        return self


class TuneConfig(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    def with_overrides(self, **dotted: Any) -> TuneConfig:
        """A validated copy with `section.field` values replaced; None leaves a field alone."""
        raw = self.model_dump()
        for key, value in dotted.items():
            if value is None or value == "":
                continue
            section, field = key.split(".")
            raw[section][field] = value
        return validate_config(raw)


def _describe(error: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{field}: unknown field; check the spelling against steps/config.py"
    if error["type"] == "value_error":
        return error["msg"].removeprefix("Value error, ")
    return f"{field}: got {error.get('input')!r}, {error['msg'].lower()}"


def validate_config(raw: Any, source: str = "config") -> TuneConfig:
    """Validate a mapping against the schema, with all problems in one message."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return TuneConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"invalid configuration in {source}:\n  {problems}") from None


def parse_config_text(text: str) -> dict[str, Any]:
    """Metaflow `Config` parser: YAML (or JSON) text to a validated, fully defaulted dict."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config is not valid YAML: {exc}") from None
    return validate_config(raw).model_dump()


def load_config(path: str | Path) -> TuneConfig:
    """Read and validate a YAML or JSON config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return validate_config(yaml.safe_load(text), source=str(path))


def write_config(config: TuneConfig, path: str | Path) -> Path:
    """Write the resolved config as JSON for the torchrun entrypoints."""
    path = Path(path)
    path.write_text(json.dumps(config.model_dump(), indent=2))
    return path
