"""Instruction tuning in the one training loop: the loss over labelled positions only equals the model's own loss
(and its gradients), full or under LoRA; instruct.* becomes the loop's train settings; the held-out scorer's
loss and multiple-choice accuracy; what the loop reads of conversations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from steps.config import TuneConfig
from steps.config.instruct import InstructConfig
from steps.evaluate.answers import choice_scores
from steps.formats.chat_template import IGNORE_INDEX, ensure_chat_template
from steps.formats.instruction_dataset import ConversationWriter, load_conversations
from steps.formats.instruction_folder import Question, write_questions
from steps.formats.train_folder import VERIFY_BLOCKS, VERIFY_TOKENS
from steps.prepare.tokenizer_training import train_bpe_tokenizer
from steps.runtime.distributed import DistContext
from steps.train.held_out import HeldOutScorer
from steps.train.lora import lora_for_training
from steps.train.objective import instruction_tuning_settings
from steps.train.sft_batches import ConversationBatches
from steps.train.sft_loss import score_labelled_positions_only
from steps.train.training_data import ConversationData
from tests.support.corpus_files import prose
from tests.support.tiny_llama import save_tiny_tied_llama

VOCAB, PAD = 64, 0
CTX = DistContext(rank=0, local_rank=0, world_size=1, node_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_tied_llama(tmp_path_factory.mktemp("model"), VOCAB, 64)


def _model(folder) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).train()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An instruction folder's training split: 20 conversations, the last third of each labelled."""
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("instructions")
    for split, count in (("train", 20), ("validation", 6)):
        writer = ConversationWriter(root / split)
        for number in range(count):
            length = int(rng.integers(6, 30))
            ids = rng.integers(1, VOCAB, length).tolist()
            answer = length - max(1, length // 3)
            writer.add(f"{split}{number}", ids, [IGNORE_INDEX] * answer + ids[answer:])
        writer.close()
    return root


def _batch(folder):
    batches = ConversationBatches(load_conversations(folder / "train"), PAD, 3, 4, 1, 2)
    return batches.batch(0, 0, 0).model_inputs()


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_the_labelled_positions_loss_is_the_models_own_with_its_gradients(model_dir, folder, method) -> None:
    inputs = _batch(folder)
    models = [_model(model_dir), score_labelled_positions_only(_model(model_dir))]
    if method == "lora":
        config = InstructConfig(method="lora", lora_rank=4, lora_dropout=0.0)
        models = [lora_for_training(m, config, seed=1) for m in models]
    losses = []
    for model in models:
        loss = model(**inputs).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=1e-6)
    own, ours = (_grads(m) for m in models)
    assert own.keys() == ours.keys() and own
    for name in own:
        torch.testing.assert_close(ours[name], own[name], atol=1e-6, rtol=1e-5)
    # Without labels (the logits check, evaluation, generation) it is the model's own forward.
    with torch.no_grad():
        plain = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        torch.testing.assert_close(models[1](**plain).logits, models[0](**plain).logits, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("counted", [True, False], ids=["step's count", "own count"])
def test_a_micro_batch_without_labels_gives_a_zero_loss_that_still_reaches_every_parameter(
    model_dir, folder, counted: bool
) -> None:
    model = score_labelled_positions_only(_model(model_dir))
    inputs = _batch(folder)
    inputs["labels"] = torch.full_like(inputs["labels"], IGNORE_INDEX)
    if not counted:  # divided by its own labels' count, which is 0
        del inputs["num_items_in_batch"]
    loss = model(**inputs).loss
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_instruct_settings_become_the_loops_train_settings() -> None:
    config = TuneConfig.model_validate(
        {
            "train": {"max_steps": 500, "learning_rate": 3e-3, "nproc_per_node": 4, "dtype": "bf16", "log_every": 7},
            "instruct": {"instructions": "cwe", "method": "lora", "max_steps": 40, "micro_batch_size": 3},
        }
    )
    train = instruction_tuning_settings(config).train
    assert (train.max_steps, train.micro_batch_size, train.learning_rate) == (40, 3, 2e-4)  # LoRA's default rate
    assert train.lr_floor == pytest.approx(2e-5) and train.checkpoint_every == config.instruct.checkpoint_every
    assert (train.nproc_per_node, train.dtype, train.log_every) == (4, "bf16", 7)  # train's machines and precision
    assert config.train.max_steps == 500  # the run's own config is left alone


def test_the_loop_reads_real_tokens_and_a_fixed_held_out_batch(folder) -> None:
    data = ConversationData(folder, PAD, seed=3, micro_batch=2, world_size=2, accumulation=2)
    lengths = data.split.lengths
    for step in range(3):
        inputs = [data.model_inputs(step, m, r, torch.device("cpu")) for m in range(2) for r in range(2)]
        assert data.step_tokens(step) == sum(int(i["attention_mask"].sum()) for i in inputs)
    assert data.position(2) == 2 * 8 and data.step_tokens(0) <= 8 * int(lengths.max())  # 8 a step, 2 steps
    ids = data.verify_ids()
    assert ids.shape == (VERIFY_BLOCKS, VERIFY_TOKENS)
    assert ids.flatten()[:5].tolist() == load_conversations(folder / "validation").input_ids[:5].tolist()


def test_the_held_out_scorer_reads_loss_and_picks_the_likeliest_option(model_dir, folder, tmp_path) -> None:
    tokenizer = train_bpe_tokenizer([prose(n, 60) for n in range(10)], 300)
    ensure_chat_template(tokenizer, add_tokens=True)
    question = Question(
        question_id="q",
        kind="id_to_name",
        subject="CWE-1",
        messages=[{"role": "user", "content": "Which report?"}],
        reference="Report one.",
        short_answer="one",
        choices=["Report two.", "Report one.", "Report three."],
        answer_index=1,
    )
    write_questions(tmp_path, [question])
    folder_model = save_tiny_tied_llama(tmp_path / "chat-model", len(tokenizer), 128)
    model = score_labelled_positions_only(_model(folder_model)).eval()
    validation = load_conversations(folder / "validation")
    scorer = HeldOutScorer(validation, [question, question.model_copy(update={"choices": []})], tokenizer, PAD, 4)
    assert len(scorer.questions) == 1  # a question without options is not scored by likelihood
    scores = scorer.score(model, CTX)
    # The loss is the token mean over the first 4 held-out conversations, as the model computes it.
    rows = [tuple(np.array(part) for part in validation.conversation(i)) for i in range(4)]
    labelled = sum(int((torch.as_tensor(labels[1:]) != IGNORE_INDEX).sum()) for _, labels in rows)
    with torch.no_grad():
        total = sum(
            model(input_ids=torch.as_tensor(ids[None]).long(), labels=torch.as_tensor(labels[None]).long()).loss
            * int((torch.as_tensor(labels[1:]) != IGNORE_INDEX).sum())
            for ids, labels in rows
        )
    assert scores["held_out_loss"] == pytest.approx(float(total) / labelled, rel=1e-5)
    # The pick is the option evaluate scores highest (mean log-probability per token of the assistant's answer).
    expected = choice_scores(model, tokenizer, [question])[0]
    best = max(range(len(expected)), key=expected.__getitem__)
    assert scores["held_out_choice_accuracy"] == float(best == question.answer_index)
    for answer_index in range(3):  # whichever option is the reference, the scorer agrees with that ranking
        moved = question.model_copy(update={"answer_index": answer_index})
        accuracy = HeldOutScorer(validation, [moved], tokenizer, PAD, 0).score(model, CTX)["held_out_choice_accuracy"]
        assert accuracy == float(best == answer_index)
