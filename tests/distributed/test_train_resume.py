"""Checkpoints and resume under torchrun with CPU ranks: exact, fail-fast, every rank's shards stored."""

from __future__ import annotations

import json
import signal
import tempfile
import threading
import time
from pathlib import Path

import boto3
import pytest
import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

from steps.config import TuneConfig, write_config
from steps.formats.train_folder import list_complete, tag_for
from steps.runtime.launch import LaunchError, Rendezvous, free_port, run_torchrun
from tests.support.faults import kill_rank_after_checkpoint, training_rank, wait_for, wait_for_pending_signal

pytestmark = pytest.mark.distributed
STEPS = 24


def _train(config: TuneConfig, prepared: Path, out: Path, *extra: str, nproc: int = 2, rdzv=None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    config_file = write_config(config, out.parent / f"{out.name}.json")
    args = ["--config", str(config_file), "--dataset", str(prepared / "dataset")]
    args += ["--tokenizer", str(prepared / "tokenizer"), "--out", str(out), *extra]
    run_torchrun("steps.train", args, nproc_per_node=nproc, rdzv=rdzv, timeout_s=config.train.failure_timeout_s)
    return json.loads((out / "train_summary.json").read_text())


def _weights(checkpoints: Path | str, step: int) -> dict[str, torch.Tensor]:
    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoints), tag=tag_for(step))


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def resume_config(debug_config: TuneConfig) -> TuneConfig:
    return debug_config.with_overrides(
        **{
            "deepspeed.zero_stage": 3,
            "deepspeed.config_file": "configs/deepspeed/zero3.json",
            "train.max_steps": STEPS,
            "train.checkpoint_every": 4,
            "train.log_every": 4,
            "train.failure_timeout_s": 60,
        }
    )


