"""Answer metrics on a tiny Llama instruction-tuned here on two conversations (through the chat template,
the instruction dataset and the SFT batches): exact match, contains-the-reference, multiple choice by
likelihood and the share of answers that end their turn within max_new_tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from steps.evaluate.answers import (
    answer_text,
    choice_scores,
    contains_fact,
    evaluate_answers,
    normalise_answer,
    question_prompts,
)
from steps.formats.chat_template import chat_stop_ids, ensure_chat_template, tokenize_conversation
from steps.formats.instruction_dataset import ConversationWriter, load_conversations
from steps.formats.instruction_folder import Question
from steps.prepare.tokenizer_training import train_bpe_tokenizer
from steps.train.sft_batches import ConversationBatches
from tests.support.tiny_llama import save_tiny_tied_llama

TAUGHT = {
    "What is CWE-79?": "CWE-79 is Cross-site Scripting.",
    "What is CWE-89?": "CWE-89 is SQL Injection.",
}
CHOICES = ["CWE-79 is SQL Injection.", "CWE-79 is Cross-site Scripting.", "CWE-79 is Path Traversal."]


def question(prompt: str, reference: str, short: str, choices: list[str] | None = None) -> Question:
    choices = choices or []
    return Question(
        question_id=prompt,
        kind="id_to_name",
        subject=prompt.split()[-1].rstrip("?"),
        messages=[{"role": "user", "content": prompt}],
        reference=reference,
        short_answer=short,
        choices=choices,
        answer_index=choices.index(reference) if choices else None,
    )


QUESTIONS = [
    question("What is CWE-79?", TAUGHT["What is CWE-79?"], "Cross-site Scripting", CHOICES),
    question("What is CWE-89?", TAUGHT["What is CWE-89?"], "SQL Injection"),
]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tiny model and its tokenizer after 60 SFT steps on the two taught conversations."""
    root = tmp_path_factory.mktemp("answers")
    text = [f"{q} {a} Path Traversal." for q, a in TAUGHT.items()] * 20
    tokenizer = train_bpe_tokenizer(text, 300)
    ensure_chat_template(tokenizer, add_tokens=True)
    writer = ConversationWriter(root / "train")
    for number, (prompt, reply) in enumerate(TAUGHT.items()):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
        tokenized = tokenize_conversation(tokenizer, messages)
        writer.add(str(number), tokenized.input_ids, tokenized.labels)
    writer.close()
    folder = save_tiny_tied_llama(root / "model", len(tokenizer), 128, tokenizer)
    model = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    batches = ConversationBatches(load_conversations(root / "train"), tokenizer.pad_token_id, 0, 2, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    torch.manual_seed(0)
    model.train()
    for step in range(60):
        model(**batches.batch(step, 0, 0).model_inputs()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tokenizer


def test_a_taught_answer_matches_stops_and_wins_the_choice(tuned) -> None:
    model, tokenizer = tuned
    rows, summary = evaluate_answers(model, tokenizer, QUESTIONS, max_new_tokens=24, batch_size=2)
    assert [row["answer"] for row in rows] == list(TAUGHT.values())
    assert all(row["stopped"] and row["exact_match"] and row["contains_reference"] for row in rows)
    assert rows[0]["picked"] == TAUGHT["What is CWE-79?"] and rows[0]["choice_correct"] is True
    assert rows[1]["picked"] is None and rows[1]["choice_correct"] is None  # no options, no multiple choice
    assert summary["all"] == {
        "questions": 2,
        "exact_match": 1.0,
        "contains_reference": 1.0,
        "choice_accuracy": 1.0,
        "stopped": 1.0,
    }


def test_an_answer_cut_by_max_new_tokens_has_not_stopped(tuned) -> None:
    model, tokenizer = tuned
    rows, summary = evaluate_answers(model, tokenizer, QUESTIONS, max_new_tokens=3, batch_size=1)
    assert not any(row["stopped"] or row["exact_match"] for row in rows)
    assert summary["all"]["stopped"] == 0.0
    # Each cut answer is the start of the full one: the same greedy tokens, fewer of them.
    assert all(TAUGHT[row["question"]].startswith(row["answer"]) for row in rows)


def test_choice_scores_are_each_options_mean_log_probability_after_the_chat_prompt(tuned) -> None:
    model, tokenizer = tuned
    (scores, empty) = choice_scores(model, tokenizer, QUESTIONS)
    assert empty == [] and len(scores) == 3
    prompt = question_prompts(tokenizer, QUESTIONS[:1])[0]
    stop = chat_stop_ids(tokenizer)[0]
    for option, score in zip(CHOICES, scores, strict=True):
        answer = tokenizer(option, add_special_tokens=False)["input_ids"] + [stop]
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1 : -1], dim=-1)
        expected = logprobs[torch.arange(len(answer)), torch.tensor(answer)].mean().item()
        assert score == pytest.approx(expected, abs=1e-5)


def test_answer_text_reads_engine_output_with_or_without_the_stop_token(tuned) -> None:
    _, tokenizer = tuned
    stops = chat_stop_ids(tokenizer)
    words = tokenizer("CWE-79 is Cross-site Scripting.", add_special_tokens=False)["input_ids"]
    assert answer_text(tokenizer, [*words, stops[0], tokenizer.pad_token_id], stops) == (
        TAUGHT["What is CWE-79?"],
        True,
    )
    assert answer_text(tokenizer, words, stops) == (TAUGHT["What is CWE-79?"], False)


def test_facts_are_found_whole_and_answers_compared_loosely() -> None:
    assert contains_fact("That is CWE-79, reflected.", "CWE-79")
    assert not contains_fact("That is CWE-798.", "CWE-79")
    assert contains_fact("it is   cross-SITE scripting!", "Cross-site Scripting")
    assert not contains_fact("anything", "  ")
    assert normalise_answer("CWE-79 is  Cross-site Scripting") == normalise_answer("cwe-79 is cross-site scripting.")
