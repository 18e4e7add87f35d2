"""The instruction-tuning section: what to fine-tune on, how (full or LoRA), and how answers are judged.

Reading guards (data.max_document_bytes, data.max_file_bytes, data.strict) and e-mail redaction
(data.redact_emails) are the corpus's own settings, applied to instruction files alike. Instruction tuning
runs through the one training loop with train's machines and precision: train.num_nodes,
train.nproc_per_node, train.dtype, train.gradient_clipping, train.gradient_checkpointing,
train.keep_checkpoints, train.log_every, train.failure_timeout_s and deepspeed.*; this section sets what
differs (steps, batch, learning rate, checkpoints) and `compute.instruct` where it runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from steps.config.base import Section

DEFAULT_INSTRUCTIONS = "cwe"
"""Instruction source meaning questions and answers generated from the CWE catalogue (no file needed)."""

METHOD_LEARNING_RATES = {"full": 2e-5, "lora": 2e-4}
"""Peak learning rates when instruct.learning_rate is empty: LoRA's few new weights start at zero
(its B matrix) and take a step ten times larger than full fine-tuning of pretrained weights."""


class InstructConfig(Section):
    instructions: str | None = None
    """Instruction data: `cwe` (questions and answers generated from the CWE catalogue, split by weakness), a
    folder (recursive), glob or s3:// prefix of JSONL files (.jsonl, .json, also .gz or in .zip) of chat records
    {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]} or {"prompt": ..., "response":
    ...}; empty skips instruction tuning."""
    method: Literal["full", "lora"] = "full"
    """`full` trains every weight under DeepSpeed ZeRO; `lora` trains low-rank adapters (PEFT) on a frozen
    model, merged into the converted model and also published in PEFT's format."""
    lora_rank: int = Field(16, ge=1, le=1024)
    """Rank of each LoRA adapter (method: lora)."""
    lora_alpha: float = Field(32.0, gt=0.0)
    """LoRA scaling numerator: the adapter's update is scaled by lora_alpha / lora_rank."""
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the adapters' input during training."""
    lora_target_modules: list[str] = ["all-linear"]
    """Module names (or name suffixes, e.g. q_proj, v_proj) that get adapters; `all-linear` is every linear
    layer but the output head."""
    max_steps: int = Field(200, ge=1)
    """Optimizer steps of instruction tuning."""
    checkpoint_every: int = Field(50, ge=1)
    """Save a checkpoint every this many steps (and at the end); train.keep_checkpoints of them are kept."""
    eval_every: int = Field(50, ge=0)
    """Every this many steps (and at the end), score the held-out conversations' loss and the held-out
    questions' multiple-choice accuracy for the live card; 0 turns it off."""
    micro_batch_size: int = Field(8, ge=1)
    """Conversations per rank per forward pass (padded to the longest of them)."""
    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-batches per optimizer step."""
    learning_rate: float | None = Field(None, gt=0.0)
    """Peak learning rate; empty means 2e-5 for full fine-tuning and 2e-4 for LoRA."""
    warmup_steps: int = Field(10, ge=0)
    """Linear warmup steps (then a cosine decay to a tenth of the peak)."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    seq_length: int = Field(512, ge=16)
    """Most tokens of one conversation with its chat template; longer conversations are dropped (and
    reported), never cut: a cut would train on half an answer."""
    validation_fraction: float = Field(0.05, gt=0.0, lt=0.5)
    """Share held out: of conversations for files, of weaknesses for `cwe` (whose questions are then never
    in the training conversations)."""
    seed: int = 1234
    """Seed of the held-out split, of the generated questions' phrasings and distractors, and of the order
    of conversations in training."""
    cwe_phrasings: int = Field(3, ge=1, le=4)
    """`cwe`: phrasings of each question kind per weakness in the training conversations."""
    eval_questions: int = Field(64, ge=0)
    """Held-out questions asked after tuning (generation and multiple choice); 0 turns answer metrics off."""
    choices: int = Field(4, ge=2, le=16)
    """Options per multiple-choice question (the reference answer and distractors)."""
    max_new_tokens: int = Field(48, ge=1)
    """Tokens an answer may take; an answer that has not ended its turn by then counts as not stopped."""
    chat_template: str | None = None
    """A Jinja chat template file to use instead of the tokenizer's own (for a template that does not render
    a conversation turn by turn); empty: the tokenizer's template, or a ChatML-like one when it has none."""

    @field_validator("instructions", "chat_template")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value if value is None or value.strip() else None

    @field_validator("lora_target_modules")
    @classmethod
    def _targets_named(cls, value: list[str]) -> list[str]:
        if not value or any(not name.strip() for name in value):
            raise ValueError(
                f"instruct.lora_target_modules: got {value!r}; name at least one module (e.g. q_proj) "
                "or give ['all-linear']"
            )
        if "all-linear" in value and len(value) > 1:
            raise ValueError(
                f"instruct.lora_target_modules: got {value!r}; 'all-linear' already covers every linear layer, "
                "give it alone or list module names without it"
            )
        return value

    @model_validator(mode="after")
    def _warmup_within_steps(self) -> InstructConfig:
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"instruct.warmup_steps ({self.warmup_steps}) is more than instruct.max_steps ({self.max_steps}): "
                "the learning rate would never reach its peak; lower the warmup"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether a run instruction-tunes at all."""
        return self.instructions is not None

    @property
    def peak_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else METHOD_LEARNING_RATES[self.method]

    @property
    def lora_targets(self) -> str | list[str]:
        """`target_modules` as PEFT takes it: the string `all-linear`, or a list of names."""
        return "all-linear" if self.lora_target_modules == ["all-linear"] else list(self.lora_target_modules)
