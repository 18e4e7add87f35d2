"""The data order and the learning-rate schedule of training, without torchrun."""

from __future__ import annotations

import math

import pytest
import torch

from steps.config import ConfigError, TuneConfig
from steps.train.data_order import BlockOrder
from steps.train.optimization import build_optimizer, lr_lambda


def _stream(order: BlockOrder, steps: range) -> list[int]:
    """Every block read over `steps`, in the order the ranks and micro-batches read them."""
    return [
        block
        for step in steps
        for micro in range(order.accumulation)
        for rank in range(order.world_size)
        for block in order.indices(step, micro, rank)
    ]


def test_each_epoch_reads_every_block_once_across_ranks() -> None:
    order = BlockOrder(num_blocks=24, seed=7, micro_batch=2, world_size=3, accumulation=2)  # 12 blocks a step
    first_epoch, second_epoch = _stream(order, range(0, 2)), _stream(order, range(2, 4))
    assert sorted(first_epoch) == sorted(second_epoch) == list(range(24))
    assert first_epoch != second_epoch  # a fresh shuffle per epoch


def test_the_order_depends_only_on_seed_and_step() -> None:
    a = BlockOrder(50, seed=1, micro_batch=4, world_size=2, accumulation=1)
    b = BlockOrder(50, seed=1, micro_batch=4, world_size=2, accumulation=1)
    assert _stream(a, range(10, 12)) == _stream(b, range(10, 12))  # no need to replay steps 0-9
    assert _stream(BlockOrder(50, 2, 4, 2, 1), range(1)) != _stream(a, range(1))


def test_resume_on_another_world_size_continues_at_the_next_unread_block() -> None:
    before = BlockOrder(40, seed=3, micro_batch=2, world_size=4, accumulation=1)  # 8 blocks a step
    uninterrupted = _stream(before, range(0, 10))
    after = BlockOrder(40, seed=3, micro_batch=2, world_size=2, accumulation=1)  # 4 blocks a step
    after.resume_at(step=5, blocks_seen=before.position(5))
    resumed = _stream(after, range(5, 15))
    assert _stream(before, range(0, 5)) + resumed == uninterrupted


def _schedule(**train) -> TuneConfig:
    return TuneConfig().with_overrides(**{f"train.{k}": v for k, v in train.items()})


def test_warmup_then_cosine_down_to_the_floor() -> None:
    config = _schedule(max_steps=110, warmup_steps=10, learning_rate=1e-3, min_learning_rate=1e-4)
    factor = lr_lambda(config)
    assert factor(0) == pytest.approx(1 / 11) and factor(9) == pytest.approx(10 / 11)
    assert factor(10) == pytest.approx(1.0)  # the peak right after warmup
    assert factor(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway down the cosine
    assert factor(110) == pytest.approx(0.1) and factor(500) == pytest.approx(0.1)  # never below the floor
    assert all(factor(s) >= factor(s + 1) for s in range(10, 120))


def test_no_warmup_starts_at_the_peak() -> None:
    factor = lr_lambda(_schedule(max_steps=20, warmup_steps=0, learning_rate=1e-3, min_learning_rate=0.0))
    assert factor(0) == 1.0 and math.isclose(factor(20), 0.0, abs_tol=1e-12)


def test_norms_and_biases_are_not_decayed() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optimizer = build_optimizer(model, _schedule(weight_decay=0.1), offloaded=False)
    decayed, kept = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and [p.shape for p in decayed["params"]] == [torch.Size([4, 4])]
    assert kept["weight_decay"] == 0.0 and len(kept["params"]) == 3  # linear bias, norm weight and bias


def test_a_floor_above_the_peak_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"train.min_learning_rate \(0.0002\) is above train.learning_rate"):
        _schedule(learning_rate=2e-5, min_learning_rate=2e-4)


@pytest.mark.parametrize("peak", [2e-5, 2e-3, 1.0])
def test_the_schedule_never_exceeds_the_peak(peak: float) -> None:
    """Continued pretraining sets a small peak and leaves the floor alone: the floor follows the peak."""
    config = _schedule(max_steps=50, warmup_steps=5, learning_rate=peak)
    factor = lr_lambda(config)
    rates = [peak * factor(step) for step in range(60)]
    assert max(rates) == pytest.approx(peak) and all(rate <= peak * (1 + 1e-12) for rate in rates)
    assert rates[-1] == pytest.approx(0.1 * peak)  # the default floor: a tenth of the peak
