"""A GGUF file as model.base_model: named by path or inside a package, dequantized by prepare into safetensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from steps.formats.gguf_source import SMOLLM2, gguf_file, read_gguf_note
from steps.formats.model import load_pretrained
from steps.prepare.base_model import store_base_model
from tests.support.smollm2 import needs_smollm2


def test_a_missing_gguf_file_or_package_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model.base_model = '.*missing.gguf': no GGUF file at"):
        store_base_model(str(tmp_path / "missing.gguf"), tmp_path / "copy")
    with pytest.raises(FileNotFoundError, match=r"package 'no_such_pkg' is not installed; install it"):
        gguf_file("package:no_such_pkg/model.gguf")
    assert read_gguf_note(tmp_path) is None  # an ordinary folder carries no precision note


@pytest.mark.slow
@needs_smollm2
def test_smollm2_gguf_becomes_a_tied_safetensors_folder(smollm2: Path) -> None:
    # The session's one dequantization: store_base_model(SMOLLM2, <folder>), as prepare runs it.
    assert (smollm2 / "model.safetensors").is_file() and "lost precision" in read_gguf_note(smollm2)
    model = load_pretrained(smollm2)
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.get_input_embeddings().weight
    source = gguf_file(SMOLLM2)
    original = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3156, 314, 253, 8708]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)
