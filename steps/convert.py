"""convert: a ZeRO checkpoint (any stage, any world size) to a verified Hugging Face folder.

The adapter between our training state and the Hugging Face layout: DeepSpeed's
consolidation gives the full fp32 state dict, which is loaded strictly into the
architecture the checkpoint describes, saved as safetensors with the tokenizer
and a generation config, then read back and checked against the logits the
trained engine produced on a fixed held-out batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

from steps.checkpoint import newest_checkpoint
from steps.domain_tokenizer import load_tokenizer

LOGITS_TOLERANCE = 1e-4
"""Largest allowed absolute logit difference between converted and trained model (fp32 on CPU)."""


class ConversionError(RuntimeError):
    """A checkpoint that cannot be converted, or a conversion that does not reproduce training."""


def _check_tensors(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConversionError(
            f"checkpoint keys differ from the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, tensor in state.items():
        if tensor.numel() == 0 or tuple(tensor.shape) != tuple(expected[name].shape):
            raise ConversionError(
                f"{name}: checkpoint tensor has shape {tuple(tensor.shape)}, the architecture expects "
                f"{tuple(expected[name].shape)}; was it saved from ZeRO-3 without gathering?"
            )
    return {"tensors": len(state), "parameters": sum(t.numel() for t in state.values())}


def consolidate(checkpoint_root: Path) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    """The newest complete checkpoint, its manifest, and its full fp32 state dict."""
    found = newest_checkpoint(checkpoint_root)
    if found is None:
        raise ConversionError(f"{checkpoint_root} holds no complete checkpoint (none has a checkpoint.json)")
    folder, manifest = found
    state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_root), tag=manifest["tag"])
    return folder, manifest, state


def logits_difference(model: torch.nn.Module, verify_file: Path) -> float:
    """Largest absolute difference between the model's logits and the trained engine's."""
    reference = torch.load(verify_file, weights_only=True)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=reference["input_ids"]).logits.float()
    return float((logits - reference["logits"]).abs().max())


def run_convert(train_dir: Path, tokenizer_dir: Path, out_dir: Path, max_shard_size: str = "200MB") -> dict[str, Any]:
    """Write `out_dir` as a Hugging Face model folder and return the verification record."""
    folder, manifest, state = consolidate(train_dir / "checkpoints")
    config = AutoConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    shapes = _check_tensors(skeleton, state)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state, strict=True)
    del state

    tokenizer = load_tokenizer(tokenizer_dir)
    model.generation_config = GenerationConfig(
        do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), max_shard_size=max_shard_size)
    tokenizer.save_pretrained(str(out_dir))
    del model

    reloaded = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32)
    difference = logits_difference(reloaded, train_dir / "verify_logits.pt")
    record = {
        "checkpoint": folder.name,
        "step": manifest["step"],
        "trained_world_size": manifest["world_size"],
        **shapes,
        "max_logit_difference": difference,
        "tolerance": LOGITS_TOLERANCE,
        "logits_match": difference <= LOGITS_TOLERANCE,
        "files": sorted(p.name for p in out_dir.iterdir()),
    }
    if not record["logits_match"]:
        raise ConversionError(
            f"converted model's logits differ from the trained engine's by {difference:.3g} "
            f"(tolerance {LOGITS_TOLERANCE}); the checkpoint {folder} does not hold the trained weights"
        )
    (out_dir / "conversion.json").write_text(json.dumps(record, indent=1))
    return record
