"""Where the project's own files are: the checkout that holds this package.

The configs (`configs/`, with the DeepSpeed JSONs that `deepspeed.config_file`
names relative to the repository), the flow and the container files live beside
`steps/`, not inside it; everything that needs one of them asks here.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "configs"
DEFAULT_CONFIG = CONFIGS / "default.yaml"
DEBUG_CONFIG = CONFIGS / "debug.yaml"
"""The tiny configuration the tests and quick checks share."""
FLOW_FILE = REPO_ROOT / "flows" / "tune_flow.py"
CONTAINERS = REPO_ROOT / "containers"
