"""The instruction dataset folder: what prepare writes for instruction tuning, and what train and evaluate read.

    <instructions>/train/, validation/   Arrow datasets (`save_to_disk` layout), one row per conversation:
                                         conversation_id, input_ids, labels (IGNORE_INDEX but on assistant
                                         tokens, `steps.formats.chat_template`)
    <instructions>/questions.jsonl       held-out questions (`Question`): the prompt messages, the reference
                                         answer, and multiple-choice options where there are any
    <instructions>/report.jsonl          every skipped, dropped or redacted record and why (never its text)
    <instructions>/summary.json          `steps.results.InstructionSummary`

Conversations are stored whole and unpadded; batching (`steps.train.sft_batches`) pads each batch to its
longest conversation. `load_conversations` reads a split memory-mapped. The folder's other files (names,
questions, summary) are `steps.formats.instruction_folder`'s, which loads no Arrow and no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, Features, Value, load_from_disk
from datasets import Sequence as ListOf
from datasets.arrow_writer import ArrowWriter

CONVERSATION_FEATURES = Features(
    {"conversation_id": Value("string"), "input_ids": ListOf(Value("int32")), "labels": ListOf(Value("int32"))}
)
_ROWS_PER_WRITE = 1024


class ConversationWriter:
    """One split's tokenized conversations streamed into a `datasets` Arrow folder."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self._staging = self.out_dir.with_name(self.out_dir.name + ".staging.arrow")
        self._writer = ArrowWriter(features=CONVERSATION_FEATURES, path=str(self._staging))
        self._rows: list[tuple[str, Sequence[int], Sequence[int]]] = []
        self.count = self.tokens = self.label_tokens = self.longest = 0

    def add(self, conversation_id: str, input_ids: Sequence[int], labels: Sequence[int]) -> None:
        if len(input_ids) != len(labels):
            raise ValueError(f"{conversation_id}: {len(input_ids)} tokens but {len(labels)} labels")
        if not len(labels) or labels[0] >= 0:
            # Nothing predicts a first token: a label there would be counted but never trained on.
            raise ValueError(f"{conversation_id}: a conversation must start with an unlabelled (prompt) token")
        self._rows.append((conversation_id, input_ids, labels))
        self.count += 1
        self.tokens += len(input_ids)
        self.label_tokens += sum(1 for label in labels if label >= 0)
        self.longest = max(self.longest, len(input_ids))
        if len(self._rows) >= _ROWS_PER_WRITE:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        ids, tokens, labels = zip(*self._rows, strict=True)
        table = pa.table(
            {
                "conversation_id": pa.array(ids, pa.string()),
                "input_ids": pa.array(tokens, pa.list_(pa.int32())),
                "labels": pa.array(labels, pa.list_(pa.int32())),
            }
        )
        self._writer.write_table(table)
        self._rows = []

    def close(self) -> int:
        """Finish the Arrow folder (an empty split is an empty dataset) and return the number of conversations."""
        self._flush()
        self._writer.finalize()
        self._writer.close()
        # One shard even when empty: a dataset saved in no shard cannot be loaded back.
        Dataset.from_file(str(self._staging)).save_to_disk(str(self.out_dir), num_shards=1 if not self.count else None)
        self._staging.unlink(missing_ok=True)
        return self.count


@dataclass(frozen=True)
class TokenizedSplit:
    """A split's conversations as flat arrays over the memory-mapped Arrow data."""

    conversation_ids: list[str]
    offsets: np.ndarray
    """Conversation i is tokens [offsets[i], offsets[i + 1])."""
    input_ids: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def label_counts(self) -> np.ndarray:
        """Per conversation, the tokens that carry loss: each is predicted from the tokens before it (a first
        token never carries one, `ConversationWriter.add` makes sure)."""
        cumulative = np.concatenate([[0], np.cumsum(self.labels >= 0)])
        return cumulative[self.offsets[1:]] - cumulative[self.offsets[:-1]]

    def conversation(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.input_ids[start:end], self.labels[start:end]


def load_conversations(split_dir: str | Path) -> TokenizedSplit:
    table = load_from_disk(str(split_dir)).data
    ids = table.column("input_ids").combine_chunks()
    labels = table.column("labels").combine_chunks()
    offsets = ids.offsets.to_numpy()
    if not np.array_equal(offsets, labels.offsets.to_numpy()):
        raise ValueError(f"{split_dir}: input_ids and labels differ in length; prepare it again")
    return TokenizedSplit(
        conversation_ids=table.column("conversation_id").to_pylist(),
        offsets=offsets.astype(np.int64),
        input_ids=ids.values.to_numpy(zero_copy_only=False),
        labels=labels.values.to_numpy(zero_copy_only=False),
    )
