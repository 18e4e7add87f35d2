from __future__ import annotations

import pytest

from steps.evaluate import batches_per_rank, shard_indices


@pytest.mark.parametrize("count", [0, 1, 3, 5, 8, 13])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_prompt_goes_to_exactly_one_rank(count: int, world: int) -> None:
    shares = [shard_indices(count, world, rank) for rank in range(world)]
    assert sorted(i for share in shares for i in share) == list(range(count))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize(("count", "world", "batch", "calls"), [(3, 2, 1, 2), (5, 2, 2, 2), (5, 2, 4, 1), (0, 2, 4, 0)])
def test_every_rank_makes_the_same_number_of_calls(count: int, world: int, batch: int, calls: int) -> None:
    assert batches_per_rank(count, world, batch) == calls
    for rank in range(world):
        assert len(shard_indices(count, world, rank)) <= calls * batch
