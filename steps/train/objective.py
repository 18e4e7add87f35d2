"""What the one training loop trains for: continued pretraining on packed blocks, or instruction tuning (SFT) on
conversations, full or with LoRA adapters.

An objective is the loop's settings, its data, what is done to the model before DeepSpeed wraps it, and what
is scored on held-out data while it runs. Instruction tuning takes its steps, batch, learning rate and
checkpoint interval from `instruct.*` and everything else (machines, precision, clipping, checkpoints kept,
logging) from `train.*`: `instruction_tuning_settings` writes them into the train section the loop, the
optimizer, the schedule, DeepSpeed's config and the checkpoint manager read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers import PreTrainedModel

from steps.config import TuneConfig
from steps.formats.instruction_dataset import load_conversations
from steps.formats.instruction_folder import read_questions
from steps.train.held_out import HeldOutScorer
from steps.train.lora import lora_for_training
from steps.train.sft_loss import score_labelled_positions_only
from steps.train.training_data import BlockData, ConversationData

ObjectiveName = Literal["pretrain", "sft"]
HELD_OUT_CONVERSATIONS = 32
"""Held-out conversations whose loss the live card shows (the first of the validation split)."""


def instruction_tuning_settings(config: TuneConfig) -> TuneConfig:
    """`config` with train.* replaced by what instruct.* sets for instruction tuning."""
    instruct = config.instruct
    train = config.train.model_copy(
        update={
            "max_steps": instruct.max_steps,
            "micro_batch_size": instruct.micro_batch_size,
            "gradient_accumulation_steps": instruct.gradient_accumulation_steps,
            "learning_rate": instruct.peak_learning_rate,
            "min_learning_rate": None,  # a tenth of the peak
            "warmup_steps": instruct.warmup_steps,
            "weight_decay": instruct.weight_decay,
            "seed": instruct.seed,
            "checkpoint_every": instruct.checkpoint_every,
        }
    )
    return config.model_copy(update={"train": train})


@dataclass
class Objective:
    name: ObjectiveName
    settings: TuneConfig
    """The config the loop runs with (train.* as this objective sets it)."""
    data: BlockData | ConversationData
    method: Literal["full", "lora"] = "full"
    scorer: HeldOutScorer | None = None
    eval_every: int = 0

    @property
    def partitions_on_load(self) -> bool:
        """Whether a ZeRO-3 run may load the starting model straight into partitions (not with LoRA, whose
        adapters PEFT adds to whole modules before DeepSpeed partitions the model)."""
        return self.method == "full"

    def prepare_model(self, model: PreTrainedModel) -> PreTrainedModel:
        """The model DeepSpeed wraps: for instruction tuning, the loss over labelled positions only, and the
        adapters with LoRA (seeded, the same on every rank)."""
        if self.name == "pretrain":
            return model
        model = score_labelled_positions_only(model)
        if self.method == "lora":
            model = lora_for_training(model, self.settings.instruct, self.settings.instruct.seed)
        return model

    def scoring_due(self, step: int) -> bool:
        return self.scorer is not None and (step % self.eval_every == 0 or step == self.settings.train.max_steps)


def pretraining(config: TuneConfig, dataset_dir: Path, world_size: int) -> Objective:
    train = config.train
    data = BlockData(dataset_dir, train.seed, train.micro_batch_size, world_size, train.gradient_accumulation_steps)
    return Objective("pretrain", config, data)


def instruction_tuning(config: TuneConfig, instructions_dir: Path, tokenizer, world_size: int) -> Objective:
    settings = instruction_tuning_settings(config)
    train, instruct = settings.train, config.instruct
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    data = ConversationData(
        instructions_dir, pad_id, train.seed, train.micro_batch_size, world_size, train.gradient_accumulation_steps
    )
    scorer = None
    if instruct.eval_every:
        validation = load_conversations(Path(instructions_dir) / "validation")
        questions = read_questions(instructions_dir)
        scorer = HeldOutScorer(validation, questions, tokenizer, pad_id, HELD_OUT_CONVERSATIONS)
    return Objective("sft", settings, data, instruct.method, scorer, instruct.eval_every)
