"""What the Metaflow UI shows of our runs, recorded in a real metadata service and read back over HTTP.

`metaflow-local-service` 0.2.0 (tests/support/metadata_service.py) records the runs; the tests read them through
the UI backend's routes, the calls the Metaflow UI itself makes (`/api/flows/TuneFlow/runs/...`). Where that service
is a stub, the test says so and checks what the real UI would show through the path it takes instead:
- `/cards` always answers []: the real UI backend reads a task's cards with `metaflow.cards.get_cards`, checked here
  under service metadata, and Metaflow's `card server` serves the same cards, checked over HTTP and in Chromium;
- no route for one artifact: the client's `Run.successful` is False under it, so the run's status is read from the
  runs list (`/api/flows/TuneFlow/runs`), as the UI reads it;
- `/dag` is the steps in the order they started: not asserted, the UI's DAG view needs the real backend;
- a `@parallel` node task: the service ignores the id Metaflow asks for (`<control>_node_1`) and lists a new one
  that never runs (the real service stores the name); the node's own record is at its own id's routes.

One service for the module, two scenarios: the debug flow end to end, continued pretraining then instruction tuning
on the CWE questions (the same assertions as under local metadata, and the UI's), and a run on two nodes of two
ranks and three prepare workers taken down twice, a prepare shard then the training ranks, and `resume`d each time
(the flow's `resume` on several nodes and after a failed fan-out task; one node's is tests/flow/test_real_model.py's).
"""

from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from steps.config import TuneConfig
from steps.formats.dataset import DATASET_SUMMARY_FILE, PROMPTS_FILE, REPORT_FILE
from steps.prepare.shard_plan import plan_shards
from steps.runtime.storage import StoredDir, fetch
from tests.support.browser import chromium, open_in_chromium
from tests.support.card_server import card_server
from tests.support.flow_resume import final_weights, run_killing_ranks, uninterrupted_training
from tests.support.flow_runs import card_data, client_run, config_file, flow_home, runner
from tests.support.metadata_service import MetadataService, metadata_service
from tests.support.prepare_faults import killing_prepare_shard

BROWSER = chromium()
RUN_TAGS = {"model:from-scratch", "corpus:cwe", "config:debug"}
"""flows/run_tags.py's tags for configs/debug.yaml and the configs derived from it."""
INSTRUCT = {
    "instructions": "cwe",
    "max_steps": 12,
    "micro_batch_size": 4,
    "checkpoint_every": 6,
    "eval_every": 6,
    "eval_questions": 12,
    "max_new_tokens": 12,
}
"""Instruction tuning after the debug run's pretraining: the CWE questions and answers, full fine-tuning, a few
steps (its LoRA path, on a base model alone, is tests/flow/test_instruct_flow.py's)."""
ARTIFACTS = {
    "start": {"run_config"},
    "prepare": {"run_config", "dataset", "tokenizer", "prepare_summary", "instructions", "instruction_summary"},
    "train": {"dataset", "checkpoint", "train_summary", "train_metrics"},
    "convert": {"checkpoint", "train_summary", "model", "conversion"},
    "launch_train": {"run_config"},
    "instruct_or_evaluate": {"run_config", "after_pretraining"},
    "launch_instruct": {"run_config"},
    "instruct": {"instructions", "instruct_checkpoint", "instruct_summary", "instruct_metrics"},
    "instruct_convert": {"instruct_checkpoint", "model", "instructed_model", "instruct_conversion"},
    "evaluate": {"conversion", "evaluation", "eval_summary", "eval_table"},
    "end": {"run_config", "dataset", "train_summary", "conversion", "eval_summary", "eval_table", "references"},
}
"""Artifacts a person opens first on each step's task in the UI (each task also carries those it inherited)."""
PROGRESS = {
    "prepare": "prepare: train: ",
    "train": "step     30/30  loss ",
    "convert": '"logits_match":true',
    "instruct": f"step     {INSTRUCT['max_steps']}/{INSTRUCT['max_steps']}  loss ",
    "instruct_convert": '"lora_merged":false',
    "evaluate": "evaluate: perplexity (tuned model): ",
}
"""A line each stage prints to its step's stdout while it works, which the UI's log view shows."""
FIGURES = {
    "start": [],
    "prepare": ["Document length in characters", "Document length in tokens"],
    "train": ["Training loss", "Learning rate", "Throughput (tokens/s)", "Achieved TFLOP/s per device"],
    "convert": [],
    "instruct": ["Training loss", "Learning rate", "Throughput (tokens/s)", "Achieved TFLOP/s per device"]
    + ["Held-out conversations: loss", "Held-out questions: multiple-choice accuracy"],
    "instruct_convert": [],
    "evaluate": ["Generation throughput (tokens/s)"],
    "end": [],
}
"""The charts each step's card draws (flows/cards.py, flows/live_card.py)."""
RESUME_STEPS = 8
KILLED_AFTER = 4
CLONED = ["start", "prepare_fan_out", "prepare_read", "prepare_reads", "prepare_decide", "prepare_encode"]
CLONED += ["prepare_gather", "prepare", "launch_train"]
"""The resumed run's steps that ran in the first run: `resume` clones them."""


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return flow_home(tmp_path_factory.mktemp("ui"))


