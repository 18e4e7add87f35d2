"""A LoRA checkpoint (adapters only, `steps.train.lora`) to a merged Hugging Face model and the PEFT adapter.

The checkpoint holds the trained adapters and the adapter config; the weights they were trained on are the
`--base-model` folder (the continued-pretrained model, or the base model), whose fingerprint must be the one
the checkpoint recorded. The adapters are put back on that model as PEFT wraps it, saved in PEFT's own
format (`<model>/adapter/`, loadable with `PeftModel.from_pretrained(base, that folder)`), and merged into
the weights (W + B A * alpha / r), which are written as any converted model. The whole base model is in
memory here, as it is in each training rank of a LoRA run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from steps.convert.zero_reader import ZeroCheckpointReader
from steps.formats.adapter_folder import (
    ADAPTER_CONFIG,
    AdapterError,
    load_adapter_weights,
    merged_model,
    save_adapter,
    wrap_with_saved_config,
)
from steps.formats.model import load_pretrained, state_dict_sha256

ADAPTER_FOLDER = "adapter"
"""Where in the converted model folder the PEFT adapter goes."""


class LoraCheckpointError(RuntimeError):
    """A LoRA checkpoint that cannot be put back on the weights given."""


def holds_adapters(checkpoint: Path) -> bool:
    """Whether a checkpoint folder is a LoRA run's: adapters and their config, no base weights."""
    return (Path(checkpoint) / ADAPTER_CONFIG).is_file()


def merged_lora_model(
    reader: ZeroCheckpointReader,
    checkpoint: Path,
    base_model: Path | None,
    init_sha256: str,
    out_dir: Path,
    source: str | None,
) -> torch.nn.Module:
    """The base model with the checkpoint's adapters merged; the adapter saved under `out_dir/adapter`.

    `source`: what the adapter records as its base model (`base_model_name_or_path`).
    """
    if base_model is None:
        raise LoraCheckpointError(
            f"{checkpoint} holds LoRA adapters only: convert needs --base-model, the model they were trained on"
        )
    model = load_pretrained(base_model).eval()
    if state_dict_sha256(model) != init_sha256:
        raise LoraCheckpointError(
            f"{base_model} is not the model the adapters of {checkpoint} were trained on (its fingerprint differs "
            "from the checkpoint's init_sha256); give the model instruction tuning started from"
        )
    wrapped = wrap_with_saved_config(model, checkpoint)
    names = [name for name in reader.shapes if name not in reader.buffers]
    try:
        load_adapter_weights(wrapped, dict(reader.gather(names)))
    except AdapterError as exc:
        raise LoraCheckpointError(f"{checkpoint}: {exc}") from None
    save_adapter(wrapped, out_dir / ADAPTER_FOLDER, base_model=source)
    return merged_model(wrapped)
