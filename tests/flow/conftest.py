"""The flow tier: every test below this folder is marked `flow`."""

# torch first: imported after a metaflow.Runner has run in this process (as the session fixtures do when a
# flow test file runs on its own), torch 2.13 fails on Python 3.11 in typing ("Type parameter ~_R without a
# default follows type parameter with a default"), through metaflow's vendored typing_extensions. In the whole
# suite the unit tests' imports load torch first.
import torch  # noqa: F401

from tests.support.tiers import mark_folder


def pytest_collection_modifyitems(items) -> None:
    mark_folder(__file__, items, "flow")
