"""What the one training loop reads: the batch of each (step, micro-batch, rank), the stream's position, a fixed
held-out batch for the logits check. Continued pretraining reads packed blocks, instruction tuning
conversations; the loop, the checkpoints and resume are the same for both.

Both orders depend only on the seed and the step (`steps.train.data_order.BlockOrder`), so a resumed run reads
exactly what an uninterrupted one would, and a checkpoint records the stream's position (blocks or
conversations read) so that a run on another world size continues at the first item not yet read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from steps.formats.blocks import load_blocks
from steps.formats.instruction_dataset import load_conversations
from steps.formats.train_folder import VERIFY_BLOCKS, VERIFY_TOKENS
from steps.train.data_order import BlockOrder
from steps.train.sft_batches import ConversationBatches


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    # Pinned and asynchronous on CUDA: a copy from pageable memory first waits for the GPU's queue to drain.
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor


class BlockData:
    """Packed blocks of the dataset folder's train split (continued pretraining): every token is a label."""

    def __init__(self, dataset_dir: Path, seed: int, micro_batch: int, world_size: int, accumulation: int) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.blocks = load_blocks(self.dataset_dir / "train")
        self.order = BlockOrder(len(self.blocks), seed, micro_batch, world_size, accumulation)
        self.sequence_length = self.blocks.shape[1]

    def model_inputs(self, step: int, micro: int, rank: int, device: torch.device) -> dict[str, Any]:
        ids = torch.from_numpy(np.asarray(self.blocks[self.order.indices(step, micro, rank)], dtype=np.int64))
        ids = _to_device(ids, device)
        return {"input_ids": ids, "labels": ids}

    def step_tokens(self, step: int) -> int:
        """Tokens of the whole optimizer step on all ranks."""
        return self.order.global_batch * self.sequence_length

    def position(self, step: int) -> int:
        return self.order.position(step)

    def resume_at(self, step: int, seen: int) -> None:
        self.order.resume_at(step, seen)

    def verify_ids(self) -> torch.Tensor:
        validation = load_blocks(self.dataset_dir / "validation")
        return torch.from_numpy(np.asarray(validation[:VERIFY_BLOCKS, :VERIFY_TOKENS], dtype=np.int64))


class ConversationData:
    """Tokenized conversations of the instruction dataset folder (instruction tuning): padded micro-batches with
    labels on the assistant turns only (`steps.train.sft_batches`)."""

    def __init__(
        self, instructions_dir: Path, pad_id: int, seed: int, micro_batch: int, world_size: int, accumulation: int
    ) -> None:
        self.instructions_dir = Path(instructions_dir)
        self.split = load_conversations(self.instructions_dir / "train")
        self.batches = ConversationBatches(self.split, pad_id, seed, micro_batch, world_size, accumulation)
        self.order = self.batches.order
        lengths = self.split.lengths
        # For the attention term of the FLOPs estimate: the mean conversation is what a step holds on average.
        self.sequence_length = int(round(float(lengths.mean()))) if len(lengths) else 1

    def model_inputs(self, step: int, micro: int, rank: int, device: torch.device) -> dict[str, Any]:
        inputs = self.batches.batch(step, micro, rank).model_inputs()
        return {k: _to_device(v, device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

    def step_tokens(self, step: int) -> int:
        """Real (not padding) tokens of the whole optimizer step on all ranks: every rank knows the order."""
        lengths = self.split.lengths
        return int(sum(int(lengths[i]) for group in self.batches.step_groups(step) for i in group))

    def position(self, step: int) -> int:
        return self.batches.position(step)

    def resume_at(self, step: int, seen: int) -> None:
        self.batches.resume_at(step, seen)

    def verify_ids(self) -> torch.Tensor:
        """The held-out conversations' first tokens, end to end, as a fixed batch (convert checks its logits)."""
        tokens = load_conversations(self.instructions_dir / "validation").input_ids
        wanted = VERIFY_BLOCKS * VERIFY_TOKENS
        repeated = np.resize(np.asarray(tokens, dtype=np.int64), wanted)  # a tiny split is repeated to fill it
        return torch.from_numpy(repeated.reshape(VERIFY_BLOCKS, VERIFY_TOKENS))
