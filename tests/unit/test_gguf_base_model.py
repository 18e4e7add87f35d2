"""A GGUF file as model.base_model: named by path or inside a package, dequantized once per run into safetensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from steps.formats import model_folder
from steps.formats.gguf_source import SMOLLM2, gguf_file, read_gguf_note
from steps.formats.model import load_pretrained
from tests.support.smollm2 import DequantizedSmolLM2, needs_smollm2


def test_a_missing_gguf_file_or_package_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model.base_model = '.*missing.gguf': no GGUF file at"):
        model_folder.resolve_base_model(str(tmp_path / "missing.gguf"), tmp_path / "copy")
    with pytest.raises(FileNotFoundError, match=r"package 'no_such_pkg' is not installed; install it"):
        gguf_file("package:no_such_pkg/model.gguf")
    assert read_gguf_note(tmp_path) is None  # an ordinary folder carries no precision note


@pytest.mark.slow
@needs_smollm2
def test_smollm2_gguf_becomes_a_tied_safetensors_folder_once_per_run(
    smollm2: DequantizedSmolLM2, tmp_path: Path, monkeypatch
) -> None:
    # The session's one dequantization: resolve_base_model(SMOLLM2, <scratch>, <a run's storage>).
    storage, folder = smollm2.storage, smollm2.converted
    assert (folder / "model.safetensors").is_file() and "lost precision" in read_gguf_note(folder)
    model = load_pretrained(folder)
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.get_input_embeddings().weight
    source = gguf_file(SMOLLM2)
    original = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3156, 314, 253, 8708]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("dequantized again although the run's storage holds the folder")

    monkeypatch.setattr(model_folder, "run_module", no_second_conversion)
    again = model_folder.resolve_base_model(SMOLLM2, tmp_path / "again", storage)
    assert (again / "gguf_source.json").read_text() == (folder / "gguf_source.json").read_text()
