from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from steps.config import ConfigError, TuneConfig, load_config, parse_config_text, validate_config
from steps.project_files import CONFIGS
from steps.train.deepspeed_config import build_deepspeed_config

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))
DEEPSPEED_FILES = sorted((CONFIGS / "deepspeed").glob("*.json"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    config = load_config(path)
    # Every file must also yield a DeepSpeed config without conflicts.
    assert build_deepspeed_config(config, world_size=2)["train_batch_size"] > 0


@pytest.mark.parametrize("path", DEEPSPEED_FILES, ids=lambda p: p.name)
def test_every_deepspeed_json_merges_with_its_stage(path: Path) -> None:
    stage = json.loads(path.read_text())["zero_optimization"]["stage"]
    config = validate_config({"deepspeed": {"zero_stage": stage, "config_file": str(path)}})
    merged = build_deepspeed_config(config, world_size=4)
    assert merged["zero_optimization"]["stage"] == stage
    assert merged["train_batch_size"] == config.train.micro_batch_size * 4


def test_zero_stage_5_names_the_field_and_allowed_values() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config_text("deepspeed:\n  zero_stage: 5\n")
    message = str(error.value)
    assert "deepspeed.zero_stage" in message and "5" in message and "0, 1, 2 or 3" in message


def test_all_problems_reported_at_once() -> None:
    text = yaml.safe_dump({"train": {"max_steps": -1, "lerning_rate": 1.0}, "model": {"hidden_size": 250}})
    with pytest.raises(ConfigError) as error:
        parse_config_text(text)
    message = str(error.value)
    assert "train.max_steps: got -1" in message
    assert "train.lerning_rate: unknown field" in message
    assert "model.hidden_size (250) must be divisible by model.num_heads (4)" in message


def test_not_yaml_and_not_mapping_are_clear(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config_text("data: [unclosed")
    # The position and the problem, never the lines around it: a value there may be a token pasted in by mistake.
    broken = tmp_path / "run.yaml"
    broken.write_text("data:\n  corpus: s3://bucket/x?token=hunter2-s3cr3t\n   vocab_size: 300\n")
    for parse in (lambda: load_config(broken), lambda: parse_config_text(broken.read_text())):
        with pytest.raises(ConfigError, match=r"not valid YAML at line 3, column 14: mapping values") as error:
            parse()
        assert "hunter2" not in str(error.value)
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config_text("- just\n- a list\n")


def test_overrides_apply_and_are_validated() -> None:
    config = TuneConfig().with_overrides(**{"data.corpus": "/corpus", "train.max_steps": 7, "model.base_model": ""})
    assert config.data.corpus == "/corpus" and config.train.max_steps == 7 and config.model.base_model is None
    with pytest.raises(ConfigError, match="train.max_steps"):
        TuneConfig().with_overrides(**{"train.max_steps": -3})


def test_parser_output_round_trips() -> None:
    parsed = parse_config_text("train: {max_steps: 9}")
    assert TuneConfig.model_validate(parsed).train.max_steps == 9
    assert parsed["deepspeed"]["config_file"] == "configs/deepspeed/zero2.json"


def test_deepspeed_json_conflict_is_an_error(tmp_path: Path) -> None:
    user_json = tmp_path / "ds.json"
    user_json.write_text(json.dumps({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 32}))
    config = validate_config({"deepspeed": {"zero_stage": 3, "config_file": str(user_json)}})
    with pytest.raises(ConfigError, match="train_micro_batch_size_per_gpu = 32 conflicts"):
        build_deepspeed_config(config, world_size=2)


def test_deepspeed_json_auto_values_are_filled(tmp_path: Path) -> None:
    user_json = tmp_path / "ds.json"
    user_json.write_text(json.dumps({"zero_optimization": {"stage": "auto"}, "gradient_clipping": "auto"}))
    config = validate_config({"deepspeed": {"zero_stage": 1, "config_file": str(user_json)}})
    merged = build_deepspeed_config(config, world_size=1)
    assert merged["zero_optimization"]["stage"] == 1 and merged["gradient_clipping"] == 1.0


def test_missing_deepspeed_json_names_the_field() -> None:
    config = validate_config({"deepspeed": {"config_file": "configs/deepspeed/nope.json"}})
    with pytest.raises(ConfigError, match="deepspeed.config_file"):
        build_deepspeed_config(config, world_size=1)


def test_skipping_pretraining_needs_instructions_and_a_base_model() -> None:
    with pytest.raises(ConfigError, match="train.max_steps is 0 and instruct.instructions is empty"):
        validate_config({"train": {"max_steps": 0}})
    with pytest.raises(ConfigError, match="would start from untrained weights; give model.base_model"):
        validate_config({"train": {"max_steps": 0}, "instruct": {"instructions": "cwe"}})
    config = validate_config(
        {"train": {"max_steps": 0}, "instruct": {"instructions": "cwe"}, "model": {"base_model": "/models/llama"}}
    )
    assert not config.pretrains and config.instruct.enabled
    assert TuneConfig().pretrains and not TuneConfig().instruct.enabled  # the default run does not instruction-tune


def test_instruction_tuning_is_placed_like_train() -> None:
    sagemaker = {"target": "sagemaker", "image": "i", "instance_type": "ml.g5.xlarge", "role_arn": "arn:aws:iam::1:r"}
    assert validate_config({"compute": {"instruct": sagemaker}}).compute.instruct.target == "sagemaker"
    with pytest.raises(ConfigError, match="compute.instruct.instance_count: got 2; the instruct job's hosts are"):
        validate_config({"compute": {"instruct": {**sagemaker, "instance_count": 2}}})
    batch = {"target": "batch", "image": "i", "gpus": 4}
    with pytest.raises(ConfigError, match=r"compute.instruct.gpus \(4\) must equal train.nproc_per_node \(2\)"):
        validate_config({"compute": {"instruct": batch}})