@pytest.fixture(scope="module")
def service(home: Path):
    with metadata_service(home) as running:
        yield running


@pytest.fixture(scope="module")
def debug_run(home: Path, service: MetadataService) -> str:
    """The debug flow with 30 training steps, then instruction tuning, recorded in the service: its run id."""
    with runner(home, config_file(home, "debug", instruct=INSTRUCT), env=service.env) as flow:
        result = flow.run(max_steps=30)
        assert result.status == "successful", result.stdout[-3000:] + result.stderr[-3000:]
        return result.run.id


def _tasks(service: MetadataService, run_id: str, step: str) -> list[dict]:
    return service.api(f"flows/TuneFlow/runs/{run_id}/steps/{step}/tasks")


def _task_route(run_id: str, step: str, task_id: str) -> str:
    return f"flows/TuneFlow/runs/{run_id}/steps/{step}/tasks/{task_id}"


def _metadata(service: MetadataService, run_id: str, step: str, task_id: str) -> dict[str, str]:
    """A task's metadata fields (where `resume` notes the task it cloned: origin-run-id, origin-task-id)."""
    return {m["field_name"]: m["value"] for m in service.api(f"{_task_route(run_id, step, task_id)}/metadata")}


def _listed_run(service: MetadataService, run_id: str) -> dict:
    return next(r for r in service.api("flows/TuneFlow/runs") if r["run_number"] == run_id)


