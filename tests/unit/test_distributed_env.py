"""The environment DeepSpeed's CPU shared-memory all-reduce needs, set from torchrun's, whatever a parent left."""

from __future__ import annotations

import subprocess
import sys

from steps.runtime.distributed import mirror_local_size


def test_torchruns_local_world_size_wins_over_an_inherited_local_size() -> None:
    # A parent that once ran a single-rank job left LOCAL_SIZE=1; its 2-rank children segfaulted in
    # DeepSpeed-Inference's all-reduce (seen in the full suite: a flow run after an in-process one-rank test).
    environ = {"LOCAL_WORLD_SIZE": "2", "LOCAL_SIZE": "1"}
    mirror_local_size(environ)
    assert environ["LOCAL_SIZE"] == "2"


def test_local_size_is_set_when_torchrun_did_not_set_it_and_left_alone_outside_torchrun() -> None:
    environ = {"LOCAL_WORLD_SIZE": "3"}
    mirror_local_size(environ)
    assert environ["LOCAL_SIZE"] == "3"
    outside: dict[str, str] = {}
    mirror_local_size(outside)
    assert outside == {}


def test_torchs_deprecation_of_deepspeeds_gather_stays_out_of_the_step_log() -> None:
    # The text torch 2.13 printed in every train and evaluate step log, once per rank, before the filter.
    deprecated = (
        "`torch.distributed.all_gather_into_tensor` is deprecated. "
        "Please use `torch.distributed.all_gather_single` instead."
    )
    code = (
        "import sys, warnings; import steps.runtime.distributed; "
        "warnings.warn(sys.argv[1], FutureWarning); warnings.warn('another future change', FutureWarning)"
    )
    stderr = subprocess.run([sys.executable, "-c", code, deprecated], capture_output=True, text=True).stderr
    assert "all_gather_into_tensor" not in stderr and "another future change" in stderr, stderr
