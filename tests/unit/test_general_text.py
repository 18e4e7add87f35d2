"""The forgetting check's general-domain sample: offline, configurable, packed like the domain's blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.config import EvaluateConfig
from steps.evaluate.general_text import PYTHON_DOCS, general_blocks, general_blocks_like, general_source
from steps.formats.tokenizer_folder import load_tokenizer


def test_the_python_reference_is_the_offline_default(prepared: Path) -> None:
    tokenizer = load_tokenizer(prepared / "tokenizer")
    settings = EvaluateConfig()
    assert general_source(settings, base_model=True) == PYTHON_DOCS
    assert general_source(settings, base_model=False) is None  # a model trained from scratch has nothing to forget
    assert general_blocks_like(settings, tokenizer, prepared / "dataset", base_model=False) == []
    blocks = general_blocks_like(settings, tokenizer, prepared / "dataset", base_model=True)
    assert len(blocks) == settings.general_blocks and {len(b) for b in blocks} == {128}  # the debug block size
    text = tokenizer.decode(blocks[0] + blocks[-1])
    assert "CWE" not in text and len(set(map(tuple, blocks))) == len(blocks)  # spread over the sample, no repeats


def test_a_users_text_file_or_none(prepared: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(prepared / "tokenizer")
    prose = tmp_path / "prose.txt"
    prose.write_text("The river ran past the old mill and into the valley.\n\n" * 200)
    blocks = general_blocks(EvaluateConfig(general_text=str(prose), general_blocks=3), tokenizer, 32, 0)
    assert len(blocks) == 3 and "river" in tokenizer.decode(blocks[1])
    assert general_blocks(EvaluateConfig(general_text=None), tokenizer, 32, 0) == []
    with pytest.raises(FileNotFoundError, match=r"evaluate.general_text = '.*nowhere.txt': no such file"):
        general_blocks(EvaluateConfig(general_text=str(tmp_path / "nowhere.txt")), tokenizer, 32, 0)
    with pytest.raises(ValueError, match="fewer than one block"):
        general_blocks(EvaluateConfig(general_text=str(prose)), tokenizer, 100_000, 0)