@pytest.fixture(scope="module")
def uninterrupted(resume_config: TuneConfig, prepared: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "train"
    _train(resume_config, prepared, out)
    return out


def test_killed_rank_fails_fast_and_resume_ends_with_the_same_weights(
    resume_config: TuneConfig, prepared: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "train"
    outcome: dict = {}

    def train() -> None:
        try:
            _train(resume_config, prepared, out)
        except LaunchError as exc:
            outcome["error"], outcome["at"] = exc, time.monotonic()

    runner = threading.Thread(target=train)
    runner.start()
    pid = kill_rank_after_checkpoint(str(out / "checkpoints" / tag_for(4) / "checkpoint.json"), rank=1)
    killed_at = time.monotonic()
    runner.join(timeout=300)
    assert not runner.is_alive(), "the launch hung after a rank was killed"
    message = str(outcome["error"])
    assert "rank 1 (local rank 1) failed first with exit code -9 (SIGKILL)" in message, message
    assert f"PID {pid}" in message
    assert outcome["at"] - killed_at < resume_config.train.failure_timeout_s

    # A save cut off before its checkpoint record: newer than anything complete, and never loaded.
    torn = out / "checkpoints" / tag_for(STEPS - 2)
    torn.mkdir()
    (torn / "mp_rank_00_model_states.pt").write_bytes(b"half a file")

    summary = _train(resume_config, prepared, out)
    assert 4 <= summary["resumed_from_step"] < STEPS - 2
    final, reference = _weights(out / "checkpoints", STEPS), _weights(uninterrupted / "checkpoints", STEPS)
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final), "resumed weights differ from uninterrupted"
    assert _losses(out) == _losses(uninterrupted)  # same data, same order, same metrics log


def test_resume_on_another_world_size_reshards_through_a_universal_checkpoint(
    resume_config: TuneConfig, prepared: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    longer = resume_config.with_overrides(**{"train.max_steps": STEPS + 4})
    out = tmp_path / "train"
    stagings_before = set(Path(tempfile.gettempdir()).glob("tune-checkpoint-staging-*"))
    summary = _train(longer, prepared, out, "--resume-from", str(uninterrupted / "checkpoints"), nproc=1)
    assert summary["resumed_from_step"] == STEPS and summary["world_size"] == 1
    # The weights came along: the loss continues from the 2-rank run's, far below a fresh model's.
    assert abs(_losses(out)[-1] - _losses(uninterrupted)[-1]) < 0.3
    record = json.loads((out / "checkpoints" / tag_for(STEPS + 4) / "checkpoint.json").read_text())
    assert record["world_size"] == 1 and record["blocks_seen"] == STEPS * 16 + 4 * 8
    # The universal checkpoint was made in the default staging folder (a private one), which went when training ended.
    assert set(Path(tempfile.gettempdir()).glob("tune-checkpoint-staging-*")) == stagings_before


def test_two_nodes_without_shared_files_store_every_rank_on_s3(
    aws_env: dict, resume_config: TuneConfig, prepared: Path, tmp_path: Path
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="runs")
    config = resume_config.with_overrides(**{"train.max_steps": 8})
    uri, port, errors = "s3://runs/TuneFlow/7/files/train/checkpoints", free_port(), []

    def node(rank: int) -> None:
        try:
            staging = ["--checkpoint-uri", uri, "--checkpoint-staging", str(tmp_path / f"staging-{rank}")]
            _train(
                config,
                prepared,
                tmp_path / f"node-{rank}",
                *staging,
                nproc=1,
                rdzv=Rendezvous(2, rank, "127.0.0.1", port),
            )
        except Exception as exc:  # node 1 writes no summary; its error, if any, is what matters
            if rank == 0 or not isinstance(exc, FileNotFoundError):
                errors.append(exc)

    nodes = [threading.Thread(target=node, args=(rank,)) for rank in (0, 1)]
    for thread in nodes:
        thread.start()
    for thread in nodes:
        thread.join(timeout=300)
    assert not errors, errors
    complete = list_complete(uri)
    assert [c.step for c in complete] == [4, 8]
    files = {e.path for e in complete[-1].record.files}
    assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= files
    stored = {o["Key"] for o in s3.list_objects_v2(Bucket="runs", Prefix="TuneFlow/7/")["Contents"]}
    assert {f"TuneFlow/7/files/train/checkpoints/{tag_for(8)}/{f}" for f in files} <= stored

    # A later run (another run id) picks the training up from S3, on one machine with 2 ranks.
    longer = config.with_overrides(**{"train.max_steps": 12})
    resumed = _train(
        longer,
        prepared,
        tmp_path / "resumed",
        *["--checkpoint-uri", "s3://runs/TuneFlow/8/files/train/checkpoints", "--resume-from", uri],
        *["--checkpoint-staging", str(tmp_path / "staging-resumed")],
    )
    assert resumed["resumed_from_step"] == 8 and resumed["resumed_from"] == f"{uri}/{tag_for(8)}"
    assert [c.step for c in list_complete("s3://runs/TuneFlow/8/files/train/checkpoints")] == [12]


def test_a_hung_rank_fails_the_launch_within_the_timeout(
    resume_config: TuneConfig, prepared: Path, tmp_path: Path
) -> None:
    config = resume_config.with_overrides(**{"train.failure_timeout_s": 15})
    out, outcome = tmp_path / "train", {}

    def train() -> None:
        try:
            _train(config, prepared, out)
        except LaunchError as exc:
            outcome["error"] = exc

    runner = threading.Thread(target=train)
    runner.start()
    wait_for(str(out / "checkpoints" / tag_for(4) / "checkpoint.json"))
    hung = training_rank(1)
    hung.suspend()  # SIGSTOP: alive, holding its sockets, answering nothing
    stopped_at = time.monotonic()
    # Rank 0 gives up after the collective timeout, and torchrun sends the other ranks SIGTERM. A stopped
    # process cannot act on it, so torchrun would wait out its 30 s grace before a SIGKILL (its failure path
    # ignores --shutdown-timeout); that is torchrun's, not what this test is about, and was half of its time.
    # A rank hung in a collective dies of the SIGTERM at once: let this one do so once it has been sent.
    wait_for_pending_signal(hung, signal.SIGTERM)
    hung.resume()
    runner.join(timeout=300)
    assert not runner.is_alive(), "the launch hung with a stopped rank"
    elapsed = time.monotonic() - stopped_at
    assert "error" in outcome and "failed first" in str(outcome["error"])
    assert elapsed < 90, elapsed  # the collective timeout (15 s), then the time to stop the ranks


def test_zero3_with_parameters_offloaded_to_cpu_trains_and_saves(
    resume_config: TuneConfig, prepared: Path, tmp_path: Path
) -> None:
    # Optimizer offload needs DeepSpeed's CPU Adam, compiled on first use (minutes): exercised on GPU machines.
    config = resume_config.with_overrides(**{"train.max_steps": 4, "deepspeed.offload_param": "cpu"})
    summary = _train(config, prepared, tmp_path / "train")
    assert summary["steps"] == 4 and summary["final_loss"] < 8.0
    assert [c.step for c in list_complete(tmp_path / "train" / "checkpoints")] == [4]
