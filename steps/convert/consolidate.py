"""A ZeRO checkpoint (any stage, any world size) consolidated into a verified Hugging Face folder.

Our training state mapped onto the Hugging Face layout. Tensors are
gathered from the memory-mapped ZeRO partitions shard by shard
(`steps.convert.zero_reader`), checked against the architecture the checkpoint
describes, cast to `convert.dtype` and written as safetensors shards with an
index, beside the config, tokenizer and generation config. The written folder
is then read back, shard by shard, and its logits on a fixed held-out batch are
compared with those the trained engine produced (`verify_logits.pt`).

A LoRA checkpoint holds adapters only: they are merged into the model they were trained on
(`steps.convert.lora_merge`), and the merged weights are written and verified the same way, with
the adapter itself beside them in PEFT's format. An instruction-tuned model's generation config
stops at the end of an assistant turn, so that `transformers.pipeline("text-generation")` chats
with the folder as it is.
"""

from __future__ import annotations

import ctypes
import gc
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

from steps.config import TuneConfig, parse_size
from steps.convert.lora_merge import ADAPTER_FOLDER, holds_adapters, merged_lora_model
from steps.convert.zero_reader import ZeroCheckpointReader
from steps.formats.chat_template import chat_stop_ids
from steps.formats.model import TORCH_DTYPES
from steps.formats.model_folder import CONVERSION_FILE
from steps.formats.tokenizer_folder import load_tokenizer
from steps.formats.train_folder import (
    CHECKPOINT_RECORD,
    CHECKPOINTS,
    TRAIN_SUMMARY_FILE,
    VERIFY_LOGITS_FILE,
    verified_newest,
)
from steps.results import ConversionRecord, TensorCheck, TrainSummary

LOGITS_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 1e-1}
"""Largest allowed absolute logit difference from the trained engine, by written precision.

fp32 must reproduce training up to summation order; half precisions round every
weight (bf16 keeps 8 mantissa bits), so the bound is the rounding of a tiny model's logits.
"""
INDEX_FILE = "model.safetensors.index.json"


class ConversionError(RuntimeError):
    """A checkpoint that cannot be converted, or a conversion that does not reproduce training."""


def written_dtype(config: TuneConfig) -> str:
    return config.train.dtype if config.convert.dtype == "auto" else config.convert.dtype


def plan_shards(shapes: dict[str, torch.Size], dtype: torch.dtype, max_bytes: int) -> list[list[str]]:
    """Tensor names grouped in order into shards of at most max_bytes (a larger tensor gets its own)."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = shape.numel() * itemsize
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def _expected_shapes(config) -> dict[str, torch.Size]:
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return {name: t.shape for name, t in skeleton.state_dict().items()}


def _check_keys(found: dict[str, torch.Size], expected: dict[str, torch.Size], tied: set[str]) -> None:
    missing = sorted(set(expected) - set(found) - tied)
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ConversionError(
            f"checkpoint tensors differ from the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def _check_tensor(name: str, tensor: torch.Tensor, expected: torch.Size) -> dict[str, Any]:
    """The per-tensor verification row; raises on an empty, misshapen, all-zero or non-finite tensor."""
    if tensor.numel() == 0 or tensor.shape != expected:
        raise ConversionError(
            f"{name}: gathered tensor has shape {tuple(tensor.shape)}, the architecture expects {tuple(expected)}"
        )
    norm = float(tensor.float().norm())
    if tensor.is_floating_point() and (norm == 0.0 or not torch.isfinite(torch.tensor(norm))):
        raise ConversionError(f"{name}: gathered tensor has norm {norm}; the checkpoint partitions are broken")
    return {"name": name, "shape": list(tensor.shape), "norm": norm}


def _release_freed_memory() -> None:
    """Hand freed shard buffers back to the OS.

    glibc keeps freed heap memory for reuse, so without `malloc_trim` the resident
    size after a shard stays at its high-water mark and shards would add up.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def write_shards(
    reader: ZeroCheckpointReader | TensorsInMemory,
    expected: dict[str, torch.Size],
    dtype: torch.dtype,
    max_bytes: int,
    out_dir: Path,
) -> tuple[list[dict], int]:
    """Gather, check, cast and write one shard at a time; return the tensor rows and the bytes written."""
    names = {n: s for n, s in reader.shapes.items() if n in expected}
    plan = plan_shards(names, dtype, max_bytes)
    files = (
        ["model.safetensors"]
        if len(plan) == 1
        else [f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))]
    )
    rows, weight_map, total = [], {}, 0
    for shard_names, filename in zip(plan, files, strict=True):
        shard = {}
        for name, tensor in reader.gather(shard_names):
            tensor = tensor.detach()  # DeepSpeed saves its flat fp32 partitions with requires_grad set
            rows.append(_check_tensor(name, tensor, expected[name]))
            shard[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
            total += shard[name].numel() * shard[name].element_size()
            weight_map[name] = filename
        save_file(shard, str(out_dir / filename), metadata={"format": "pt"})
        del shard
        _release_freed_memory()
    if len(plan) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=1))
    return rows, total


