"""Training settings that must be right before any rank starts: offload, precision, FLOPs and peaks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.config import ConfigError, validate_config
from steps.train.deepspeed_config import build_deepspeed_config, offloads_optimizer
from steps.train.metrics import flops_per_token, peak_tflops
from steps.train.optimization import check_dtype


def test_offload_from_our_config_reaches_deepspeed() -> None:
    config = validate_config(
        {"deepspeed": {"zero_stage": 3, "offload_optimizer": "nvme", "offload_param": "cpu", "nvme_path": "/nvme"}}
    )
    zero = build_deepspeed_config(config, world_size=2)["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "nvme" and zero["offload_optimizer"]["nvme_path"] == "/nvme"
    assert zero["offload_param"]["device"] == "cpu"
    assert offloads_optimizer({"zero_optimization": zero})


def test_offload_left_unset_keeps_the_users_json() -> None:
    config = validate_config({"deepspeed": {"zero_stage": 3, "config_file": "configs/deepspeed/zero3_offload.json"}})
    assert offloads_optimizer(build_deepspeed_config(config, world_size=2))
    assert not offloads_optimizer(build_deepspeed_config(validate_config({}), world_size=2))


def test_offload_disagreeing_with_the_users_json_is_a_conflict() -> None:
    config = validate_config(
        {
            "deepspeed": {
                "zero_stage": 3,
                "config_file": "configs/deepspeed/zero3_offload.json",
                "offload_optimizer": "none",
            }
        }
    )
    with pytest.raises(ConfigError, match="zero_optimization.offload_optimizer.device = 'cpu' conflicts"):
        build_deepspeed_config(config, world_size=2)


@pytest.mark.parametrize(
    ("deepspeed", "expected"),
    [
        ({"zero_stage": 2, "offload_param": "cpu"}, "parameter offload needs zero_stage 3"),
        ({"zero_stage": 0, "offload_optimizer": "cpu"}, "offload_optimizer needs zero_stage 1, 2 or 3"),
        ({"zero_stage": 3, "offload_param": "nvme"}, "deepspeed.nvme_path: required"),
    ],
)
def test_impossible_offload_is_refused_with_the_field(deepspeed: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        validate_config({"deepspeed": deepspeed})


def test_fp16_on_cpu_is_refused_before_training() -> None:
    with pytest.raises(ConfigError, match="train.dtype: got 'fp16'"):
        check_dtype(validate_config({"train": {"dtype": "fp16"}}))
    check_dtype(validate_config({"train": {"dtype": "fp32"}}))


def test_model_flops_follow_the_architecture() -> None:
    # 6 N for the matmuls plus 12 L H S for attention scores (PaLM appendix B).
    assert flops_per_token(1_000_000, num_layers=2, hidden_size=64, seq_len=128) == 6e6 + 12 * 2 * 64 * 128


def test_peak_is_configurable_and_unknown_on_cpu() -> None:
    assert peak_tflops(validate_config({})) is None
    assert peak_tflops(validate_config({"train": {"peak_tflops": 123.0}})) == 123.0


def test_user_json_may_repeat_our_values(tmp_path: Path) -> None:
    user_json = tmp_path / "ds.json"
    user_json.write_text(json.dumps({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    config = validate_config(
        {"deepspeed": {"zero_stage": 2, "config_file": str(user_json), "offload_optimizer": "cpu"}}
    )
    assert build_deepspeed_config(config, world_size=1)["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
