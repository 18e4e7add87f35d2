"""The flow tier: every test below this folder is marked `flow`."""

from tests.support.tiers import mark_folder


def pytest_collection_modifyitems(items) -> None:
    mark_folder(__file__, items, "flow")