class TensorsInMemory:
    """A model's tensors read as `ZeroCheckpointReader`'s are (`shapes`, `gather`), tied aliases apart."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._tensors: dict[str, torch.Tensor] = {}
        first_of: dict[int, str] = {}
        self.shared: dict[str, str] = {}
        """Alias name → the tensor it shares storage with (tied weights)."""
        for name, tensor in model.state_dict().items():
            pointer = tensor.data_ptr()
            if pointer in first_of:
                self.shared[name] = first_of[pointer]
                continue
            first_of[pointer] = name
            self._tensors[name] = tensor

    @property
    def shapes(self) -> dict[str, torch.Size]:
        return {name: tensor.shape for name, tensor in self._tensors.items()}

    def gather(self, names: list[str]):
        for name in names:
            tensor = self._tensors[name]
            yield name, tensor.float() if tensor.is_floating_point() else tensor


def instruction_tuned(train_dir: Path) -> bool:
    """Whether the train folder is an instruction tuning's (its summary says so)."""
    path = Path(train_dir) / TRAIN_SUMMARY_FILE
    return path.is_file() and TrainSummary.model_validate_json(path.read_text()).objective == "sft"


def load_written_model(out_dir: Path) -> torch.nn.Module:
    """The written folder as an fp32 model, loaded the way users load it."""
    return AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32).eval()


def logits_difference(model: torch.nn.Module, verify_file: Path) -> float:
    """Largest absolute difference between the model's logits and the trained engine's."""
    reference = torch.load(verify_file, weights_only=True)
    with torch.no_grad():
        logits = model(input_ids=reference["input_ids"]).logits.float()
    return float((logits - reference["logits"]).abs().max())


def run_convert(
    config: TuneConfig, train_dir: Path, tokenizer_dir: Path, out_dir: Path, base_model: Path | None = None
) -> ConversionRecord:
    """Write `out_dir` as a Hugging Face model folder and return the verification record.

    `base_model`: the model a LoRA checkpoint's adapters were trained on (not read for other checkpoints).
    """
    # Every file is checked against its record before anything of it is unpickled.
    found = verified_newest(train_dir)
    if found is None:
        raise ConversionError(
            f"{train_dir / CHECKPOINTS} holds no complete checkpoint (none has a {CHECKPOINT_RECORD})"
        )
    folder, checkpoint_record = found
    reader = ZeroCheckpointReader(folder)
    model_config = AutoConfig.from_pretrained(str(folder))
    expected = _expected_shapes(model_config)
    out_dir.mkdir(parents=True, exist_ok=True)
    lora = holds_adapters(folder)
    tensors: ZeroCheckpointReader | TensorsInMemory = reader
    if lora:
        source = config.model.base_model if not config.pretrains else "the continued-pretrained model (convert/model)"
        merged = merged_lora_model(reader, folder, base_model, checkpoint_record.init_sha256, out_dir, source)
        tensors = TensorsInMemory(merged)
    tied = set(tensors.shared) if getattr(model_config, "tie_word_embeddings", False) else set()
    _check_keys(tensors.shapes, expected, tied)

    precision = written_dtype(config)
    rows, total = write_shards(
        tensors, expected, TORCH_DTYPES[precision], parse_size(config.convert.max_shard_size), out_dir
    )
    del tensors
    model_config.dtype = TORCH_DTYPES[precision]
    model_config.save_pretrained(str(out_dir))
    tokenizer = load_tokenizer(tokenizer_dir)
    tokenizer.save_pretrained(str(out_dir))
    chat = instruction_tuned(train_dir)
    # A chat model stops at the end of its turn; a continued-pretrained one at the end of a document.
    stops = chat_stop_ids(tokenizer) if chat else [tokenizer.eos_token_id]
    GenerationConfig(
        do_sample=False,
        max_new_tokens=config.instruct.max_new_tokens if chat else config.evaluate.max_new_tokens,
        eos_token_id=list(dict.fromkeys([*stops, *config.evaluate.extra_eos_ids])),
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(str(out_dir))

    difference = logits_difference(load_written_model(out_dir), train_dir / VERIFY_LOGITS_FILE)
    tolerance = LOGITS_TOLERANCE[precision]
    record = ConversionRecord(
        checkpoint=folder.name,
        step=checkpoint_record.step,
        init_sha256=checkpoint_record.init_sha256,
        zero_stage=reader.stage,
        trained_world_size=reader.world_size,
        dtype=precision,
        tensors=len(rows),
        parameters=sum(torch.Size(r["shape"]).numel() for r in rows),
        written_bytes=total,
        shards=len(list(out_dir.glob("model*.safetensors"))),
        all_tensors_checked=len(rows) == len(expected) - len(tied & set(expected)),
        max_logit_difference=difference,
        tolerance=tolerance,
        logits_match=difference <= tolerance,
        lora_merged=lora,
        adapter=ADAPTER_FOLDER if lora else None,
        files=sorted(p.name for p in out_dir.iterdir()),
        tensor_checks=[TensorCheck(**row) for row in rows],
    )
    if not record.logits_match:
        raise ConversionError(
            f"converted model's logits differ from the trained engine's by {difference:.3g} "
            f"(tolerance {tolerance} for {precision}); the checkpoint {folder} does not hold the trained weights"
        )
    (out_dir / CONVERSION_FILE).write_text(record.model_dump_json(indent=1))
    return record
