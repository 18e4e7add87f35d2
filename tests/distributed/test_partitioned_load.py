"""Under ZeRO-3 no rank builds a whole copy of the base model: 2 CPU ranks, a tiny tied Llama (9/3 heads).

The model training starts from (`steps.train.loop.starting_model`) is built and loaded rank by rank
(tests/support/partitioned_load_worker.py). Each rank must hold only its half of the parameters, never
call a whole-state-dict reader, and still end up with exactly the base model's weights and the fingerprint
evaluate recomputes from a plain load.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.config import TuneConfig, write_config
from steps.formats.model import load_pretrained, state_dict_sha256
from steps.runtime.launch import run_torchrun
from tests.support.tiny_llama import save_tiny_tied_llama

WORKER = str(Path(__file__).parents[1] / "support" / "partitioned_load_worker.py")


@pytest.fixture(scope="module")
def tiny_tied(tmp_path_factory) -> Path:
    # Odd sizes: ZeRO-3 pads them to a multiple of the ranks.
    return save_tiny_tied_llama(tmp_path_factory.mktemp("tiny-tied"), vocab_size=301, max_positions=64)


def test_zero3_ranks_hold_only_their_partition_of_the_base_model(tiny_tied: Path, tmp_path: Path) -> None:
    config = TuneConfig().with_overrides(
        **{
            "model.base_model": str(tiny_tied),
            "deepspeed.zero_stage": 3,
            "deepspeed.config_file": "configs/deepspeed/zero3.json",
            "train.micro_batch_size": 1,
        }
    )
    config_file = write_config(config, tmp_path / "config.json")
    run_torchrun(WORKER, [str(config_file), str(tiny_tied), str(tmp_path)], nproc_per_node=2)
    ranks = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in range(2)]
    plain = load_pretrained(tiny_tied)
    total = sum(p.numel() for p in plain.parameters())
    for rank in ranks:
        assert rank["total"] == total
        # Half of each tensor, rounded up: at most one padding element per tensor.
        assert rank["held"] <= total / 2 + rank["tensors"], rank
        assert rank["calls"] == {}, f"a whole state dict was read: {rank['calls']}"
        assert rank["weights_equal"] is True
        assert rank["fingerprint"] == state_dict_sha256(plain)
