"""ZeroCheckpointReader on ZeRO checkpoints written by hand (tests/support/zero_files.py), tensors known."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steps.convert.zero_reader import ZeroCheckpointError, ZeroCheckpointReader
from tests.support.zero_files import write_zero_checkpoint


def _params() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    # Sizes that do not divide by the world sizes below, so partitions cut through parameters.
    return {
        "embed.weight": torch.randn(7, 5, generator=generator),
        "layer.0.weight": torch.randn(5, 5, generator=generator),
        "layer.0.bias": torch.randn(5, generator=generator),
        "head.weight": torch.randn(3, 5, generator=generator),
    }


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_parameter_comes_back_whole(tmp_path: Path, stage: int, world_size: int) -> None:
    params = _params()
    buffers = {"rotary.inv_freq": torch.arange(4, dtype=torch.float32)}
    folder = write_zero_checkpoint(tmp_path / "ckpt", params, stage, world_size, buffers)
    reader = ZeroCheckpointReader(folder)
    assert reader.stage == stage and reader.world_size == world_size
    assert reader.shapes == {**{n: t.shape for n, t in params.items()}, "rotary.inv_freq": torch.Size([4])}
    gathered = dict(reader.gather([*params, "rotary.inv_freq"]))
    for name, tensor in params.items():
        assert torch.equal(gathered[name], tensor), name
    assert torch.equal(gathered["rotary.inv_freq"], buffers["rotary.inv_freq"])


def test_gathering_a_few_names_reads_only_those(tmp_path: Path) -> None:
    params = _params()
    reader = ZeroCheckpointReader(write_zero_checkpoint(tmp_path / "ckpt", params, 2, 2))
    assert [name for name, _ in reader.gather(["head.weight"])] == ["head.weight"]
    with pytest.raises(ZeroCheckpointError, match="no tensors named \\['nope'\\]"):
        list(reader.gather(["nope"]))


def test_a_folder_without_deepspeed_files_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZeroCheckpointError, match="is not a DeepSpeed checkpoint"):
        ZeroCheckpointReader(tmp_path / "empty")


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32-names", "bf16-names"])
@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("world_size", [11, 12])
def test_eleven_or_more_ranks_are_joined_in_rank_order(tmp_path: Path, stage: int, world_size: int, bf16: bool) -> None:
    # As strings, zero_pp_rank_10 sorts before zero_pp_rank_2: two 8-GPU nodes would convert scrambled.
    params = _params()
    folder = write_zero_checkpoint(tmp_path / "ckpt", params, stage, world_size, bf16=bf16)
    reader = ZeroCheckpointReader(folder)
    assert reader.world_size == world_size
    gathered = dict(reader.gather(list(params)))
    for name, tensor in params.items():
        assert torch.equal(gathered[name], tensor), name


def test_a_missing_rank_file_is_named(tmp_path: Path) -> None:
    folder = write_zero_checkpoint(tmp_path / "ckpt", _params(), 2, 12)
    (folder / "zero_pp_rank_7_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(ZeroCheckpointError, match="not one per rank"):
        ZeroCheckpointReader(folder)
