"""The whole flow through metaflow.Runner, read back with the Metaflow client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from steps.config import TuneConfig
from steps.formats.dataset import DATASET_SUMMARY_FILE, PROMPTS_FILE, REPORT_FILE
from steps.prepare.shard_plan import plan_shards
from steps.project_files import FLOW_FILE
from steps.runtime.storage import StoredDir, fetch
from tests.support.flow_runs import card_data, client_run, config_file, run_flow, runner
from tests.support.flow_runs import flow_home as make_home
from tests.support.prepare_faults import killing_prepare_shard


@pytest.fixture(scope="module")
def flow_home(tmp_path_factory) -> Path:
    return make_home(tmp_path_factory.mktemp("flow"))


def test_invalid_config_fails_before_any_step(flow_home: Path) -> None:
    bad = config_file(flow_home, "bad", deepspeed={"zero_stage": 5})
    env = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(flow_home)}
    proc = subprocess.run(
        [sys.executable, str(FLOW_FILE), "--config", "config", str(bad), "run"],
        cwd=flow_home,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "deepspeed.zero_stage" in proc.stdout + proc.stderr
    assert "Task is starting" not in proc.stdout + proc.stderr
    assert not list((flow_home / ".metaflow").glob("TuneFlow/*/start"))


INSTRUCT = {
    "instructions": "cwe",
    "max_steps": 12,
    "micro_batch_size": 4,
    "checkpoint_every": 6,
    "eval_every": 6,
    "eval_questions": 12,
    "max_new_tokens": 12,
}
"""Instruction tuning on the debug model: the CWE questions and answers, full fine-tuning, a few steps."""


def test_pipeline_end_to_end(flow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Continued pretraining, then instruction tuning on the CWE questions: every stage, the three models side by
    side in evaluate, the engines agreeing on answers too, the cards, and the converted model chatting."""
    from metaflow.cards import get_cards

    monkeypatch.chdir(flow_home)  # the card client looks for .metaflow from the working folder
    pathspec = run_flow(flow_home, config_file(flow_home, "debug", instruct=INSTRUCT), max_steps=30)
    run = client_run(flow_home, pathspec)
    assert run.successful
    end = run["end"].task.data

    assert set(end.references) >= {"model", "instructions", "instruct_checkpoint", "instructed_model"}
    for name, ref in end.references.items():
        folder = fetch(StoredDir.from_dict(ref), verify=True)  # files exist and hashes match
        assert folder.is_dir(), name
    assert (Path(end.references["model"]["uri"]) / "model.safetensors").is_file()

    summary = end.eval_summary
    prompts, questions = summary["prompts"], summary["questions"]
    assert prompts == 5 and questions == INSTRUCT["eval_questions"]
    # Every engine generated every prompt and answered every held-out question once, and they agree on all of it.
    assert Counter((r["index"], r["engine"]) for r in end.eval_table) == Counter(
        {(i, e): 1 for i in range(prompts + questions) for e in ("hf", "deepspeed", "zero")}
    )
    assert Counter(r["source"] for r in end.eval_table)["question"] == 3 * questions
    assert all(r["prompt"] for r in end.eval_table)
    assert summary["engines_agree"] is True
    # The three models of the run side by side; the held-out perplexity fell with pretraining.
    models = summary["by_model"]
    assert list(models) == ["base", "pretrained", "instructed"]
    assert all(m["answers"]["all"]["questions"] == questions for m in models.values())
    assert models["pretrained"]["perplexity"] <= 0.5 * models["base"]["perplexity"]
    assert summary["perplexity"]["tuned"] == models["instructed"]["perplexity"]
    assert summary["perplexity"]["untuned"] == models["base"]["perplexity"]
    # The domain probes ran on both models, and tuning raised the likelihood of the true answers.
    probes = summary["probes"]
    assert probes["tuned"]["all"]["probes"] == 2 * 16  # debug.yaml: evaluate.probes
    assert probes["tuned"]["all"]["answer_logprob_per_token"] > probes["untuned"]["all"]["answer_logprob_per_token"]
    assert end.train_summary["steps"] == 30  # the --max-steps override reached training
    assert end.conversion["logits_match"] is True and end.instruct_conversion["logits_match"] is True
    sft = end.instruct_summary
    assert sft["objective"] == "sft" and sft["steps"] == INSTRUCT["max_steps"]
    # Instruction tuning started from the continued-pretrained model, and scored held-out data as it went.
    assert sft["init_sha256"] != end.train_summary["init_sha256"]
    scored = [m for m in end.instruct_metrics if m["held_out_choice_accuracy"] is not None]
    assert [m["step"] for m in scored] == [6, 12] and all(m["held_out_loss"] > 0 for m in scored)

    texts = {
        step: card_data(get_cards(run[step].task)[0].get())
        for step in ("prepare", "train", "convert", "instruct", "instruct_convert", "evaluate", "end")
    }
    assert "Sample blocks" in texts["prepare"] and "Training loss" in texts["train"]
    assert "Instruction data" in texts["prepare"]
    assert "Held-out questions: multiple-choice accuracy" in texts["instruct"]
    assert "max_logit_difference" in texts["convert"] and "Generations" in texts["evaluate"]
    assert "after instruction tuning" in texts["evaluate"] and "Sample conversations" in texts["evaluate"]
    assert "instruction tuning: 12 steps" in texts["end"]

    # The converted model chats through transformers' pipeline with the chat template it was tuned with, and
    # stops at the end of its turn. In a fresh process: transformers' lazy imports clash with Metaflow's here.
    chat = (
        "import sys; from transformers import pipeline; "
        "out = pipeline('text-generation', model=sys.argv[1])([{'role': 'user', 'content': 'What is CWE-79?'}]); "
        "turns = out[0]['generated_text']; assert turns[-1]['role'] == 'assistant', turns; print(turns[-1])"
    )
    done = subprocess.run([sys.executable, "-c", chat, end.references["instructed_model"]["uri"]], capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_two_simulated_nodes_of_two_ranks_on_three_prepare_workers_resumed_after_a_killed_shard(
    flow_home: Path, prepared: Path, debug_config: TuneConfig, tmp_path: Path
) -> None:
    config = config_file(
        flow_home,
        "two-nodes",
        train={"num_nodes": 2, "nproc_per_node": 2, "max_steps": 8, "checkpoint_every": 4, "log_every": 4},
        evaluate={"engines": ["hf"]},
        compute={"prepare": {"workers": 3}},
    )
    # The first attempt: prepare shard 2's process is SIGKILLed (as by the OOM killer) once it has planned its
    # files. One task at a time, so that shards 0 and 1 have finished: when a task fails, Metaflow stops the
    # tasks still running, and `resume` runs those again too.
    with runner(flow_home, config, env=killing_prepare_shard(tmp_path / "hooks", shard=2)) as flow:
        failed = flow.run(max_workers=1)
        output = failed.stdout + failed.stderr
        assert failed.status == "failed", output[-3000:]
    files = ", ".join(plan_shards(debug_config.data, 3).files_of(2))
    assert f"LaunchError: prepare shard 2 failed; its files: {files}" in output, output[-3000:]
    assert "steps.prepare exited with code -9 (SIGKILL)" in output, output[-3000:]
    first = client_run(flow_home, failed.run.pathspec)
    finished = {t.data.shard: t.pathspec for t in first["prepare_read"].tasks() if t.successful}
    assert sorted(finished) == [0, 1]

    with runner(flow_home, None) as flow:
        resumed = flow.resume(origin_run_id=first.id)
        assert resumed.status == "successful", resumed.stdout + resumed.stderr
    run = client_run(flow_home, resumed.run.pathspec)
    assert run.successful
    # `resume` ran only the killed shard again; the others are the first attempt's tasks, cloned, and their
    # files stay in the first run's storage.
    assert {t.data.shard: t.origin_pathspec for t in run["prepare_read"].tasks()} == {**finished, 2: None}
    reads = [read["uri"] for read in run["prepare_reads"].task.data.reads]
    where = [
        f"/{first.id}/files/prepare/read/0",
        f"/{first.id}/files/prepare/read/1",
        f"/{run.id}/files/prepare/read/2",
    ]
    assert [uri[-len(end) :] for uri, end in zip(reads, where, strict=True)] == where, reads
    # prepare fanned out over 3 local foreach tasks twice, and made the single-worker dataset (`prepared`).
    assert len(list(run["prepare_read"].tasks())) == len(list(run["prepare_encode"].tasks())) == 3
    dataset = fetch(StoredDir.from_dict(run["prepare"].task.data.dataset), verify=True)
    for name in ("train/data-00000-of-00001.arrow", "validation/data-00000-of-00001.arrow", REPORT_FILE, PROMPTS_FILE):
        assert (dataset / name).read_bytes() == (prepared / "dataset" / name).read_bytes(), name
    summaries = [json.loads((folder / DATASET_SUMMARY_FILE).read_text()) for folder in (dataset, prepared / "dataset")]
    assert [{k: v for k, v in s.items() if k != "timings_s"} for s in summaries] == [
        {k: v for k, v in summaries[1].items() if k != "timings_s"}
    ] * 2
    tasks = list(run["train"].tasks())
    assert len(tasks) == 2
    train_summary = run["convert"].task.data.train_summary
    assert train_summary["world_size"] == 4 and train_summary["steps"] == 8
    assert run["end"].task.data.conversion["logits_match"] is True
    # Node 1's output reaches the control task's log, after node 0's own.
    logs = [t.stdout for t in tasks]
    assert sum("----- node 1 (exit code 0) -----" in log for log in logs) == 1
    assert any("step      8/8" in log and "----- node 1" in log for log in logs)
