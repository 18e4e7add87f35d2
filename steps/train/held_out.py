"""Held-out scores while instruction tuning runs, for the live card: the held-out conversations' loss and the
held-out questions' multiple-choice accuracy (each option as the assistant's answer, scored by its mean
log-probability per token, the best one picked, as evaluate scores it after conversion).

Every rank scores its share and the sums are all-reduced. Under ZeRO-3 a forward pass gathers parameters from
every rank, so all ranks make the same number of forward calls: a rank whose share is shorter repeats its
first item and leaves the result out. Scoring runs in eval mode without gradients, so it changes neither the
weights nor any random state: a resumed run trains exactly as an uninterrupted one whether or not it scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from steps.formats.chat_template import IGNORE_INDEX, tokenize_conversation
from steps.formats.instruction_dataset import TokenizedSplit
from steps.formats.instruction_folder import Question
from steps.runtime.distributed import DistContext, all_reduce_sum

ROWS_PER_CALL = 8
"""Sequences per forward call (conversations, or the options of a few questions)."""


def _padded(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(input_ids, labels) rows right-padded into one batch with its attention mask."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (tokens, targets) in enumerate(rows):
        ids[row, : len(tokens)] = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
        labels[row, : len(tokens)] = torch.as_tensor(np.asarray(targets, dtype=np.int64))
        mask[row, : len(tokens)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _share(count: int, ctx: DistContext, per_call: int) -> tuple[list[int], int]:
    """This rank's items (every world_size-th) and the forward calls every rank makes."""
    mine = list(range(ctx.rank, count, ctx.world_size))
    return mine, math.ceil(math.ceil(count / ctx.world_size) / per_call) if count else 0


class HeldOutScorer:
    """The held-out conversations' loss and the questions' choice accuracy of the model being tuned."""

    def __init__(
        self, validation: TokenizedSplit, questions: Sequence[Question], tokenizer, pad_id: int, conversations: int
    ) -> None:
        self.pad_id = pad_id
        self.conversations = [validation.conversation(i) for i in range(min(conversations, len(validation)))]
        # Per question with choices: its answer's place and each option as (input_ids, labels on the option only).
        self.questions: list[tuple[int, list[tuple[list[int], list[int]]]]] = []
        for question in questions:
            if not question.choices or question.answer_index is None:
                continue
            options = []
            for choice in question.choices:
                turn = [*question.messages, {"role": "assistant", "content": choice}]
                tokenized = tokenize_conversation(tokenizer, turn)
                start, stop = tokenized.turns[-1]
                labels = [IGNORE_INDEX] * start + tokenized.input_ids[start:stop]
                options.append((tokenized.input_ids[:stop], labels))
            self.questions.append((question.answer_index, options))

    @torch.no_grad()
    def score(self, engine, ctx: DistContext) -> dict[str, float | None]:
        """`held_out_loss` and `held_out_choice_accuracy` (None where there is nothing to score); every rank calls."""
        was_training = engine.training
        engine.eval()
        loss_sum, labelled = self._loss(engine, ctx)
        correct, asked = self._choices(engine, ctx)
        if was_training:
            engine.train()
        loss_sum, labelled, correct, asked = all_reduce_sum([loss_sum, labelled, correct, asked], ctx.device)
        return {
            "held_out_loss": loss_sum / labelled if labelled else None,
            "held_out_choice_accuracy": correct / asked if asked else None,
        }

    def _loss(self, engine, ctx: DistContext) -> tuple[float, float]:
        mine, calls = _share(len(self.conversations), ctx, ROWS_PER_CALL)
        total = count = 0.0
        for call in range(calls):
            chunk = mine[call * ROWS_PER_CALL : (call + 1) * ROWS_PER_CALL]
            rows = [self.conversations[i] for i in chunk] or [self.conversations[0]]
            batch = {k: v.to(ctx.device) for k, v in _padded(rows, self.pad_id).items()}
            labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            loss = engine(**batch, num_items_in_batch=max(labelled, 1)).loss  # the sum over this batch's labels
            if chunk:  # a stand-in batch only keeps the ranks' forward calls in step
                total += float(loss) * max(labelled, 1)
                count += labelled
        return total, count

    def _choices(self, engine, ctx: DistContext) -> tuple[float, float]:
        per_call = max(1, ROWS_PER_CALL // max((len(options) for _, options in self.questions), default=1))
        mine, calls = _share(len(self.questions), ctx, per_call)
        correct = asked = 0.0
        for call in range(calls):
            chunk = mine[call * per_call : (call + 1) * per_call]
            picked = [self.questions[i] for i in chunk] or [self.questions[0]]
            rows = [option for _, options in picked for option in options]
            batch = {k: v.to(ctx.device) for k, v in _padded(rows, self.pad_id).items()}
            labels = batch.pop("labels")
            logits = engine(**batch).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = labels[:, 1:]
            keep = targets != IGNORE_INDEX
            token_logprobs = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
            means = (token_logprobs.sum(-1) / keep.sum(-1).clamp(min=1)).tolist()
            if not chunk:
                continue
            offset = 0
            for answer_index, options in picked:
                scores = means[offset : offset + len(options)]
                offset += len(options)
                correct += float(max(range(len(scores)), key=scores.__getitem__) == answer_index)
                asked += 1
        return correct, asked