def test_the_debug_pipeline_end_to_end_under_the_service(home: Path, service: MetadataService, debug_run: str) -> None:
    from metaflow.cards import get_cards

    with service.client():
        run = client_run(home, f"TuneFlow/{debug_run}")
        end = run["end"].task.data
        for name, ref in end.references.items():
            folder = fetch(StoredDir.from_dict(ref), verify=True)  # files exist and hashes match
            assert folder.is_dir(), name
        assert (Path(end.references["model"]["uri"]) / "model.safetensors").is_file()
        # The run's files are beside Metaflow's own artifacts, in the datastore the service recorded.
        assert end.references["model"]["uri"].startswith(f"{home}/.metaflow/TuneFlow/{debug_run}/files/")

        assert set(end.references) >= {"model", "instructions", "instruct_checkpoint", "instructed_model"}
        summary = end.eval_summary
        prompts, questions = summary["prompts"], summary["questions"]
        assert prompts == 5 and questions == INSTRUCT["eval_questions"]
        # Every engine generated every prompt and answered every held-out question once, and they agree on all of it.
        assert sorted((r["index"], r["engine"]) for r in end.eval_table) == sorted(
            (i, e) for i in range(prompts + questions) for e in ("hf", "deepspeed", "zero")
        )
        assert [r["source"] for r in end.eval_table].count("question") == 3 * questions
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
        # The artifacts a person opens first are small enough for the UI to show their value (it shows one whose
        # stored form, pickled and gzipped as Metaflow stores it, is under 4 KB), and one level of names deep at most.
        shown = {"prepare_summary": run["prepare"].task.data.prepare_summary, "references": end.references}
        shown |= {"train_summary": end.train_summary, "conversion": end.conversion, "eval_summary": summary}
        shown |= {"instruct_summary": sft, "instruct_conversion": end.instruct_conversion}
        for name, value in shown.items():
            assert len(gzip.compress(pickle.dumps(value))) < 4096, name
        assert not any(isinstance(v, dict | list) for v in {**end.train_summary, **end.conversion}.values())

        # What the real UI backend does for a task's cards (its GetCards cache action): get_cards on the client.
        texts = {step: card_data(get_cards(run[step].task)[0].get()) for step in FIGURES}
    assert "Resolved configuration" in texts["start"] and "Sample blocks" in texts["prepare"]
    assert "Training loss" in texts["train"] and "max_logit_difference" in texts["convert"]
    assert "Generations" in texts["evaluate"] and "Run summary" in texts["end"]
    assert "Instruction data" in texts["prepare"]
    assert "Held-out questions: multiple-choice accuracy" in texts["instruct"]
    assert "after instruction tuning" in texts["evaluate"] and "Sample conversations" in texts["evaluate"]
    assert "instruction tuning: 12 steps" in texts["end"] and "max_logit_difference" in texts["instruct_convert"]

    # The converted model chats through transformers' pipeline with the chat template it was tuned with, and
    # stops at the end of its turn. In a fresh process: transformers' lazy imports clash with Metaflow's here.
    chat = (
        "import sys; from transformers import pipeline; "
        "out = pipeline('text-generation', model=sys.argv[1])([{'role': 'user', 'content': 'What is CWE-79?'}]); "
        "turns = out[0]['generated_text']; assert turns[-1]['role'] == 'assistant', turns; print(turns[-1])"
    )
    done = subprocess.run([sys.executable, "-c", chat, end.references["instructed_model"]["uri"]], capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_ui_lists_the_run_its_steps_tasks_artifacts_and_logs(service: MetadataService, debug_run: str) -> None:
    listed = _listed_run(service, debug_run)
    assert listed["status"] == "completed" and listed["finished_at"] > listed["ts_epoch"]
    assert RUN_TAGS <= set(listed["tags"])  # user tags: the UI's run list filters by them
    steps = {s["step_name"]: s for s in service.api(f"flows/TuneFlow/runs/{debug_run}/steps")}
    # `_parameters` is Metaflow's own; the UI hides it (and this service marks it failed: no attempt_ok on it).
    assert set(steps) - {"_parameters"} == set(ARTIFACTS)  # one prepare worker: no fan-out steps
    for step, wanted in ARTIFACTS.items():
        assert steps[step]["status"] == "completed", step
        tasks = _tasks(service, debug_run, step)
        assert [(t["status"], t["attempt_id"]) for t in tasks] == [("completed", 0)], (step, tasks)
        route = _task_route(debug_run, step, tasks[0]["task_id"])
        artifacts = {a["name"]: a for a in service.api(f"{route}/artifacts")}
        assert wanted <= set(artifacts), (step, sorted(artifacts))
        # What the UI needs to fetch a value: where it is stored and its content hash.
        assert all(artifacts[name]["location"] and artifacts[name]["sha"] for name in wanted)
        lines = [row["line"] for row in service.api(f"{route}/logs/out")]
        if step in PROGRESS:
            assert any(PROGRESS[step] in line for line in lines), (step, lines[-20:])
        assert service.api(f"{route}/cards") == []  # a stub: see the module docstring and the card tests


def test_every_steps_card_through_the_card_server_over_http(
    home: Path, service: MetadataService, debug_run: str
) -> None:
    with card_server(home, debug_run, service.env) as server:
        cards = server.cards()
        by_step = {card["task"].split("/")[2]: card for card in cards}
        assert set(by_step) == set(FIGURES), sorted(by_step)
        pages = {step: server.get(f"card/{card['card']}") for step, card in by_step.items()}
    assert "Resolved configuration" in card_data(pages["start"]) and "Run summary" in card_data(pages["end"])
    if BROWSER is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium): the cards were served, not drawn")
    for step, page in pages.items():
        rendered = open_in_chromium(BROWSER, page)
        assert rendered.figures == FIGURES[step], step
        assert rendered.text, step


class Resumed(NamedTuple):
    """A run taken down twice and resumed each time: the three runs' ids, and what the first printed."""

    first: str
    """Its prepare shard 2 was killed."""
    first_output: str
    failed: str
    """The resume of `first`: it read shard 2 again, and its training ranks were killed."""
    run: str
    """The resume of `failed`, which succeeded."""


