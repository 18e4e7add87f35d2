"""Instruction tuning of a base model alone (train.max_steps: 0) through the flow, with LoRA, on instruction files
that hold a malformed record and a secret; a training rank is killed after a checkpoint and `@retry` continues
from it to the adapters of an uninterrupted run.

Continued pretraining followed by full instruction tuning on the CWE questions is tests/flow/test_ui_service.py's
end-to-end run; this one takes the other path through the flow's switches, and the LoRA adapters from the
checkpoint (adapters only) through conversion (merged, and published in PEFT's format). It is also the flow's
`@retry` test: a training stage's retried attempt continues from its own checkpoints, through the loop, checkpoint
manager and runner that `train` shares (a pretraining run through the same kill added nothing this one does not).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from steps.config import TuneConfig, write_config
from steps.convert.zero_reader import ZeroCheckpointReader
from steps.formats.train_folder import CHECKPOINTS, tag_for
from steps.runtime.launch import run_torchrun
from steps.runtime.storage import StoredDir, fetch
from tests.support.chat_base_model import save_chat_base_model
from tests.support.corpus_files import CANARIES, CANARY_VALUES, prose
from tests.support.flow_resume import run_killing_rank_1
from tests.support.flow_runs import card_data, client_run, config_file, flow_home

STEPS = 12
KILLED = "rank 1 (local rank 1) failed first with exit code -9 (SIGKILL)"


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _inputs(root: Path) -> tuple[Path, Path, Path]:
    """A small corpus, instruction files (good conversations, a malformed line, a secret in an answer), a base."""
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for number in range(60):
        (corpus / f"report-{number}.txt").write_text(prose(number, 120))
    instructions = root / "instructions"
    instructions.mkdir()
    lines = [json.dumps(_chat(f"What does report {n} say?", prose(1000 + n, 12))) for n in range(48)]
    lines.append('{"messages": [{"role": "user", "content": "cut off')
    lines.append(json.dumps(_chat("Where was the loader's key?", f"In its config: {CANARIES['aws_access_key']}")))
    (instructions / "chats.jsonl").write_text("\n".join(lines) + "\n")
    return corpus, instructions, save_chat_base_model(root / "base")


def _adapters(train_folder: Path) -> dict[str, torch.Tensor]:
    reader = ZeroCheckpointReader(train_folder / CHECKPOINTS / tag_for(STEPS))
    return dict(reader.gather(list(reader.shapes)))


@pytest.mark.slow
def test_lora_on_a_base_model_alone_retries_a_killed_rank_to_the_uninterrupted_adapters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metaflow.cards import get_cards

    home = flow_home(tmp_path / "home")
    monkeypatch.chdir(home)  # the card client looks for .metaflow from the working folder
    corpus, instructions, base = _inputs(tmp_path)
    config = config_file(
        home,
        "instruct-only",
        data={"corpus": str(corpus), "block_size": 64, "eval_prompts": 2, "prompt_tokens": 8},
        model={"base_model": str(base)},
        train={"max_steps": 0, "log_every": 2, "failure_timeout_s": 60},
        instruct={
            "instructions": str(instructions),
            "method": "lora",
            "lora_rank": 4,
            "max_steps": STEPS,
            "micro_batch_size": 4,
            "checkpoint_every": 4,
            "eval_every": 4,
            "warmup_steps": 2,
            "eval_questions": 4,
            "max_new_tokens": 8,
            "validation_fraction": 0.1,
        },
        evaluate={"engines": ["hf"], "general_text": None, "probes": 0, "perplexity_blocks": 4},
    )
    outcome = run_killing_rank_1(home, config, after_step=4, stage="instruct/train", decospecs=["retry:times=1"])
    assert outcome["status"] == "successful", outcome["output"][-3000:]
    run = client_run(home, outcome["pathspec"])
    assert "train" not in {step.id for step in run}  # train.max_steps: 0 skips continued pretraining
    instruct = run["instruct"].task
    assert instruct.current_attempt == 1
    assert KILLED in instruct.stdout + instruct.stderr or KILLED in outcome["output"]
    end = run["end"].task.data
    summary = end.instruct_summary
    assert summary["method"] == "lora" and 0 < summary["trainable_parameters"] < summary["parameters"] / 4
    assert summary["resumed_from_step"] >= 4
    assert f"/{run.id}/files/instruct/train/checkpoints/" in summary["resumed_from"]
    assert [m["step"] for m in end.instruct_metrics] == [2, 4, 6, 8, 10, 12]  # the whole curve, no step twice

    # The retried attempt ends with the adapters an uninterrupted training of the same run ends with.
    settings = TuneConfig.model_validate(run["start"].task.data.run_config)
    settings = settings.with_overrides(**{"instruct.checkpoint_every": STEPS})
    reference = tmp_path / "uninterrupted"
    args = ["--objective", "sft", "--config", str(write_config(settings, tmp_path / "settings.json"))]
    args += ["--instructions", str(fetch(StoredDir.from_dict(end.references["instructions"])))]
    args += ["--tokenizer", str(fetch(StoredDir.from_dict(end.references["tokenizer"])))]
    args += ["--base-model", str(fetch(StoredDir.from_dict(end.references["base_model"]))), "--out", str(reference)]
    run_torchrun("steps.train", args, nproc_per_node=2)
    final = _adapters(fetch(StoredDir.from_dict(end.references["instruct_checkpoint"]), verify=True))
    expected = _adapters(reference)
    assert final.keys() == expected.keys() and all(".lora_" in name for name in final)
    assert all(torch.equal(final[k], expected[k]) for k in final), "resumed adapters differ from uninterrupted"

    # Converted: merged into the base, and the adapter in PEFT's format gives the merged model's logits on the base.
    assert end.instruct_conversion["lora_merged"] is True and end.instruct_conversion["logits_match"] is True
    model = end.references["instructed_model"]["uri"]
    peft = (
        "import sys, torch; from peft import PeftModel; from transformers import AutoModelForCausalLM as M; "
        "merged = M.from_pretrained(sys.argv[1]); adapted = PeftModel.from_pretrained(M.from_pretrained(sys.argv[2]), "
        "sys.argv[1] + '/adapter'); ids = torch.arange(20).view(2, 10); "
        "torch.testing.assert_close(adapted(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-5, rtol=0)"
    )
    done = subprocess.run([sys.executable, "-c", peft, model, str(base)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    # The base model and the tuned one side by side; no continued-pretrained column without pretraining.
    assert list(end.eval_summary["by_model"]) == ["base", "instructed"]
    # The instruction files went through the corpus's guards: the malformed record skipped with its reason,
    # the secret redacted, and neither the secret nor the broken line anywhere the run shows or stores.
    prepared = run["prepare"].task.data.instruction_summary
    assert prepared["report"]["dropped"]["malformed_record"] == 1
    assert prepared["report"]["redactions"].get("aws_access_key") == 1
    assert prepared["report"]["redacted_documents"] == 1
    report = fetch(StoredDir.from_dict(end.references["instructions"])) / "report.jsonl"
    shown = [report.read_text(), card_data(get_cards(run["prepare"].task)[0].get())]
    shown += [card_data(get_cards(run[step].task)[0].get()) for step in ("instruct", "evaluate", "end")]
    shown += [outcome["output"], json.dumps(end.eval_table)]
    assert not [value for value in CANARY_VALUES for text in shown if value in text]
    assert "malformed JSON line" in report.read_text() and "cut off" not in report.read_text()
