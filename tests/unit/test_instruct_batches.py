"""Batches of conversations: no attention across conversations, the step's token-mean loss whatever the ranks
and micro-batches, and an order that a resumed run (on any world size) continues exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from steps.formats.chat_template import IGNORE_INDEX
from steps.formats.instruction_dataset import ConversationWriter, TokenizedSplit, load_conversations
from steps.train.sft_batches import ConversationBatches
from tests.support.tiny_llama import save_tiny_tied_llama

VOCAB, PAD = 64, 0


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """30 conversations of 5 to 40 tokens, the last third of each labelled."""
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("sft") / "train"
    writer = ConversationWriter(out)
    for number in range(30):
        length = int(rng.integers(5, 41))
        ids = rng.integers(1, VOCAB, length).tolist()
        answer = length - max(1, length // 3)
        writer.add(f"c{number}", ids, [IGNORE_INDEX] * answer + ids[answer:])
    writer.close()
    return load_conversations(out)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> LlamaForCausalLM:
    folder = save_tiny_tied_llama(tmp_path_factory.mktemp("model"), VOCAB, 64)
    return LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="sdpa").eval()


def test_padded_conversations_do_not_attend_to_each_other(split, model) -> None:
    batches = ConversationBatches(split, PAD, seed=3, micro_batch=4, world_size=1, accumulation=1)
    batch = batches.batch(0, 0, 0)
    assert len(set(batch.attention_mask.sum(1).tolist())) > 1  # rows of different lengths: padding is exercised
    with torch.no_grad():
        together = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        for row, index in enumerate(batch.conversations):
            ids, labels = split.conversation(index)
            alone = model(input_ids=torch.tensor([ids.tolist()])).logits[0]
            torch.testing.assert_close(together[row, : len(ids)], alone, atol=1e-5, rtol=1e-5)
            assert batch.labels[row, : len(ids)].tolist() == labels.tolist()
            assert (batch.labels[row, len(ids) :] == IGNORE_INDEX).all()
            assert (batch.input_ids[row, len(ids) :] == PAD).all()


def test_the_step_loss_is_the_token_mean_whatever_the_ranks_and_micro_batches(split, model) -> None:
    """What DeepSpeed computes (the mean over ranks of the mean over micro-batches) is the step's token mean."""
    world, accumulation = 2, 3
    batches = ConversationBatches(split, PAD, seed=5, micro_batch=2, world_size=world, accumulation=accumulation)
    step = 1
    with torch.no_grad():
        slot_losses = [
            model(**batches.batch(step, micro, rank).model_inputs()).loss
            for micro in range(accumulation)
            for rank in range(world)
        ]
        combined = torch.stack(slot_losses).mean()
        token_losses = []
        for group in batches.step_groups(step):
            for index in group:
                ids, labels = (torch.tensor([a.tolist()]) for a in split.conversation(index))
                logits = model(input_ids=ids).logits[0, :-1]
                targets = labels[0, 1:]
                keep = targets != IGNORE_INDEX
                token_losses.append(torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="none"))
    expected = torch.cat(token_losses).mean()
    assert batches.step_label_tokens(step) == sum(len(t) for t in token_losses)
    torch.testing.assert_close(combined, expected, atol=1e-5, rtol=1e-5)
    # The plain per-micro-batch mean would weigh a short answer's tokens more: the two differ here.
    plain = torch.stack(
        [
            model(**{**batches.batch(step, m, r).model_inputs(), "num_items_in_batch": None}).loss
            for m in range(accumulation)
            for r in range(world)
        ]
    ).mean()
    assert abs(plain.item() - expected.item()) > 1e-3


def test_each_epoch_reads_every_conversation_once_and_lengths_are_grouped(split) -> None:
    batches = ConversationBatches(split, PAD, seed=1, micro_batch=3, world_size=2, accumulation=1)
    seen = [i for step in range(5) for group in batches.step_groups(step) for i in group]
    assert sorted(seen) == list(range(30))
    groups = batches.step_groups(0)
    longest = [max(split.lengths[i] for i in group) for group in groups]
    assert longest == sorted(longest)  # the ranks of one micro-step get neighbouring lengths


def test_a_resumed_stream_continues_where_it_stopped_on_another_world_size(split) -> None:
    two_ranks = ConversationBatches(split, PAD, seed=9, micro_batch=2, world_size=2, accumulation=1)
    stream = [i for step in range(15) for group in two_ranks.step_groups(step) for i in sorted(group)]
    stopped_at = 4
    one_rank = ConversationBatches(split, PAD, seed=9, micro_batch=2, world_size=1, accumulation=1)
    one_rank.resume_at(stopped_at, two_ranks.position(stopped_at))
    after = [i for step in range(stopped_at, stopped_at + 4) for group in one_rank.step_groups(step) for i in group]
    assert sorted(after) == sorted(stream[16:24])  # the next 8 conversations of the same stream
    again = ConversationBatches(split, PAD, seed=9, micro_batch=2, world_size=2, accumulation=1)
    assert all(
        again.batch(step, 0, rank).conversations == two_ranks.batch(step, 0, rank).conversations
        for step in range(6)
        for rank in range(2)
    )


def test_the_dataset_refuses_rows_a_causal_model_cannot_train_on(tmp_path) -> None:
    writer = ConversationWriter(tmp_path / "train")
    with pytest.raises(ValueError, match="c0: 3 tokens but 2 labels"):
        writer.add("c0", [5, 6, 7], [IGNORE_INDEX, 7])
    # Nothing predicts a first token: its label would be counted in the loss's denominator but never trained.
    with pytest.raises(ValueError, match="c1: a conversation must start with an unlabelled"):
        writer.add("c1", [5, 6, 7], [5, 6, 7])


def test_a_split_whose_labels_do_not_fit_its_tokens_is_refused(tmp_path) -> None:
    from datasets import Dataset

    from steps.formats.instruction_dataset import CONVERSATION_FEATURES

    rows = {"conversation_id": ["a"], "input_ids": [[1, 2, 3]], "labels": [[IGNORE_INDEX, 2]]}
    Dataset.from_dict(rows, features=CONVERSATION_FEATURES).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="input_ids and labels differ in length; prepare it again"):
        load_conversations(tmp_path / "bad")


def test_a_step_without_any_label_has_a_zero_loss_not_nan(tmp_path, model) -> None:
    writer = ConversationWriter(tmp_path / "train")
    for number in range(4):
        writer.add(f"c{number}", [1, 2, 3, 4], [IGNORE_INDEX] * 4)
    writer.close()
    batches = ConversationBatches(load_conversations(tmp_path / "train"), PAD, 0, 2, 1, 1)
    assert batches.step_label_tokens(0) == 0
    assert model(**batches.batch(0, 0, 0).model_inputs()).loss.item() == 0.0
    empty = TokenizedSplit([], np.zeros(1, dtype=np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32))
    with pytest.raises(ValueError, match="no conversations to train on"):
        ConversationBatches(empty, PAD, 0, 2, 1, 1)
