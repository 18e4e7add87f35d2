"""Answer quality on held-out questions, through the chat template: what an analyst asking the model would see.

For each question (`steps.formats.instruction_dataset.Question`):
- the model answers (greedy, at most `max_new_tokens`): exact match of the answer against the reference,
  and whether it contains the reference's fact (`short_answer`: the name, the ID; as a whole word, so
  `CWE-79` is not found in `CWE-798`), compared case- and spacing-insensitively;
- whether the answer stopped: ended its turn (the end-of-turn token) within `max_new_tokens`;
- multiple choice by likelihood: each option as the assistant's answer after the chat prompt, scored by its
  mean log-probability per token (its end-of-turn token included), the best one picked. Options share
  their wording and differ in the fact, so their lengths are close and the mean compares them fairly.

`generate_answers` is plain Hugging Face generation on one process; the evaluate stage's engines
(`steps.evaluate.generation.run_engine`) produce the same tokens from `question_prompts` with
`chat_stop_ids` as end-of-sequence ids, and `answer_text` reads either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from steps.evaluate.probe_scoring import TOKENS_PER_BATCH, score_sequences
from steps.formats.chat_template import chat_stop_ids, prompt_ids, tokenize_conversation
from steps.formats.instruction_folder import Question

_TRAILING_PUNCTUATION = ".!?;: "


def question_prompts(tokenizer: PreTrainedTokenizerBase, questions: Sequence[Question]) -> list[list[int]]:
    """Each question's token ids with the generation prompt: what the model answers."""
    return [prompt_ids(tokenizer, question.messages) for question in questions]


def answer_text(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[int], stop_ids: Sequence[int]) -> tuple[str, bool]:
    """The answer in generated tokens (up to the first stop id), and whether it stopped there."""
    tokens = list(tokens)
    stop = next((position for position, token in enumerate(tokens) if token in set(stop_ids)), None)
    kept = tokens if stop is None else tokens[:stop]
    return tokenizer.decode(kept, skip_special_tokens=True).strip(), stop is not None


@torch.no_grad()
def generate_answers(
    model,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[Question],
    max_new_tokens: int,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> list[tuple[str, bool]]:
    """(answer, stopped) per question, greedy, left-padded batches on one process."""
    stops = chat_stop_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    prompts = question_prompts(tokenizer, questions)
    model.eval()
    answers = []
    for start in range(0, len(prompts), batch_size):
        rows = prompts[start : start + batch_size]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=pad_id,
        )
        answers += [answer_text(tokenizer, tokens, stops) for tokens in out[:, width:].tolist()]
    return answers


def choice_scores(
    model, tokenizer: PreTrainedTokenizerBase, questions: Sequence[Question], device: torch.device | str = "cpu"
) -> list[list[float]]:
    """Per question with choices, each option's mean log-probability per token as the assistant's answer
    (end-of-turn token included); an empty list for a question without choices."""
    pairs, owners = [], []
    for number, question in enumerate(questions):
        for choice in question.choices:
            tokenized = tokenize_conversation(tokenizer, [*question.messages, {"role": "assistant", "content": choice}])
            start, stop = tokenized.turns[-1]
            pairs.append((tokenized.input_ids[:start], tokenized.input_ids[start:stop]))
            owners.append(number)
    budget = TOKENS_PER_BATCH.get(torch.device(device).type, TOKENS_PER_BATCH["cuda"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logprobs = score_sequences(model, pairs, pad_id, device, budget) if pairs else []
    scores: list[list[float]] = [[] for _ in questions]
    for number, values in zip(owners, logprobs, strict=True):
        scores[number].append(sum(values) / len(values))
    return scores


def normalise_answer(text: str) -> str:
    """Case, runs of spaces and trailing punctuation do not make an answer wrong."""
    return " ".join(text.casefold().split()).rstrip(_TRAILING_PUNCTUATION)


def contains_fact(answer: str, fact: str) -> bool:
    """Whether `fact` is in `answer` as a whole (not `CWE-79` inside `CWE-798`), case- and spacing-insensitively."""
    wanted = normalise_answer(fact)
    if not wanted:
        return False
    return re.search(rf"(?<!\w){re.escape(wanted)}(?!\w)", " ".join(answer.casefold().split())) is not None


def answer_rows(
    questions: Sequence[Question], answers: Sequence[tuple[str, bool]], scores: Sequence[list[float]]
) -> list[dict]:
    """One row per question: the answer and how it scored (choice fields None without choices)."""
    rows = []
    for question, (answer, stopped), option_scores in zip(questions, answers, scores, strict=True):
        picked = max(range(len(option_scores)), key=option_scores.__getitem__) if option_scores else None
        rows.append(
            {
                "question_id": question.question_id,
                "kind": question.kind,
                "subject": question.subject,
                "question": question.messages[-1]["content"],
                "reference": question.reference,
                "answer": answer,
                "stopped": stopped,
                "exact_match": normalise_answer(answer) == normalise_answer(question.reference),
                "contains_reference": contains_fact(answer, question.short_answer),
                "picked": question.choices[picked] if picked is not None else None,
                "choice_correct": picked == question.answer_index if picked is not None else None,
            }
        )
    return rows


def summarize_answers(rows: Sequence[dict]) -> dict[str, dict[str, float | int | None]]:
    """Per kind and for `all`: questions, exact match, contains-the-reference, choice accuracy, stopped share."""
    groups: dict[str, list[dict]] = {"all": list(rows)}
    for row in rows:
        groups.setdefault(row["kind"], []).append(row)
    summary = {}
    for name, group in sorted(groups.items()):
        chosen = [row["choice_correct"] for row in group if row["choice_correct"] is not None]
        count = max(1, len(group))
        summary[name] = {
            "questions": len(group),
            "exact_match": sum(row["exact_match"] for row in group) / count,
            "contains_reference": sum(row["contains_reference"] for row in group) / count,
            "choice_accuracy": sum(chosen) / len(chosen) if chosen else None,
            "stopped": sum(row["stopped"] for row in group) / count,
        }
    return summary


def evaluate_answers(
    model,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[Question],
    max_new_tokens: int,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> tuple[list[dict], dict[str, dict]]:
    """The rows and their summary for one model on one process."""
    answers = generate_answers(model, tokenizer, questions, max_new_tokens, batch_size, device)
    rows = answer_rows(questions, answers, choice_scores(model, tokenizer, questions, device))
    return rows, summarize_answers(rows)