@pytest.fixture(scope="module")
def resumed(home: Path, service: MetadataService, tmp_path_factory) -> Resumed:
    """A run on 2 nodes of 2 ranks and 3 prepare workers. Its prepare shard 2's process is SIGKILLed (as by the OOM
    killer) once it has planned its files; the `resume` of that run reads shard 2 again and trains until the
    checkpoint of step 4 is complete, when every rank is SIGKILLed, node 1's first (as when the machines are taken
    back); the `resume` of that run succeeds."""
    config = config_file(
        home,
        "resume",
        train={"num_nodes": 2, "nproc_per_node": 2, "max_steps": RESUME_STEPS, "checkpoint_every": KILLED_AFTER}
        | {"log_every": KILLED_AFTER},
        evaluate={"engines": ["hf"], "perplexity_blocks": 2, "probes": 0},
        compute={"prepare": {"workers": 3}},
    )
    # One task at a time, so that shards 0 and 1 have finished: when a task fails, Metaflow stops the tasks still
    # running, and `resume` runs those again too.
    hooks = killing_prepare_shard(tmp_path_factory.mktemp("hooks"), shard=2)
    with runner(home, config, env={**service.env, **hooks}) as flow:
        first = flow.run(max_workers=1)
        first_output = first.stdout + first.stderr
        assert first.status == "failed", first_output[-3000:]
        first_id = first.run.id
    # Node 0's ranks too: left alone they would wait for node 1's in a collective for train.failure_timeout_s.
    failed = run_killing_ranks(
        home, None, after_step=KILLED_AFTER, ranks=(2, 3, 0, 1), resuming=first_id, env=service.env
    )
    assert failed["status"] == "failed", failed["output"][-3000:]
    failed_id = failed["pathspec"].split("/")[1]
    with runner(home, None, env=service.env) as flow:
        result = flow.resume(origin_run_id=failed_id)
        assert result.status == "successful", result.stdout[-3000:] + result.stderr[-3000:]
        return Resumed(first_id, first_output, failed_id, result.run.id)


def test_a_killed_prepare_shard_is_named_and_resume_reads_only_it_again(
    home: Path, service: MetadataService, resumed: Resumed, prepared: Path, debug_config: TuneConfig
) -> None:
    files = ", ".join(plan_shards(debug_config.data, 3).files_of(2))
    assert f"LaunchError: prepare shard 2 failed; its files: {files}" in resumed.first_output
    assert "steps.prepare exited with code -9 (SIGKILL)" in resumed.first_output
    assert _listed_run(service, resumed.first)["status"] == "failed"
    with service.client():
        first = client_run(home, f"TuneFlow/{resumed.first}")
        done = [t["task_id"] for t in _tasks(service, resumed.first, "prepare_read") if t["status"] == "completed"]
        finished = {first["prepare_read"][t].data.shard: t for t in done}
        assert sorted(finished) == [0, 1]
        # `resume` ran only the killed shard again; the others are the first attempt's tasks, cloned, and their
        # files stay in the first run's storage.
        again = client_run(home, f"TuneFlow/{resumed.failed}")
        origins = {}
        for task in _tasks(service, resumed.failed, "prepare_read"):
            record = _metadata(service, resumed.failed, "prepare_read", task["task_id"])
            shard = again["prepare_read"][task["task_id"]].data.shard
            assert record["origin-run-id"] == resumed.first  # on every task of a resumed run
            origins[shard] = record.get("origin-task-id")  # on the tasks it cloned
        assert origins == {**finished, 2: None}
        reads = [read["uri"] for read in again["prepare_reads"].task.data.reads]
        dataset = fetch(StoredDir.from_dict(again["prepare"].task.data.dataset), verify=True)
    where = [
        f"/{resumed.first}/files/prepare/read/0",
        f"/{resumed.first}/files/prepare/read/1",
        f"/{resumed.failed}/files/prepare/read/2",
    ]
    assert [uri[-len(end) :] for uri, end in zip(reads, where, strict=True)] == where, reads
    # Three workers made the single-worker dataset (`prepared`), byte for byte.
    for name in ("train/data-00000-of-00001.arrow", "validation/data-00000-of-00001.arrow", REPORT_FILE, PROMPTS_FILE):
        assert (dataset / name).read_bytes() == (prepared / "dataset" / name).read_bytes(), name
    summaries = [json.loads((folder / DATASET_SUMMARY_FILE).read_text()) for folder in (dataset, prepared / "dataset")]
    assert [{k: v for k, v in s.items() if k != "timings_s"} for s in summaries] == [
        {k: v for k, v in summaries[1].items() if k != "timings_s"}
    ] * 2


