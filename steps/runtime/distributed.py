"""Distributed initialisation for the torchrun entrypoints, and the CPU workarounds, in one place."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import deepspeed
import torch
import torch.distributed as dist

# DeepSpeed detects the CPU accelerator by itself when no GPU is there (DS_ACCELERATOR=cpu
# forces it); everything CPU-specific below keys off this one flag.
ON_GPU = torch.cuda.is_available()

# DeepSpeed's ZeRO gathers call this torch API, which torch now warns is deprecated, once per rank and run: a
# note to DeepSpeed's developers that users can do nothing about, so it stays out of the step log.
warnings.filterwarnings(
    "ignore", message=r"`torch\.distributed\.all_gather_into_tensor` is deprecated", category=FutureWarning
)


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    node_rank: int = 0
    """Which machine of the job this rank runs on (torchrun's GROUP_RANK)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_s: float | None = None) -> DistContext:
    """Join the process group torchrun set up: NCCL on GPUs, gloo on CPU.

    `timeout_s` bounds every collective: a rank whose peer died or hangs raises
    instead of waiting for the 30-minute default, so the launch fails fast.
    """
    if not ON_GPU:
        mirror_local_size(os.environ)
    if not dist.is_initialized():
        kwargs = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
        deepspeed.init_distributed(dist_backend="nccl" if ON_GPU else "gloo", **kwargs)
        if not ON_GPU:
            _unlink_shm_buffer()
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if ON_GPU:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistContext(rank, world, local_rank, device, int(os.environ.get("GROUP_RANK", 0)))


def mirror_local_size(environ: MutableMapping[str, str]) -> None:
    """Set LOCAL_SIZE to torchrun's LOCAL_WORLD_SIZE, overriding any inherited value.

    DeepSpeed's CPU shared-memory all-reduce (inference_all_reduce, used by DeepSpeed-Inference
    tensor parallelism) sets up its buffers only when LOCAL_SIZE equals the ranks on this machine;
    torchrun sets LOCAL_WORLD_SIZE instead, and unset buffers segfault. A LOCAL_SIZE inherited from
    a parent process (one that ran a single-rank job, say) is just as wrong and segfaults the same
    way, so torchrun's value always wins.
    """
    if "LOCAL_WORLD_SIZE" in environ:
        environ["LOCAL_SIZE"] = environ["LOCAL_WORLD_SIZE"]


def _unlink_shm_buffer() -> None:
    """Remove this rank's name for DeepSpeed's CPU all-reduce buffer once every peer has mapped it.

    DeepSpeed's shm.cpp creates /dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>
    (69 MB) per rank and never unlinks it, so every CPU run leaked RAM-backed files until
    /dev/shm filled up. Peers open the buffers inside init_distributed; after a barrier
    the names are no longer needed and the mappings stay valid.
    """
    dist.barrier()
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", ""), dist.get_rank()
    )
    try:
        os.unlink(f"/dev/shm/{name}")
    except FileNotFoundError:
        pass  # not created: another node, or DeepSpeed's shm path not in use


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_objects(obj: object) -> list:
    if not dist.is_initialized():
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shutdown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_now_that_the_work_is_done() -> NoReturn:
    """End a torchrun rank whose entry point returned: flush its output, then `os._exit(0)`.

    Python's finalization runs the C++ destructors of library objects, and one of them (a thread that DeepSpeed's
    inference engines or gloo leave joinable on CPU) aborted a rank after its evaluation had finished and its files
    were written: "terminate called without an active exception", SIGABRT, and torchrun failed a stage whose results
    were complete. Nothing of ours needs finalization once the entry point has returned (files are closed, temporary
    folders removed by their context managers); a failing entry point raises before this and exits as usual.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
