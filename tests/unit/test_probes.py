"""Domain probes: built from the CWE catalogue, scored so that knowing the answer shows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steps.evaluate.probe_scoring import choice_scores, score_probes
from steps.evaluate.probes import Probe, cwe_probes, summarize, user_probes
from steps.evaluate.prompts import EvalDataError, load_prompts, read_jsonl
from steps.formats.cwe_catalogue import bundled_catalogue_path
from steps.prepare.tokenizer_training import train_bpe_tokenizer


def test_cwe_probes_split_between_trained_and_held_out_weaknesses() -> None:
    held_out = {"CWE-79", "CWE-89", "CWE-787", "CWE-20"}
    probes = cwe_probes(bundled_catalogue_path(), held_out, count=10, choices=4, seed=1)
    by_kind = {kind: [p for p in probes if p.kind == kind] for kind in ("id_to_name", "description_to_name")}
    assert all(len(group) == 10 for group in by_kind.values())
    validation = [p for p in by_kind["id_to_name"] if p.split == "validation"]
    assert {p.weakness for p in validation} == held_out  # as many held-out ones as exist, up to half
    xss = next(p for p in probes if p.weakness == "CWE-79" and p.kind == "id_to_name")
    assert xss.prompt == "CWE-79:" and xss.answer.startswith(" Improper Neutralization of Input")
    for probe in probes:
        assert probe.answer in probe.choices and len(set(probe.choices)) == 4
    # each ID → name choice carries the ID of the weakness it names, the probe's own first
    assert xss.choice_prompts[0] == "CWE-79:" and len(set(xss.choice_prompts)) == 4
    described = next(p for p in probes if p.weakness == "CWE-79" and p.kind == "description_to_name")
    assert "Description: " in described.suffix and not described.generate


def test_id_to_name_choices_are_judged_by_what_the_id_adds_not_by_fluency() -> None:
    # A formulaic name is likely after any ID (-0.5 per token); the right name is fairly likely after its
    # own ID only. Mean likelihood picks the formulaic one; the ID's contribution picks the right one.
    formulaic, right = " Improper Neutralization of Special Elements", " Cross-site Scripting"
    probe = Probe("id_to_name", "train", "CWE-79:", right, [right, formulaic], choice_prompts=["CWE-79:", "CWE-74:"])
    part = {
        ("CWE-79:", 0): [-1.0, -1.0],
        ("CWE-74:", 0): [-6.0, -6.0],
        ("CWE-79:", 1): [-0.5] * 5,
        ("CWE-74:", 1): [-0.5] * 5,
    }
    assert choice_scores(probe, part) == [5.0, 0.0]
    uncalibrated = Probe("user", "user", "CWE-79:", right, [right, formulaic])
    assert choice_scores(uncalibrated, part) == [-1.0, -0.5]


def _overfit(tokenizer, text: str | list[str], steps: int = 80) -> torch.nn.Module:
    """A one-layer model trained on each text as its own sequence until it recites them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    texts = [text] if isinstance(text, str) else text
    sequences = [torch.tensor([tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]]) for t in texts]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        for ids in sequences:
            model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_a_model_that_learned_the_fact_scores_it_and_an_untrained_one_does_not() -> None:
    fact = "CWE-79: Cross-site Scripting\nDescription: script injected into a web page"
    tokenizer = train_bpe_tokenizer([fact, "CWE-1: Buffer Overflow in the stack", "Path Traversal of folders"], 300)
    tokenizer.padding_side = "left"
    probe_args = ("CWE-79:", " Cross-site Scripting", [" Cross-site Scripting", " Buffer Overflow", " Path Traversal"])
    probes = [
        Probe("id_to_name", "train", *probe_args),
        Probe("description_to_name", "train", *probe_args, suffix="\nDescription: script injected", generate=False),
    ]
    learned = score_probes(_overfit(tokenizer, fact), tokenizer, probes, torch.device("cpu"))
    untrained = score_probes(_overfit(tokenizer, fact, steps=0), tokenizer, probes, torch.device("cpu"))
    assert learned[0]["exact_match"] is True and learned[0]["completion"].strip() == "Cross-site Scripting"
    assert all(row["choice_correct"] for row in learned)
    assert untrained[0]["exact_match"] is False
    assert learned[0]["answer_logprob_per_token"] > untrained[0]["answer_logprob_per_token"] + 1
    summary = summarize(learned)
    assert summary["id_to_name/train"]["exact_match"] == 1.0
    assert summary["description_to_name/train"]["exact_match"] is None  # not a completion task
    assert summary["all"]["choice_accuracy"] == 1.0


def test_prompts_of_different_lengths_complete_in_one_batch() -> None:
    # Right padding would make the shorter prompt continue after its pads; completions must not
    # depend on which other probes share the batch.
    facts = ["CWE-79: Cross-site Scripting", "CWE-1004: Sensitive Cookie Without HttpOnly"]
    tokenizer = train_bpe_tokenizer([*facts, "Path Traversal of folders"], 300)
    tokenizer.padding_side = "left"
    prompts = [fact.split(" ", 1)[0] for fact in facts]
    assert len({len(tokenizer(p)["input_ids"]) for p in prompts}) == 2
    model = _overfit(tokenizer, facts)
    probes = [
        Probe("id_to_name", "train", p, " " + f.split(" ", 1)[1], [" " + f.split(" ", 1)[1]])
        for p, f in zip(prompts, facts, strict=True)
    ]
    assert [row["exact_match"] for row in score_probes(model, tokenizer, probes, torch.device("cpu"))] == [True, True]
    tokenizer.padding_side = "right"
    with pytest.raises(ValueError, match="left-padding tokenizer"):
        score_probes(model, tokenizer, probes, torch.device("cpu"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a"}\n{"prompt": 3}\n', r"line 2: field 'prompt' must be a non-empty string"),
        ('{"prompt": "a"}\nnot json\n', r"line 2: not valid JSON"),
        ('["a"]\n', r"line 1: expected a JSON object"),
        ('{"prompt": "a", "refrence": "b"}\n', r"line 1: unknown fields \['refrence'\]"),
        ("\n", r"holds no records"),
    ],
)
def test_a_bad_prompt_file_names_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    with pytest.raises(EvalDataError, match=rf"{path}.*{message}"):
        read_jsonl(path, ("prompt",), {"reference": str})


def test_user_prompts_follow_the_held_out_ones(tmp_path: Path) -> None:
    tokenizer = train_bpe_tokenizer(["CWE-89: SQL Injection"] * 3, 280)
    (tmp_path / "prompts.jsonl").write_text('{"doc_id": "d", "prompt": "x", "prompt_ids": [5], "reference": "y"}\n')
    (tmp_path / "mine.jsonl").write_text('{"prompt": "CWE-89:"}\n')
    prompts = load_prompts(tmp_path, str(tmp_path / "mine.jsonl"), tokenizer)
    assert [p["source"] for p in prompts] == ["heldout", "user"]
    assert prompts[1]["prompt_ids"] == tokenizer("CWE-89:")["input_ids"] and prompts[1]["reference"] == ""


def test_a_user_probe_must_list_its_answer_among_the_choices(tmp_path: Path) -> None:
    path = tmp_path / "probes.jsonl"
    path.write_text('{"prompt": "T1059 is", "answer": " Command", "choices": [" Phishing", " Exfiltration"]}\n')
    with pytest.raises(EvalDataError, match="record 1: 'choices' must be non-empty strings including the answer"):
        user_probes(path)
