"""A no-op with conversion's footprint before any weight is read, the baseline its peak memory is measured against.

    python -m tests.support.convert_memory_baseline CHECKPOINT_FOLDER

It imports what conversion imports and builds the checkpoint's architecture on
the meta device (importing a model's modelling code alone costs ~100 MB of RSS),
so subtracting its peak from conversion's leaves the memory that holds weights.
"""

from __future__ import annotations

import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM

import steps.convert.consolidate  # noqa: F401  (its imports are part of the baseline)


def main(argv: list[str] | None = None) -> None:
    (folder,) = argv if argv is not None else sys.argv[1:]
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        AutoModelForCausalLM.from_config(config)


if __name__ == "__main__":
    main()
