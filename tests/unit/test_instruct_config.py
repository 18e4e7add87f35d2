"""The instruct config section: defaults, and messages that name the field, the value and what is allowed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from steps.config.instruct import InstructConfig


def test_defaults_skip_instruction_tuning_and_pick_the_methods_learning_rate() -> None:
    config = InstructConfig()
    assert not config.enabled and config.method == "full"
    assert config.peak_learning_rate == 2e-5
    assert InstructConfig(method="lora").peak_learning_rate == 2e-4
    assert InstructConfig(method="lora", learning_rate=1e-3).peak_learning_rate == 1e-3
    assert InstructConfig(instructions="cwe").enabled
    # A blank source or template is the same as none: `instructions: ""` in YAML skips, not fails.
    assert not InstructConfig(instructions="  ").enabled and InstructConfig(chat_template="").chat_template is None


def test_lora_targets_as_peft_takes_them() -> None:
    assert InstructConfig().lora_targets == "all-linear"
    assert InstructConfig(lora_target_modules=["q_proj", "v_proj"]).lora_targets == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"lora_target_modules": []}, "instruct.lora_target_modules: got []; name at least one module"),
        ({"lora_target_modules": ["q_proj", " "]}, "name at least one module"),
        ({"lora_target_modules": ["all-linear", "q_proj"]}, "'all-linear' already covers every linear layer"),
        ({"warmup_steps": 50, "max_steps": 10}, "instruct.warmup_steps (50) is more than instruct.max_steps (10)"),
        ({"method": "qlora"}, "Input should be 'full' or 'lora'"),
        ({"lora_dropout": 1.0}, "less than 1"),
        ({"validation_fraction": 0.5}, "less than 0.5"),
        ({"choices": 1}, "greater than or equal to 2"),
        ({"seq_length": 8}, "greater than or equal to 16"),
        ({"learning_rate": 0}, "greater than 0"),
        ({"cwe_phrasings": 9}, "less than or equal to 4"),
        ({"lora_rnak": 8}, "Extra inputs are not permitted"),
    ],
)
def test_bad_values_are_named(fields: dict, expected: str) -> None:
    with pytest.raises(ValidationError) as error:
        InstructConfig(**fields)
    assert expected in str(error.value)
