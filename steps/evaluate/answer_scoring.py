"""Held-out questions asked of each model of a run over all ranks: answers, multiple choice, their summary.

The questions are prepare's (`steps.formats.instruction_dataset`), asked through the chat template. Answers
are generated greedily by the same engines and batching as the held-out prompts (`run_engine`), stopping at
the end of the assistant's turn; the tuned model's answers come from every engine, so that the engines'
token-for-token agreement covers them too. Choices are scored on each rank's share of the questions
(`steps.evaluate.answers.choice_scores`) and gathered. The metrics are `steps.evaluate.answers`'.
"""

from __future__ import annotations

from collections.abc import Sequence

from steps.config import EvaluateConfig, TuneConfig
from steps.evaluate.answers import answer_rows, answer_text, choice_scores, question_prompts, summarize_answers
from steps.evaluate.engines import InferenceEngine
from steps.evaluate.generation import run_engine, shard_indices
from steps.evaluate.progress import NO_PROGRESS, Progress
from steps.formats.chat_template import chat_stop_ids
from steps.formats.instruction_folder import Question
from steps.runtime.distributed import DistContext, all_gather_objects


def question_items(tokenizer, questions: Sequence[Question]) -> list[dict]:
    """The questions as generation prompts (`run_engine`'s items), with what the answer table shows."""
    return [
        {
            "source": "question",
            "doc_id": question.question_id,
            "prompt": question.messages[-1]["content"],
            "prompt_ids": ids,
            "reference": question.reference,
        }
        for question, ids in zip(questions, question_prompts(tokenizer, questions), strict=True)
    ]


def answer_settings(config: TuneConfig, tokenizer) -> EvaluateConfig:
    """Generation settings for answers: greedy, instruct.max_new_tokens, stopping at the end of the turn."""
    return config.evaluate.model_copy(
        update={
            "decoding": "greedy",
            "max_new_tokens": config.instruct.max_new_tokens,
            "extra_eos_ids": chat_stop_ids(tokenizer),
        }
    )


def answers_of(results: Sequence[dict], tokenizer) -> list[tuple[str, bool]]:
    """(answer, stopped) from `run_engine`'s results."""
    stops = chat_stop_ids(tokenizer)
    return [answer_text(tokenizer, result["tokens"], stops) for result in results]


def choices_on_ranks(model, tokenizer, questions: Sequence[Question], ctx: DistContext) -> list[list[float]]:
    """Each question's option scores, every rank scoring its share; the same list on every rank."""
    mine = shard_indices(len(questions), ctx.world_size, ctx.rank)
    scored = choice_scores(model, tokenizer, [questions[i] for i in mine], ctx.device) if mine else []
    gathered = {i: s for part in all_gather_objects(list(zip(mine, scored, strict=True))) for i, s in part}
    return [gathered[i] for i in range(len(questions))]


def generate_answers(
    model, tokenizer, questions: Sequence[Question], config: TuneConfig, ctx: DistContext, progress: Progress
) -> list[dict]:
    """A plain model's answers (`run_engine`'s results), each rank generating its share."""
    engine = InferenceEngine("hf", model, shards_prompts=True)
    items = question_items(tokenizer, questions)
    return run_engine(engine, items, answer_settings(config, tokenizer), tokenizer, ctx, progress)


def answer_summary(
    label: str, questions: Sequence[Question], generated: Sequence[dict], scores: Sequence[list[float]], tokenizer
) -> tuple[list[dict], dict[str, dict]]:
    """One model's rows (`model` = label) and their summary by kind."""
    rows = [{"model": label, **row} for row in answer_rows(questions, answers_of(generated, tokenizer), scores)]
    return rows, summarize_answers(rows)


def ask_model(
    model,
    label: str,
    tokenizer,
    questions: Sequence[Question],
    config: TuneConfig,
    ctx: DistContext,
    progress: Progress = NO_PROGRESS,
) -> tuple[list[dict], dict[str, dict]]:
    """A plain model's answers and choices on every question: its rows and summary."""
    progress.scope = f"{label} model, questions"
    generated = generate_answers(model, tokenizer, questions, config, ctx, progress)
    return answer_summary(label, questions, generated, choices_on_ranks(model, tokenizer, questions, ctx), tokenizer)
