"""The LoRA adapter of a model (PEFT): adapters on a Hugging Face model, saved in PEFT's own folder format
(`adapter_config.json`, `adapter_model.safetensors`), loaded back, and merged into the base weights.

Shared by train (which wraps the model it tunes, `steps.train.lora`), convert (which puts the trained
adapter tensors of a ZeRO checkpoint back into a wrapped base model, publishes the adapter and merges it)
and evaluate (which may score base + adapter). In a ZeRO checkpoint the adapter tensors are named as the
wrapped module has them (`base_model.model.<base name>.lora_A.default.weight`): `adapter_names`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.constants import EMBEDDING_LAYER_NAMES
from transformers import PreTrainedModel

from steps.config.instruct import InstructConfig

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class AdapterError(ValueError):
    """Adapter weights that do not fit the adapters of the wrapped model."""


def lora_config(instruct: InstructConfig) -> LoraConfig:
    return LoraConfig(
        r=instruct.lora_rank,
        lora_alpha=instruct.lora_alpha,
        lora_dropout=instruct.lora_dropout,
        target_modules=instruct.lora_targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def wrap_with_saved_config(model: PreTrainedModel, folder: Path) -> PeftModel:
    """`model` with adapters as the `adapter_config.json` in `folder` describes them (a LoRA checkpoint's own):
    their values are then loaded with `load_adapter_weights`."""
    return get_peft_model(model, LoraConfig.from_pretrained(str(folder)))


def wrap_with_lora(model: PreTrainedModel, instruct: InstructConfig) -> PeftModel:
    """`model` with adapters on instruct.lora_target_modules; only the adapters are trainable.

    The adapters' initial A matrices are drawn from torch's global generator: seed it first for the same
    adapters on every rank and in every run (their B matrices start at zero, so the model's output does not
    change at first).
    """
    try:
        wrapped = get_peft_model(model, lora_config(instruct))
    except ValueError as exc:  # PEFT names the modules it did not find; that text is ours to show
        raise AdapterError(f"instruct.lora_target_modules = {instruct.lora_target_modules}: {exc}") from None
    if not any(p.requires_grad for p in wrapped.parameters()):
        raise AdapterError(f"instruct.lora_target_modules = {instruct.lora_target_modules} matched no module")
    return wrapped


def adapter_names(model: PeftModel) -> list[str]:
    """The adapter tensors' names as the wrapped module (and a ZeRO checkpoint of it) has them."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def load_adapter_weights(model: PeftModel, tensors: Mapping[str, torch.Tensor]) -> None:
    """Put trained adapter tensors (named as `adapter_names`, e.g. gathered from a ZeRO checkpoint) into `model`.

    Every adapter must be given with its shape, and nothing else: a base weight among them would mean the
    checkpoint trained more than adapters, and would silently replace the base here.
    """
    expected = dict(model.named_parameters())
    wanted = set(adapter_names(model))
    missing, unexpected = sorted(wanted - set(tensors)), sorted(set(tensors) - wanted)
    if missing or unexpected:
        raise AdapterError(
            f"adapter weights do not fit the model's adapters: {len(missing)} missing (first: {missing[:2]}), "
            f"{len(unexpected)} not adapters (first: {unexpected[:2]}); check instruct.lora_* against the run "
            "that trained them"
        )
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise AdapterError(
                f"{name}: shape {tuple(tensor.shape)}, the model's adapter is {tuple(expected[name].shape)}"
            )
    with torch.no_grad():
        for name, tensor in tensors.items():
            expected[name].copy_(tensor)


def save_adapter(model: PeftModel, out_dir: Path, base_model: str | None = None) -> Path:
    """The adapter in PEFT's own format (`adapter_config.json`, `adapter_model.safetensors`), loadable with
    `PeftModel.from_pretrained(base, out_dir)`; `base_model` is recorded as its base_model_name_or_path."""
    out_dir = Path(out_dir)
    if base_model is not None:
        model.peft_config["default"].base_model_name_or_path = base_model
    # PEFT's "auto" also saves the embeddings when it cannot rule out a resized vocabulary, which it tries to tell
    # by looking base_model_name_or_path up on the Hugging Face Hub (a network call, and a warning for any local
    # or s3:// name). The vocabulary never changes here; the embeddings are saved when adapters are on them.
    adapted_embeddings = any(layer in name for name in adapter_names(model) for layer in EMBEDDING_LAYER_NAMES)
    model.save_pretrained(str(out_dir), save_embedding_layers="auto" if adapted_embeddings else False)
    return out_dir


def load_adapter(base: PreTrainedModel, folder: Path) -> PeftModel:
    """A saved adapter on its base model, as a user loads it (`PeftModel.from_pretrained`)."""
    return PeftModel.from_pretrained(base, str(folder))


def merged_model(model: PeftModel) -> PreTrainedModel:
    """The base model with the adapters folded into its weights (W + B A * alpha / r): a plain model again.

    Merges in place: `model` is consumed.
    """
    return model.merge_and_unload(progressbar=False, safe_merge=True)
