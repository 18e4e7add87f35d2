"""A GGUF file as a base model: dequantized once into a Hugging Face safetensors folder.

transformers reads GGUF (`from_pretrained(folder, gguf_file=...)`, with the `gguf`
package) and dequantizes it to fp32, but refuses to `save_pretrained` the result
("quantized with gguf ... not serializable"). So the weights are copied into a plain
model built from the same config, which saves like any other; the tokenizer is saved
beside them and `gguf_source.json` records where the weights came from, with the note
the cards show: quantized weights have lost precision that dequantizing cannot restore.

Prepare calls `dequantize_gguf` to store a GGUF base model (`steps.prepare.base_model`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gguf
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from steps.formats.gguf_source import GGUF_SOURCE_FILE, quantization_note
from steps.runtime.storage.manifest import file_sha256


def dequantize_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Write `out_dir` as a Hugging Face model folder (fp32 safetensors, config, tokenizer) from a GGUF file."""
    folder, name = str(gguf_file.parent), gguf_file.name
    with _each_made_once():
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved weights are plain fp32; nothing to dequantize on load
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # A tied output layer has no weight of its own in the state dict; anything else missing is a bug.
    if unexpected or [key for key in missing if not (config.tie_word_embeddings and key == "lm_head.weight")]:
        raise ValueError(
            f"{gguf_file}: dequantized weights do not fit the model (missing {missing}, extra {unexpected})"
        )
    plain.tie_weights()
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    record = {
        "gguf_file": name,
        "sha256": file_sha256(gguf_file),
        "parameters": sum(p.numel() for p in plain.parameters()),
        "note": quantization_note(name),
    }
    (out_dir / GGUF_SOURCE_FILE).write_text(json.dumps(record, indent=1))
    return out_dir


@contextmanager
def _each_made_once() -> Iterator[None]:
    """transformers parses the GGUF file's metadata anew for the weights (twice), the config and the tokenizer,
    and builds gguf's tensor-name map once per module of the model (397 times for SmolLM2); made once each,
    SmolLM2-135M dequantizes in well under half the time, into the same bytes (bench/gguf_dequantize.py measures
    both). Within one dequantization the file and the map are the same each time. transformers imports
    both from `gguf` when it calls them, and only reads what they return."""
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.cache(reader)
    gguf.get_tensor_name_map = functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map
