"""DeepSpeed ZeRO checkpoint folders written by hand, in DeepSpeed's file layout, from known tensors.

Real checkpoints need a DeepSpeed engine per rank; these need none, so a unit test
can check the reader against tensors it chose, on any number of ranks: ZeRO-1/2
flatten each parameter group and cut the flat vector into one equal partition per
rank (padded at the end); ZeRO-3 cuts every parameter into one padded slice per
rank and each rank concatenates its slices.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from deepspeed.checkpoint import constants as ds


def _model_states(shapes: dict[str, torch.Size], buffers: dict[str, torch.Tensor]) -> dict:
    return {
        "module": dict(buffers),
        ds.BUFFER_NAMES: list(buffers),
        ds.PARAM_SHAPES: [dict(shapes)],
        "shared_params": {},
        ds.FROZEN_PARAM_SHAPES: None,
        ds.DS_VERSION: "0.19.8",
    }


def write_zero_checkpoint(
    folder: Path,
    params: dict[str, torch.Tensor],
    stage: int,
    world_size: int,
    buffers: dict | None = None,
    bf16: bool = False,
) -> Path:
    """A checkpoint folder holding `params` (one parameter group) as `world_size` ranks of ZeRO `stage` save it.

    `bf16`: the optimizer files get the names DeepSpeed's bf16 optimizer gives them (`bf16_zero_pp_rank_…`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    buffers = buffers or {}
    shapes = {name: tensor.shape for name, tensor in params.items()}
    if stage <= 2:
        flat = torch.cat([t.reshape(-1).float() for t in params.values()])
        part = math.ceil(flat.numel() / world_size)
        flat = torch.cat([flat, torch.zeros(part * world_size - flat.numel())])
        partitions = [flat[r * part : (r + 1) * part].clone() for r in range(world_size)]
        torch.save(_model_states(shapes, buffers), folder / "mp_rank_00_model_states.pt")
        key = ds.SINGLE_PARTITION_OF_FP32_GROUPS
    else:
        slices: list[list[torch.Tensor]] = [[] for _ in range(world_size)]
        for tensor in params.values():
            flat = tensor.reshape(-1).float()
            part = math.ceil(flat.numel() / world_size)
            flat = torch.cat([flat, torch.zeros(part * world_size - flat.numel())])
            for r in range(world_size):
                slices[r].append(flat[r * part : (r + 1) * part])
        partitions = [torch.cat(rank_slices) for rank_slices in slices]
        for r in range(world_size):
            torch.save(_model_states(shapes, buffers), folder / f"zero_pp_rank_{r}_mp_rank_00_model_states.pt")
        key = ds.FP32_FLAT_GROUPS
    for r, partition in enumerate(partitions):
        state = {ds.ZERO_STAGE: stage, ds.PARTITION_COUNT: world_size, key: [partition]}
        torch.save({ds.OPTIMIZER_STATE_DICT: state, ds.DS_VERSION: "0.19.8"}, folder / _optim_name(r, bf16))
    return folder


def _optim_name(rank: int, bf16: bool = False) -> str:
    return f"{'bf16_' if bf16 else ''}zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
