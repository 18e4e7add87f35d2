"""Launching entrypoints: torchrun's failure summary read back, commands built, failures raised."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.runtime.launch import LaunchError, Rendezvous, root_cause, run_module, torchrun_command
from steps.runtime.stage_spec import CheckpointArgs, entry_args
from steps.stages import PREPARE_DECIDE, PREPARE_READ, TRAIN


def _failure(rank: int, code: int, trace: str) -> str:
    return (
        f"[{rank}]:\n  time      : 2026-11-22_06:00:00\n  host      : worker\n"
        f"  rank      : {rank} (local_rank: {rank})\n  exitcode  : {code} (pid: {100 + rank})\n"
        f"  error_file: <N/A>\n  traceback : {trace}\n"
    )


def _summary(first: str, *others: str) -> str:
    line = "-" * 60 + "\n"
    return "Failures:\n" + "".join(others) + line + "Root Cause (first observed failure):\n" + first + line


def test_the_first_observed_failure_is_the_cause() -> None:
    summary = _summary(_failure(1, 1, "ValueError: no blocks in /data/train"), _failure(0, -15, "Signal 15"))
    assert root_cause(summary) == (
        "rank 1 (local rank 1) failed first with exit code 1: ValueError: no blocks in /data/train; "
        "then rank 0 (exit code -15)"
    )


def test_a_rank_killed_by_a_signal_wins_over_a_peer_that_raised_first() -> None:
    # The killed rank's peer saw the connection drop and raised before torchrun polled the dead one.
    summary = _summary(_failure(0, 1, "RuntimeError: Connection reset by peer"), _failure(1, -9, "Signal 9"))
    cause = root_cause(summary)
    assert cause.startswith("rank 1 (local rank 1) failed first with exit code -9 (SIGKILL)")
    assert cause.endswith("then rank 0 (exit code 1)")


def test_sigterm_from_torchrun_is_a_consequence_not_a_cause() -> None:
    summary = _summary(_failure(0, 1, "OSError: disk full"), _failure(1, -15, "Signal 15 (SIGTERM)"))
    assert root_cause(summary).startswith("rank 0 (local rank 0) failed first with exit code 1: OSError")


def test_the_public_cause_names_the_exception_type_never_its_message() -> None:
    """A rank's exception message can quote its input (a token in a URL, a corpus line): cards and SageMaker's
    FailureReason get the type that ended the traceback, the log the whole text."""
    traceback = (
        'Traceback (most recent call last):\n    File "x.py", line 3, in <module>\n'
        "  requests.exceptions.HTTPError: 401 for url https://hub/?token=hf_CANARY_launch"
    )
    summary = _summary(_failure(1, 1, traceback), _failure(0, -15, "Signal 15"))
    assert "hf_CANARY_launch" in root_cause(summary)
    assert root_cause(summary, public=True) == (
        "rank 1 (local rank 1) failed first with exit code 1: requests.exceptions.HTTPError; "
        "then rank 0 (exit code -15)"
    )
    signal_only = _summary(_failure(0, -9, "Signal 9 (SIGKILL) received by PID 100"))
    assert root_cause(signal_only, public=True) == "rank 0 (local rank 0) failed first with exit code -9 (SIGKILL)"


def test_no_failed_rank_in_the_output_gives_none() -> None:
    assert root_cause("torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError") is None


def test_commands_for_modules_and_scripts() -> None:
    rdzv = Rendezvous(num_nodes=2, node_rank=1, main_addr="10.0.0.1", main_port=29501)
    command = torchrun_command("steps.train", ["--out", "x"], 4, rdzv, timeout_s=60)
    assert command[command.index("--rdzv_conf=timeout=60") + 1 :] == ["-m", "steps.train", "--out", "x"]
    assert {"--nnodes=2", "--node_rank=1", "--nproc_per_node=4", "--master_addr=10.0.0.1"} <= set(command)
    assert torchrun_command("/repo/bench/inference.py", [], 2, rdzv)[-1] == "/repo/bench/inference.py"


def test_every_entry_point_gets_the_same_command_line_from_its_spec() -> None:
    inputs = {"dataset": Path("d"), "tokenizer": Path("t"), "base_model": None}  # an absent input is left out
    where = CheckpointArgs("s3://b/train/checkpoints", Path("staging"), ("r1", "r2"))
    assert entry_args(TRAIN, Path("c.json"), inputs, Path("o"), checkpoints=where) == [
        *["--config", "c.json", "--dataset", "d", "--tokenizer", "t", "--out", "o"],
        *["--checkpoint-uri", "s3://b/train/checkpoints", "--checkpoint-staging", "staging"],
        *["--resume-from", "r1", "--resume-from", "r2"],
    ]
    reads = {"read": [Path("r0"), Path("r1")]}  # a list input: one option, every folder
    assert entry_args(PREPARE_DECIDE, Path("c.json"), reads, Path("o")) == [
        *["--config", "c.json", "--phase", "decide", "--read", "r0", "r1", "--out", "o"]
    ]
    assert entry_args(PREPARE_READ, Path("c.json"), {}, Path("o"), {"shard": 3})[-2:] == ["--shard", "3"]


def test_a_failing_module_raises_with_its_last_lines(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(LaunchError, match=r"(?s)json\.tool exited with code 1.*last lines:.*Expecting value") as failed:
        run_module("json.tool", ["/dev/null"])
    assert failed.value.public == "json.tool exited with code 1"  # without the module's own words
    run_module("platform", [])  # a module that succeeds: no error, its output streamed through
    assert "launching:" in capsys.readouterr().out


def test_a_module_killed_by_a_signal_says_which(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL is what the OOM killer sends: the error names it, not only the bare exit code -9."""
    (tmp_path / "killed_self.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    monkeypatch.chdir(tmp_path)  # `python -m` finds the module in its working folder
    with pytest.raises(LaunchError, match=r"killed_self exited with code -9 \(SIGKILL\)") as failed:
        run_module("killed_self", [])
    assert failed.value.public == "killed_self exited with code -9 (SIGKILL)"


def test_progress_bars_stay_out_of_a_modules_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """DeepSpeed's zero_to_fp32 draws a plain tqdm bar per checkpoint it reads: four in every convert log."""
    (tmp_path / "with_bars.py").write_text(
        "from tqdm import tqdm\nfor _ in tqdm(range(2), desc='Loading checkpoint shards'):\n    pass\nprint('read')\n"
    )
    monkeypatch.chdir(tmp_path)
    run_module("with_bars", [])
    out, err = capfd.readouterr()
    assert "read" in out and "Loading checkpoint shards" not in out + err
