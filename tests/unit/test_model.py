from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steps.config import ModelConfig
from steps.formats.model import build_model, check_vocabulary, initial_model, state_dict_sha256
from steps.formats.tokenizer_folder import load_tokenizer
from steps.prepare.base_model import store_base_model
from steps.prepare.tokenizer_training import load_base_tokenizer

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)


def test_initialisation_is_reproducible_and_seeded() -> None:
    first, second = build_model(TINY, 300, 0, 1), build_model(TINY, 300, 0, 1)
    assert state_dict_sha256(first) == state_dict_sha256(second)
    other = build_model(TINY.model_copy(update={"init_seed": 7}), 300, 0, 1)
    assert state_dict_sha256(other) != state_dict_sha256(first)
    assert first.config.num_key_value_heads == 1 and first.config.eos_token_id == 0


def test_tokenizer_larger_than_embedding_is_refused(prepared: Path) -> None:
    tokenizer = load_tokenizer(prepared / "tokenizer")
    with pytest.raises(ValueError, match="embedding has 300 rows"):
        check_vocabulary(build_model(TINY, 300, 0, 1), tokenizer)


def test_base_model_folder_is_the_starting_point(prepared: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(prepared / "tokenizer")
    base = build_model(TINY, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    base.save_pretrained(str(tmp_path / "base"))
    tokenizer.save_pretrained(str(tmp_path / "base"))
    (tmp_path / "base" / "pytorch_model.bin").write_bytes(b"pickled weights: never copied, never loaded")
    folder = store_base_model(str(tmp_path / "base"), tmp_path / "stored")
    assert folder == tmp_path / "stored" and not (folder / "pytorch_model.bin").exists()
    loaded = initial_model(TINY.model_copy(update={"hidden_size": 64}), folder, load_base_tokenizer(folder))
    assert state_dict_sha256(loaded) == state_dict_sha256(base)
    assert next(loaded.parameters()).dtype == torch.float32


def test_a_folder_without_config_is_not_a_base_model(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileNotFoundError, match=r"model.base_model = .*\(no config.json\)"):
        store_base_model(str(tmp_path / "folder"), tmp_path / "stored")
    assert not (tmp_path / "stored").exists()  # nothing half-copied left for the stage to publish
    with pytest.raises(FileNotFoundError, match=r"model.base_model = .*: no such folder"):
        store_base_model(str(tmp_path / "nowhere"), tmp_path / "stored")
    assert store_base_model(None, tmp_path / "none") is None and store_base_model("", tmp_path / "none") is None
