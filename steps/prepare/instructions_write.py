"""The instruction dataset folder written: conversations through the chat template, questions, report, summary.

`prepare_instructions` is the whole of prepare's instruction work for one tokenizer; the folder's layout is
`steps.formats.instruction_dataset`. A conversation the template cannot train on (a control token typed
into a message) or longer than instruct.seq_length is dropped with its reason, as reading drops a record.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from steps.config import DEFAULT_CORPUS, DataConfig
from steps.config.instruct import InstructConfig
from steps.formats.chat_template import (
    CHATML_TEMPLATE,
    ConversationError,
    end_of_turn_id,
    ensure_chat_template,
    prompt_ids,
    tokenize_conversation,
    use_template_file,
)
from steps.formats.dataset import record_key
from steps.formats.instruction_dataset import ConversationWriter
from steps.formats.instruction_folder import REPORT_FILE, SPLITS, Question, write_questions, write_summary
from steps.formats.tokenizer_folder import load_tokenizer
from steps.prepare.corpus import CorpusError
from steps.prepare.instructions import Conversation, load_instructions
from steps.prepare.report import CorpusReport
from steps.results import InstructionSummary, PrepareSummary, SplitCounts


def set_up_template(tokenizer: PreTrainedTokenizerBase, instruct: InstructConfig, add_tokens: bool = False) -> str:
    """The template conversations go through: instruct.chat_template's file, the tokenizer's own, or ChatML
    for a tokenizer without one. `add_tokens`: ChatML's turn markers are added as special tokens where missing
    (a tokenizer trained from scratch, before any model is sized to it); else they must be there already (see
    `ensure_chat_template`)."""
    if instruct.chat_template:
        use_template_file(tokenizer, instruct.chat_template)
        return "file"
    ensure_chat_template(tokenizer, add_tokens=add_tokens)
    return "chatml" if tokenizer.chat_template == CHATML_TEMPLATE else "own"


def _unstore(report: CorpusReport, conversation: Conversation, kind: str, reason: str) -> None:
    """A conversation kept by reading but not stored: counted as dropped instead."""
    report.kept -= 1
    report.kept_chars -= sum(len(m["content"]) for m in conversation.messages)
    report.documents_by_format[conversation.format] -= 1
    report.dropped[kind] += 1
    report.record(conversation.conversation_id.split("#", 1)[0], conversation.conversation_id, "dropped", reason)


def _write_split(
    out_dir: Path, conversations: list[Conversation], tokenizer, seq_length: int, report: CorpusReport
) -> ConversationWriter:
    writer = ConversationWriter(out_dir)
    for conversation in conversations:
        try:
            tokenized = tokenize_conversation(tokenizer, conversation.messages)
        except ConversationError as exc:
            _unstore(report, conversation, exc.kind, str(exc))
            continue
        if len(tokenized.input_ids) > seq_length:
            reason = f"too_long: {len(tokenized.input_ids)} tokens, more than instruct.seq_length ({seq_length})"
            _unstore(report, conversation, "too_long", reason)
            continue
        writer.add(conversation.conversation_id, tokenized.input_ids, tokenized.labels)
    writer.close()
    return writer


def _askable(questions: list[Question], tokenizer, instruct: InstructConfig, report: CorpusReport) -> list[Question]:
    """The questions whose prompt and answer fit instruct.seq_length (prompt plus max_new_tokens to generate)."""
    kept = []
    for question in questions:
        try:
            prompt = prompt_ids(tokenizer, question.messages)
            longest = max(
                len(
                    tokenize_conversation(
                        tokenizer, [*question.messages, {"role": "assistant", "content": answer}]
                    ).input_ids
                )
                for answer in [question.reference, *question.choices]
            )
        except ConversationError as exc:
            report.dropped[f"question_{exc.kind}"] += 1
            report.record(question.subject, question.question_id, "dropped_question", str(exc))
            continue
        if max(longest, len(prompt) + instruct.max_new_tokens) > instruct.seq_length:
            report.dropped["question_too_long"] += 1
            reason = f"question_too_long: with its answer, more than instruct.seq_length ({instruct.seq_length})"
            report.record(question.subject, question.question_id, "dropped_question", reason)
            continue
        kept.append(question)
    return kept


def prepare_instructions(
    instruct: InstructConfig,
    data: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    not_held_out: frozenset[str] = frozenset(),
) -> InstructionSummary:
    """Read, clean, split and tokenize instruct.instructions into `out_dir` (the instruction dataset folder).

    The tokenizer's template may change (instruct.chat_template): save the tokenizer after this call.
    Raises CorpusError as prepare does: nothing left to train on, or with data.strict any unreadable input.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    template = set_up_template(tokenizer, instruct)
    end_id = end_of_turn_id(tokenizer)
    with open(out_dir / REPORT_FILE, "w") as rows:
        report = CorpusReport(rows=rows)
        instructions = load_instructions(instruct, data, report, not_held_out)
        writers = {
            split: _write_split(out_dir / split, conversations, tokenizer, instruct.seq_length, report)
            for split, conversations in zip(SPLITS, (instructions.train, instructions.validation), strict=True)
        }
        questions = _askable(instructions.questions, tokenizer, instruct, report)
    for split, writer in writers.items():
        if writer.count == 0:
            raise CorpusError(
                f"instruct.instructions = {instruct.instructions!r} left no {split} conversation "
                f"(dropped: {dict(report.dropped)}); see {out_dir / REPORT_FILE}; if they were too long, raise "
                f"instruct.seq_length ({instruct.seq_length})"
            )
    write_questions(out_dir, questions)
    counts = lambda attribute: SplitCounts(**{s: getattr(writers[s], attribute) for s in SPLITS})  # noqa: E731
    summary = InstructionSummary(
        source=instruct.instructions,
        report=report.summary(),
        conversations=counts("count"),
        tokens=counts("tokens"),
        label_tokens=counts("label_tokens"),
        longest=max(writer.longest for writer in writers.values()),
        questions=len(questions),
        held_out_subjects=instructions.held_out_subjects,
        chat_template=template,
        end_of_turn_id=end_id,
    )
    write_summary(out_dir, summary)
    return summary


def write_instruction_folder(
    instruct: InstructConfig, data: DataConfig, tokenizer_dir: Path, prepared: PrepareSummary, out_dir: Path
) -> InstructionSummary:
    """prepare's instruction dataset folder, beside the packed corpus it was prepared with (`prepared`).

    The tokenizer is the run's, saved with its chat template by the decide phase. With the CWE corpus, the
    weaknesses whose documents pretraining holds out are never held out here: every held-out question is about
    a weakness whose document continued pretraining read (see `steps.prepare.instructions_cwe`).
    """
    corpus_held_out = [record_key(doc_id) for doc_id in prepared.validation_doc_ids]
    not_held_out = frozenset(corpus_held_out) if data.corpus == DEFAULT_CORPUS else frozenset()
    summary = prepare_instructions(instruct, data, load_tokenizer(tokenizer_dir), out_dir, not_held_out)
    dropped = sum(summary.report.dropped.values())
    print(
        f"instructions: {summary.conversations.train} training and {summary.conversations.validation} held-out "
        f"conversations ({summary.label_tokens.train:,} answer tokens to learn), {summary.questions} held-out "
        f"questions, {dropped} dropped, chat template: {summary.chat_template}",
        flush=True,
    )
    return summary
