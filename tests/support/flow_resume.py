"""Killing a training rank of a flow run, and the weights an uninterrupted training of the same run ends with.

Shared by the flow's `@retry` test (instruction tuning), its `resume` on several nodes (the UI tier) and its `resume` of
a real base model (SmolLM2).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

from steps.config import TuneConfig, write_config
from steps.formats.train_folder import tag_for
from steps.runtime.launch import run_torchrun
from steps.runtime.storage import StoredDir, fetch
from tests.support.faults import kill_rank_after_checkpoint, training_rank
from tests.support.flow_runs import runner


def run_killing_rank_1(home: Path, config: Path, after_step: int, stage: str = "train", **options) -> dict:
    """Run the flow and SIGKILL training rank 1 once the checkpoint of `after_step` is complete; `stage`: the
    folder of the training stage whose checkpoints are watched (`train`, or `instruct/train`)."""
    return run_killing_ranks(home, config, after_step, (1,), stage, **options)


def run_killing_ranks(
    home: Path,
    config: Path | None,
    after_step: int,
    ranks: tuple[int, ...],
    stage: str = "train",
    resuming: str | None = None,
    **options,
) -> dict:
    """Run the flow (or `resume` the run whose id is `resuming`, with no config) and SIGKILL these training ranks,
    in this order, once the checkpoint of `after_step` is complete (`stage`: the folder of the training stage whose
    checkpoints are watched, `train` or `instruct/train`). (A node whose ranks are all gone ends its torchrun at
    once; one that waits for a lost node's ranks fails only after train.failure_timeout_s.)"""
    outcome: dict = {}

    def run() -> None:
        with runner(home, config, **options) as flow:
            result = flow.resume(origin_run_id=resuming) if resuming else flow.run()
            outcome.update(status=result.status, output=result.stdout + result.stderr, pathspec=result.run.pathspec)

    thread = threading.Thread(target=run)
    thread.start()
    checkpoint = f"{home}/.metaflow/TuneFlow/*/files/{stage}/checkpoints/{tag_for(after_step)}/checkpoint.json"
    for _ in range(180):  # up to 15 minutes, but not a moment longer once the run has ended without the checkpoint
        try:
            kill_rank_after_checkpoint(checkpoint, rank=ranks[0], timeout_s=5)
            break
        except TimeoutError:
            assert thread.is_alive(), f"the run ended before the checkpoint of step {after_step}: {outcome}"
    for rank in ranks[1:]:
        try:
            os.kill(training_rank(rank).pid, signal.SIGKILL)
        except (LookupError, ProcessLookupError):
            pass  # it had ended already, its peer gone
    thread.join(timeout=900)
    assert not thread.is_alive(), "the flow hung after a rank was killed"
    return outcome


def final_weights(checkpoints: Path, step: int) -> dict[str, torch.Tensor]:
    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoints), tag=tag_for(step))


def uninterrupted_training(run, tmp_path: Path) -> Path:
    """Train the run's settings on the run's own dataset (and base model) without interruption, under torchrun, on
    one machine with as many ranks as the run had on all its nodes; the training's output folder."""
    settings = TuneConfig.model_validate(run["start"].task.data.run_config)
    world_size = settings.train.num_nodes * settings.train.nproc_per_node
    # One checkpoint, at the end: nothing saved on the way can have a hand in the reference's weights.
    settings = settings.with_overrides(
        **{"train.checkpoint_every": settings.train.max_steps, "train.num_nodes": 1, "train.nproc_per_node": world_size}
    )
    end = run["end"].task.data.references
    out = tmp_path / "uninterrupted"
    args = ["--config", str(write_config(settings, tmp_path / "settings.json")), "--out", str(out)]
    args += ["--dataset", str(fetch(StoredDir.from_dict(end["dataset"])))]
    args += ["--tokenizer", str(fetch(StoredDir.from_dict(end["tokenizer"])))]
    if "base_model" in end:  # the run's own copy, as prepare stored it (a GGUF file's dequantized folder)
        args += ["--base-model", str(fetch(StoredDir.from_dict(end["base_model"])))]
    run_torchrun("steps.train", args, nproc_per_node=world_size)
    return out
