"""Conversion's planning: shards in order and within the size, and the size setting's validation."""

from __future__ import annotations

import pytest
import torch

from steps.config import ConfigError, TuneConfig
from steps.convert.consolidate import plan_shards


def test_shards_keep_order_and_respect_the_size() -> None:
    shapes = {"a": torch.Size([10]), "b": torch.Size([10]), "c": torch.Size([30]), "d": torch.Size([5])}
    assert plan_shards(shapes, torch.float32, 80) == [["a", "b"], ["c"], ["d"]]  # c alone exceeds 80 bytes
    assert plan_shards(shapes, torch.bfloat16, 1000) == [["a", "b", "c", "d"]]


def test_a_bad_shard_size_names_the_field() -> None:
    with pytest.raises(ConfigError, match="convert.max_shard_size.*'12 parsecs'"):
        TuneConfig().with_overrides(**{"convert.max_shard_size": "12 parsecs"})
