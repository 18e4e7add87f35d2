"""A base model loaded straight into ZeRO-3 partitions: no rank ever holds a whole copy of the model.

The model is built under `deepspeed.zero.Init`, which partitions each module's parameters as
soon as the module exists (the largest transient is one module, SmolLM2's embedding table:
0.21 of the model in fp32), without random initialisation (the weights are overwritten anyway).
The safetensors files are then read with `pread` (no memory map, whose touched pages would
count in every rank's resident memory), a few megabytes at a time, and each rank copies only
the elements of its own slice into `param.ds_tensor`, the flat partition ZeRO-3 keeps.

Loading through transformers' own DeepSpeed integration (`HfDeepSpeedConfig`) does not do
this: rank 0 reads the whole state dict (`load_state_dict(..., map_location="cpu")`) and every
rank gathers each module whole to copy it in; bench/zero3_load_memory.py measures both.

The same pass computes the model's fingerprint (`state_dict_sha256` of the fp32 weights, which
evaluate recomputes from a plain load) from the streamed chunks, so nothing is gathered for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.initialization import no_init_weights
from transformers.integrations.deepspeed import prevent_arange_dtype_change

from steps.runtime.error_text import NotFound

CHUNK_BYTES = 8 << 20
"""At most this much of a tensor is read at a time (plus one row of it)."""

SINGLE_FILE, INDEX_FILE = "model.safetensors", "model.safetensors.index.json"


class _PartitionOnlyInit(deepspeed.zero.Init):
    """zero.Init without its broadcast of every new parameter, whole, from rank 0 (`_zero_init_param`):
    the values are uninitialised here (no_init_weights) and the stream overwrites them, and the broadcast
    cost each receiving rank a whole-tensor buffer (measured: rank 1 peaked 0.26 of the model above rank 0)."""

    def _zero_init_param(self, param) -> None:
        self._convert_to_deepspeed_param(param)
        param.partition()


def safetensors_files(folder: str | Path) -> dict[str, Path]:
    """Each tensor name of a Hugging Face folder's safetensors weights, with its file; empty when there are none."""
    folder = Path(folder)
    if (folder / INDEX_FILE).is_file():
        weight_map = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
        return {name: folder / file for name, file in weight_map.items()}
    if (folder / SINGLE_FILE).is_file():
        with safe_open(str(folder / SINGLE_FILE), framework="pt") as handle:
            return dict.fromkeys(handle.keys(), folder / SINGLE_FILE)
    return {}


def load_partitioned(folder: str | Path, ds_config: dict) -> tuple[PreTrainedModel, str]:
    """The model of `folder`, partitioned by ZeRO-3 as it is built and loaded, and its fp32 fingerprint.

    The parameters take the precision DeepSpeed's config trains in (bf16 or fp32); every rank must call.
    """
    files = safetensors_files(folder)
    if not files:
        raise NotFound(f"{folder}: no {SINGLE_FILE} or {INDEX_FILE}; ZeRO-3 streams safetensors weights")
    config = AutoConfig.from_pretrained(str(folder))
    # Created in the training precision directly: zero.Init would otherwise create fp32 and cast each tensor.
    dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
    # prevent_arange_dtype_change keeps RoPE's fp32 frequencies fp32 under a bf16 zero.Init (it must come first).
    with no_init_weights(), prevent_arange_dtype_change(), _PartitionOnlyInit(config_dict_or_path=ds_config):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    sources = _sources(params, files, folder)
    digest, loaded = hashlib.sha256(), set()
    with contextlib.ExitStack() as stack:
        handles: dict[Path, object] = {}

        def opened(file: Path):
            if file not in handles:
                handles[file] = stack.enter_context(safe_open(str(file), framework="pt", backend="pread"))
            return handles[file]

        for name in sorted(model.state_dict().keys()):
            digest.update(name.encode())
            if name in params:
                param = params[name]
                source = sources[id(param)]
                fill = id(param) not in loaded  # a tied table is read again for its second name, filled once
                for start, chunk in _chunks(opened(files[source]), source, tuple(param.ds_shape), files[source]):
                    digest.update(chunk.to(torch.float32).numpy())
                    if fill:
                        _fill_partition(param, start, chunk)
                loaded.add(id(param))
            else:  # buffers are whole on every rank; a saved one comes from the file, as from_pretrained does
                buffer = buffers[name]
                if name in files:
                    buffer.copy_(opened(files[name]).get_tensor(name))
                digest.update(buffer.detach().cpu().contiguous().view(torch.uint8).numpy())
    return model, digest.hexdigest()


def _sources(params: dict[str, torch.nn.Parameter], files: dict[str, Path], folder) -> dict[int, str]:
    """For each distinct parameter, the name it is saved under (a tied table is saved under one of its names)."""
    names: dict[int, list[str]] = {}
    for name, param in params.items():
        names.setdefault(id(param), []).append(name)
    sources, missing = {}, []
    for key, aliases in names.items():
        found = [name for name in aliases if name in files]
        if found:
            sources[key] = found[0]
        else:
            missing.append(aliases[0])
    if missing:
        raise ValueError(
            f"{folder}: the safetensors weights lack {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            + "; the folder must hold this architecture's weights under transformers' names "
            "(re-save it with save_pretrained)"
        )
    return sources


def _chunks(handle, name: str, shape: tuple[int, ...], file: Path) -> Iterator[tuple[int, torch.Tensor]]:
    """(flat offset, flat tensor) pieces of one saved tensor, each a few megabytes, read with pread."""
    view = handle.get_slice(name)
    saved = tuple(view.get_shape())
    if saved != shape:
        raise ValueError(f"{file}: {name} has shape {saved}, the model expects {shape}")
    if len(shape) == 0:
        yield 0, handle.get_tensor(name).reshape(-1)
        return
    row = 1
    for size in shape[1:]:
        row *= size
    rows = max(1, CHUNK_BYTES // max(1, row * 4))
    for first in range(0, shape[0], rows):
        yield first * row, view[first : min(first + rows, shape[0])].reshape(-1)


def _fill_partition(param: torch.nn.Parameter, start: int, chunk: torch.Tensor) -> None:
    """Copy the part of `chunk` (flat elements from `start`) that falls into this rank's ZeRO-3 slice."""
    part = param.ds_tensor
    size = part.numel()  # ZeRO-3 pads a tensor to a multiple of the ranks and gives each an equal flat slice
    low = dist.get_rank(group=param.ds_process_group) * size
    high = min(low + size, param.ds_numel)
    begin, end = max(low, start), min(high, start + chunk.numel())
    with torch.no_grad():
        if begin < end:
            part[begin - low : end - low].copy_(chunk[begin - start : end - start])
        if start + chunk.numel() >= param.ds_numel and high - low < size:
            part[max(0, high - low) :].zero_()  # the padding, deterministic


def streams_into_partitions(ds_config: dict, base_model: str | Path | None) -> bool:
    """Whether training loads `base_model` with `load_partitioned`: ZeRO-3, safetensors weights, parameters
    not swapped to NVMe (their partitions are not in memory to copy into); otherwise a plain load."""
    zero = ds_config.get("zero_optimization", {})
    on_nvme = zero.get("offload_param", {}).get("device") == "nvme"
    return base_model is not None and zero.get("stage") == 3 and not on_nvme and bool(safetensors_files(base_model))
