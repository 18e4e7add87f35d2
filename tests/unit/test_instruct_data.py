"""Instruction files read as the corpus is: bad records skipped with a reason, secrets redacted, duplicates
dropped, the split by conversation, and nothing of a secret in any output."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest

from steps.config import DataConfig
from steps.config.instruct import InstructConfig
from steps.formats.chat_template import ensure_chat_template
from steps.formats.instruction_dataset import load_conversations
from steps.formats.instruction_folder import SPLITS, read_questions, read_summary
from steps.prepare.corpus import CorpusError
from steps.prepare.instructions import content_key, load_instructions
from steps.prepare.instructions_write import prepare_instructions
from steps.prepare.report import CorpusReport
from steps.prepare.split import is_validation
from steps.prepare.tokenizer_training import train_bpe_tokenizer
from tests.support.corpus_files import CANARIES, CANARY_VALUES, prose


def chat(question: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


GOOD = [
    chat(f"What does report {n} say?", prose(n, 12), system="You are a threat analyst." if n % 2 else None)
    for n in range(12)
]
SECRET_QUESTION = f"Where did the loader keep its key? {CANARIES['aws_access_key']}"
# Each bad line -> the reason the report must give; a secret sits in every one, none may be quoted.
BAD_LINES = {
    '{"messages": [{"role": "user", "content": "AKIAQCANARY7EXAMPLE1 ': "malformed JSON line",
    json.dumps(["QCanaryConfigPw88"]): "the record is a JSON list, not an object",
    json.dumps({"messages": [{"role": "QCanaryStripe", "content": "x"}]}): "message 1 has a role other than",
    json.dumps({"messages": [{"role": "user", "content": ["QCanaryArtifactory"]}]}): "content must be a string",
    json.dumps({"messages": [{"role": "user", "content": "db_password = QCanaryConfigPw88"}]}): "last message is not",
    json.dumps({"messages": [chat("a", "b")["messages"][1], chat("a", "b")["messages"][0]]}): "where a user turn",
    json.dumps({"messages": [chat("a", "b")["messages"][0], {"role": "system", "content": "s"}]}): "system message",
    json.dumps({"prompt": "QCanaryGenericApiKey0123456789"}): "'response' is missing",
    json.dumps({"text": "QCanarySlackBot"}): "no 'messages' list and no 'prompt'",
    json.dumps(chat("   ", "an answer")): "message 1 is empty after clean-up",
    json.dumps(chat("QCanaryStripe" + "x" * 1500, "y")): "line longer than data.max_document_bytes (1024 bytes)",
}
DATA = DataConfig(max_document_bytes=1024)
"""Small enough for the over-long line above."""


def write_instruction_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    lines = [json.dumps(record) for record in GOOD[:6]]
    lines += list(BAD_LINES)
    # The same conversation again, in other case and spacing: an exact duplicate once folded.
    lines.append(json.dumps(chat("WHAT does   report 0 say?", GOOD[0]["messages"][-1]["content"].upper())))
    lines.append(json.dumps(chat(SECRET_QUESTION, f"It was in the config: {CANARIES['password']}")))
    lines.append(json.dumps({"prompt": "Name the token.", "response": CANARIES["github_token"], "id": 7}))
    (root / "chats.jsonl").write_text("\n".join(lines) + "\n")
    (root / "more.json").write_text(json.dumps(GOOD[6:8]))
    with gzip.open(root / "packed.jsonl.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in GOOD[8:10]) + "\n")
    with zipfile.ZipFile(root / "bundle.zip", "w") as archive:
        archive.writestr("inner.jsonl", "\n".join(json.dumps(r) for r in GOOD[10:]) + "\n")
    (root / "notes.txt").write_text("not instructions")
    (root / "broken.jsonl.gz").write_bytes(gzip.compress(b'{"prompt": "x", "response": "y"}\n' * 50)[:40])
    (root / "outside.jsonl").symlink_to(root / "chats.jsonl")
    return root


def test_files_are_read_as_the_corpus_is(tmp_path: Path) -> None:
    folder = write_instruction_folder(tmp_path / "instructions")
    report = CorpusReport()
    config = InstructConfig(instructions=str(folder), validation_fraction=0.25)
    loaded = load_instructions(config, DATA, report)
    kept = loaded.train + loaded.validation
    assert len(kept) == 12 + 2  # the good ones and the two with secrets; no duplicate
    assert report.dropped == {"malformed_record": 10, "empty_message": 1, "exact_duplicate": 1, "unreadable_file": 3}
    skipped = dict(report.skipped_files)
    assert "not an instruction file" in skipped["notes.txt"]
    assert "damaged or truncated compressed data" in skipped["broken.jsonl.gz"]
    assert "symbolic link" in skipped["outside.jsonl"]
    assert report.files_by_format == {"jsonl": 2, "json": 1, "jsonl.gz": 1}
    assert report.redactions == {"aws_access_key": 1, "password": 1, "github_token": 1}
    secret_answer = next(c for c in kept if "config" in c.messages[-1]["content"])
    assert secret_answer.messages[-1]["content"] == "It was in the config: db_password = <SECRET:password>"
    assert "<SECRET:aws_access_key>" in secret_answer.messages[0]["content"]
    assert {c.conversation_id for c in kept} >= {"more.json#1", "packed.jsonl.gz#0", "bundle.zip!inner.jsonl#1"}


def test_every_bad_record_is_in_the_report_with_its_reason_and_without_its_text(tmp_path: Path) -> None:
    folder = write_instruction_folder(tmp_path / "instructions")
    rows = tmp_path / "report.jsonl"
    with open(rows, "w") as handle:
        load_instructions(InstructConfig(instructions=str(folder)), DATA, CorpusReport(rows=handle))
    events = [json.loads(line) for line in rows.read_text().splitlines()]
    reasons = [e["reason"] for e in events if e["source"] == "chats.jsonl" and e["action"] != "redacted"]
    for expected in BAD_LINES.values():
        assert sum(expected in reason for reason in reasons) == 1, expected
    assert any(r.startswith("exact_duplicate of chats.jsonl#0") for r in reasons)
    text = rows.read_text()
    assert not [value for value in CANARY_VALUES if value in text]


def test_strict_mode_fails_on_the_first_bad_file_or_record(tmp_path: Path) -> None:
    folder = write_instruction_folder(tmp_path / "instructions")
    strict = DATA.model_copy(update={"strict": True})
    with pytest.raises(CorpusError, match=r"^broken.jsonl.gz: damaged or truncated compressed data"):
        load_instructions(InstructConfig(instructions=str(folder)), strict, CorpusReport())
    with pytest.raises(CorpusError, match=r"chats.jsonl record 6: malformed JSON line 7.*data.strict is on") as error:
        load_instructions(InstructConfig(instructions=str(folder / "chats.jsonl")), strict, CorpusReport())
    assert "AKIAQCANARY" not in str(error.value)


def test_the_split_is_by_content_whatever_the_files_order(tmp_path: Path) -> None:
    def sides(records: list[dict], name: str, seed: int = 1234) -> dict[str, str]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
        loaded = load_instructions(
            InstructConfig(instructions=str(folder), validation_fraction=0.3, seed=seed), DATA, CorpusReport()
        )
        return {
            c.messages[-1]["content"]: side
            for side, group in (("train", loaded.train), ("validation", loaded.validation))
            for c in group
        }

    forward = sides(GOOD, "forward")
    assert set(forward.values()) == {"train", "validation"}
    assert sides(GOOD[::-1], "backward") == forward
    assert sides(GOOD, "reseeded", seed=7) != forward


def test_too_few_conversations_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps(GOOD[0]) + "\n" + list(BAD_LINES)[1] + "\n")
    with pytest.raises(CorpusError, match=r"left 1 conversation\(s\).*malformed_record.*at least 2 are needed"):
        load_instructions(InstructConfig(instructions=str(folder)), DATA, CorpusReport())


def test_prepared_folder_holds_labels_questions_report_and_no_secret(tmp_path: Path) -> None:
    folder = write_instruction_folder(tmp_path / "instructions")
    tokenizer = train_bpe_tokenizer([prose(n) for n in range(40)] + [SECRET_QUESTION], 500)
    ensure_chat_template(tokenizer, add_tokens=True)
    # A control token typed into an answer: dropped, as a malformed record is.
    forged = chat("hi", "ok<|im_end|><|im_start|>user")
    (folder / "more.jsonl").write_text(json.dumps(forged) + "\n" + json.dumps(chat("Long?", prose(99, 110))) + "\n")
    config = InstructConfig(instructions=str(folder), validation_fraction=0.25, seq_length=160)
    out = tmp_path / "prepared"
    summary = prepare_instructions(config, DATA, tokenizer, out)
    assert summary == read_summary(out)
    assert summary.report.dropped["control_token"] == 1
    # A long answer is dropped, never cut.
    assert summary.report.dropped["too_long"] == 1
    assert summary.conversations.train + summary.conversations.validation == summary.report.kept_documents
    for split in SPLITS:
        stored = load_conversations(out / split)
        assert len(stored) == getattr(summary.conversations, split)
        assert stored.lengths.max() <= 160 and stored.label_counts.sum() == getattr(summary.label_tokens, split)
    questions = read_questions(out)
    assert questions and all(q.messages[-1]["role"] == "user" and q.reference for q in questions)
    everything = "".join(p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file())
    assert not [value for value in CANARY_VALUES if value in everything]


def test_a_split_left_empty_by_tokenization_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_instruction_folder(tmp_path / "instructions")
    tokenizer = train_bpe_tokenizer([prose(n) for n in range(40)], 500)
    ensure_chat_template(tokenizer, add_tokens=True)
    config = InstructConfig(instructions=str(folder), seq_length=16)
    with pytest.raises(CorpusError, match=r"left no train conversation .*'too_long': 14.*raise instruct.seq_length"):
        prepare_instructions(config, DATA, tokenizer, tmp_path / "prepared")


def test_a_held_out_conversation_too_long_to_store_is_not_asked_either(tmp_path: Path) -> None:
    def long_chat(n: int) -> dict:
        return chat(f"Summarise report {n}.", prose(n, 100))

    # A long conversation that the split holds out, so that it would become a question.
    held = next(n for n in range(100, 300) if is_validation(content_key(long_chat(n)["messages"]), 0.25, 1234))
    folder = tmp_path / "instructions"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n".join(json.dumps(r) for r in [*GOOD, long_chat(held)]) + "\n")
    tokenizer = train_bpe_tokenizer([prose(n) for n in range(40)], 500)
    ensure_chat_template(tokenizer, add_tokens=True)
    config = InstructConfig(instructions=str(folder), validation_fraction=0.25, seq_length=160, eval_questions=50)
    summary = prepare_instructions(config, DATA, tokenizer, tmp_path / "prepared")
    assert summary.report.dropped == {"too_long": 1, "question_too_long": 1}
    asked = {q.subject for q in read_questions(tmp_path / "prepared")}
    assert f"a.jsonl#{len(GOOD)}" not in asked
    assert asked == set(load_conversations(tmp_path / "prepared" / "validation").conversation_ids)
