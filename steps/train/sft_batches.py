"""Batches of tokenized conversations for instruction tuning: which ones each rank reads at each step, padded.

The order is prepare's `BlockOrder` over conversations (a seeded shuffle per epoch that depends only on the
seed and the step), so a resumed run reads exactly what an uninterrupted one would, on any world size.
Within one optimizer step the conversations are sorted by length and dealt out so that the ranks' micro-
batches at the same micro-step have neighbouring lengths: little padding, and no rank waits long for another
at the gradient all-reduce.

Each micro-batch is padded on the right to its longest conversation with an attention mask: conversations
never attend to each other, and nothing else is needed (HF Llama's SDPA on CPU and GPU, any ZeRO stage).
Packing several conversations into one row would need a block-diagonal mask, which Hugging Face models take
only through flash-attention's position-id path, absent on CPU.

The loss is the mean over every labelled token of the optimizer step, whichever rank and micro-batch holds
it (as `transformers.Trainer` does with `num_items_in_batch`): each micro-batch's summed loss is divided by
the step's label tokens over (world size x accumulation), because DeepSpeed averages gradients over ranks
and scales each micro-batch by 1 / accumulation. Every rank counts the step's tokens itself: the order is
known to all of them, so no collective is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from steps.formats.chat_template import IGNORE_INDEX
from steps.formats.instruction_dataset import TokenizedSplit
from steps.train.data_order import BlockOrder


@dataclass(frozen=True)
class SftBatch:
    input_ids: torch.Tensor
    """(conversations, longest) int64, right-padded."""
    attention_mask: torch.Tensor
    labels: torch.Tensor
    """IGNORE_INDEX on prompts and pads."""
    num_items_in_batch: float
    """The step's label tokens / (world size x accumulation): what this micro-batch's summed loss is divided by."""
    tokens: int
    """Real (not padding) tokens of this micro-batch."""
    conversations: list[int]
    """Indices into the split, in row order."""

    def model_inputs(self, device: torch.device | str | None = None) -> dict:
        """Keyword arguments for a Hugging Face causal LM (or a DeepSpeed engine wrapping one)."""
        tensors = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}
        if device is not None and torch.device(device).type == "cuda":
            # Pinned and asynchronous: a copy from pageable memory first waits for the GPU's queue to drain.
            tensors = {k: v.pin_memory().to(device, non_blocking=True) for k, v in tensors.items()}
        elif device is not None:
            tensors = {k: v.to(device) for k, v in tensors.items()}
        return {**tensors, "num_items_in_batch": self.num_items_in_batch}


class ConversationBatches:
    """The conversations of each (step, micro-batch, rank), and their padded batch."""

    def __init__(
        self,
        split: TokenizedSplit,
        pad_id: int,
        seed: int,
        micro_batch: int,
        world_size: int,
        accumulation: int,
    ) -> None:
        if len(split) == 0:
            raise ValueError("no conversations to train on; prepare the instruction data again")
        self.split, self.pad_id = split, pad_id
        self.order = BlockOrder(len(split), seed, micro_batch, world_size, accumulation)
        self._lengths = split.lengths
        self._label_counts = split.label_counts
        self._cached: tuple[int, list[list[int]]] | None = None

    @property
    def global_batch(self) -> int:
        """Conversations per optimizer step, on all ranks together."""
        return self.order.global_batch

    def resume_at(self, step: int, conversations_seen: int) -> None:
        """Continue the stream after `conversations_seen` conversations at `step` (from any world size)."""
        self.order.resume_at(step, conversations_seen)
        self._cached = None

    def position(self, step: int) -> int:
        """Conversations of the stream read before `step`: what a checkpoint records."""
        return self.order.position(step)

    def step_groups(self, step: int) -> list[list[int]]:
        """The step's conversations by slot `micro * world_size + rank`, sorted by length across slots."""
        if self._cached is None or self._cached[0] != step:
            order = self.order
            picked = [
                index
                for micro in range(order.accumulation)
                for rank in range(order.world_size)
                for index in order.indices(step, micro, rank)
            ]
            # Ties broken by index: the same groups on every rank and in every run.
            picked.sort(key=lambda index: (int(self._lengths[index]), index))
            size = order.micro_batch
            self._cached = (step, [picked[i : i + size] for i in range(0, len(picked), size)])
        return self._cached[1]

    def step_label_tokens(self, step: int) -> int:
        """Labelled tokens of the whole optimizer step, on all ranks."""
        return int(sum(self._label_counts[i] for group in self.step_groups(step) for i in group))

    def batch(self, step: int, micro: int, rank: int) -> SftBatch:
        order = self.order
        indices = self.step_groups(step)[micro * order.world_size + rank]
        longest = int(max(self._lengths[i] for i in indices))
        ids = np.full((len(indices), longest), self.pad_id, dtype=np.int64)
        labels = np.full((len(indices), longest), IGNORE_INDEX, dtype=np.int64)
        mask = np.zeros((len(indices), longest), dtype=np.int64)
        for row, index in enumerate(indices):
            tokens, targets = self.split.conversation(index)
            ids[row, : len(tokens)] = tokens
            labels[row, : len(tokens)] = targets
            mask[row, : len(tokens)] = 1
        share = self.step_label_tokens(step) / (order.world_size * order.accumulation)
        return SftBatch(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            labels=torch.from_numpy(labels),
            num_items_in_batch=max(share, 1e-6),  # a step with no label at all has a zero loss, not a NaN
            tokens=int(mask.sum()),
            conversations=list(indices),
        )