def test_the_ui_shows_the_killed_run_failed_and_the_resumed_runs_clones_nodes_and_new_training(
    service: MetadataService, resumed: Resumed
) -> None:
    failed_id, run_id = resumed.failed, resumed.run
    failed = _listed_run(service, failed_id)
    # A resumed run is tagged by its end step (it cloned start): one that fails before end has no tags.
    assert failed["status"] == "failed" and not set(failed["tags"]) & RUN_TAGS
    assert RUN_TAGS <= set(_listed_run(service, resumed.first)["tags"])  # tagged by start, though it failed
    assert "failed" in [t["status"] for t in _tasks(service, failed_id, "train")]
    assert RUN_TAGS <= set(_listed_run(service, run_id)["tags"])  # tagged again by end: start was cloned

    def metadata(step: str, task_id: str) -> dict[str, str]:
        return _metadata(service, run_id, step, task_id)

    for step in CLONED:
        tasks = _tasks(service, run_id, step)
        # The fan-out: one read and one encode task per prepare worker, each its own row in the UI.
        assert len(tasks) == (3 if step in ("prepare_read", "prepare_encode") else 1), (step, tasks)
        for task in tasks:
            assert task["status"] == "completed", (step, task)
            record = metadata(step, task["task_id"])
            assert record["origin-run-id"] == failed_id and record.get("origin-task-id"), (step, record)

    # The new training: one task per node that ran now, not cloned. The service lists node 0's (the control task)
    # and, for node 1, the id it made up when Metaflow registered `<control>_node_1`: no attempt ever ran under it
    # (it is why the service shows this run "running"); node 1's own record is at its real id's routes.
    train = {t["task_id"]: t for t in _tasks(service, run_id, "train")}
    control = next(i for i, t in train.items() if t["status"] == "completed")
    assert "origin-task-id" not in metadata("train", control) and train[control]["attempt_id"] == 0
    (phantom,) = set(train) - {control}
    assert train[phantom]["status"] == "running" and metadata("train", phantom).get("attempt") is None
    assert _listed_run(service, run_id)["status"] == "running"
    node_1 = _task_route(run_id, "train", f"{control}_node_1")
    assert {"dataset", "train_node"} <= {a["name"] for a in service.api(f"{node_1}/artifacts")}
    assert {m["field_name"]: m["value"] for m in service.api(f"{node_1}/metadata")}["attempt_ok"] == "True"
    control_route = _task_route(run_id, "train", control)
    assert {"train_summary", "checkpoint"} <= {a["name"] for a in service.api(f"{control_route}/artifacts")}
    lines = [row["line"] for row in service.api(f"{control_route}/logs/out")]
    assert any(line.startswith("resuming from ") and f"/{failed_id}/files/train/" in line for line in lines), lines
    # Node 1's output reaches the control task's log, after node 0's own.
    node_1_at = next(i for i, line in enumerate(lines) if line.startswith("----- node 1 (exit code 0)"))
    assert any(line.startswith(f"step      {RESUME_STEPS}/{RESUME_STEPS}") for line in lines[:node_1_at]), lines
    for step in ("convert", "evaluate", "end"):
        (task,) = _tasks(service, run_id, step)
        assert task["status"] == "completed" and "origin-task-id" not in metadata(step, task["task_id"])


def test_the_resumed_run_ends_with_the_model_of_an_uninterrupted_training(
    home: Path, service: MetadataService, resumed: Resumed, tmp_path: Path
) -> None:
    from metaflow.cards import get_cards

    failed_id, run_id = resumed.failed, resumed.run
    with service.client():
        run = client_run(home, f"TuneFlow/{run_id}")
        end = run["end"].task.data
        assert end.train_summary["resumed_from_step"] == KILLED_AFTER and end.train_summary["world_size"] == 4
        assert end.conversion["logits_match"] is True
        assert f"/{failed_id}/files/train/checkpoints/" in end.train_summary["resumed_from"]
        end_card = card_data(get_cards(run["end"].task)[0].get())
        reference = uninterrupted_training(run, tmp_path)
    final = final_weights(fetch(StoredDir.from_dict(end.checkpoint), verify=True) / "checkpoints", RESUME_STEPS)
    expected = final_weights(reference / "checkpoints", RESUME_STEPS)
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in expected), "resumed weights differ"
    loss = json.loads((reference / "train_summary.json").read_text())["final_loss"]
    assert f"continued pretraining: {RESUME_STEPS} steps on 4 ranks (ZeRO-2), final loss {loss:.3f}" in end_card
