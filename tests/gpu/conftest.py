"""The gpu tier: marked `gpu`, and skipped where there is no CUDA device (run on the GPU machine)."""

import pytest
import torch

from tests.support.tiers import mark_folder


def pytest_collection_modifyitems(items) -> None:
    mark_folder(__file__, items, "gpu")
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        mark_folder(__file__, items, skip)
