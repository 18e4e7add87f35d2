"""The one typed configuration of the pipeline, nested by concern.

Every field has a default and a short docstring. `parse_config_text` is what the
flow hands to Metaflow's `Config(parser=...)`, so a bad file fails before any
step runs; `load_config` reads the same schema from a path for the stage
entrypoints, which run without Metaflow. The sections live beside this file:
`stages.py` (data, model, train, deepspeed, convert, evaluate), `compute.py` and
`run.py` (the config's name, for the run's tags).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, model_validator

from steps.config.base import ConfigError, Section
from steps.config.compute import (
    TARGETS,
    BatchCompute,
    ComputeConfig,
    ComputeTarget,
    KubernetesCompute,
    LocalCompute,
    SageMakerCompute,
    StepCompute,
)
from steps.config.instruct import InstructConfig
from steps.config.run import RunConfig
from steps.config.stages import (
    DEFAULT_CORPUS,
    ConvertConfig,
    DataConfig,
    DeepSpeedConfig,
    EvaluateConfig,
    ModelConfig,
    TrainConfig,
    parse_size,
)

__all__ = [
    "DEFAULT_CORPUS",
    "BatchCompute",
    "ComputeConfig",
    "ComputeTarget",
    "ConfigError",
    "ConvertConfig",
    "DataConfig",
    "DeepSpeedConfig",
    "EvaluateConfig",
    "InstructConfig",
    "KubernetesCompute",
    "LocalCompute",
    "ModelConfig",
    "SageMakerCompute",
    "RunConfig",
    "StepCompute",
    "TrainConfig",
    "TuneConfig",
    "load_config",
    "parse_config_text",
    "parse_size",
    "validate_config",
    "write_config",
]


class TuneConfig(Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    convert: ConvertConfig = ConvertConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    instruct: InstructConfig = InstructConfig()
    compute: ComputeConfig = ComputeConfig()
    run: RunConfig = RunConfig()

    @model_validator(mode="after")
    def _multi_node_fits_compute(self) -> TuneConfig:
        for name in ("train", "instruct"):  # instruction tuning runs on train's ranks per machine
            placed = getattr(self.compute, name)
            if placed.target in ("batch", "kubernetes") and placed.gpus and placed.gpus != self.train.nproc_per_node:
                raise ValueError(
                    f"compute.{name}.gpus ({placed.gpus}) must equal train.nproc_per_node "
                    f"({self.train.nproc_per_node}): torchrun starts one process per GPU"
                )
        return self

    @model_validator(mode="after")
    def _something_to_tune(self) -> TuneConfig:
        if self.train.max_steps == 0 and not self.instruct.enabled:
            raise ValueError(
                "train.max_steps is 0 and instruct.instructions is empty: the run would tune nothing; "
                "give train.max_steps > 0, or instruction data in instruct.instructions"
            )
        if self.train.max_steps == 0 and self.model.base_model is None:
            raise ValueError(
                "train.max_steps is 0 (no continued pretraining) and model.base_model is empty: instruction tuning "
                "would start from untrained weights; give model.base_model, or train.max_steps > 0"
            )
        return self

    @property
    def pretrains(self) -> bool:
        """Whether the run continues pretraining (train.max_steps > 0) before any instruction tuning."""
        return self.train.max_steps > 0

    @model_validator(mode="after")
    def _block_fits_positions(self) -> TuneConfig:
        # A base model's positions are in its config.json: steps.formats.model_folder checks those.
        if self.model.base_model is None and self.data.block_size > self.model.max_position_embeddings:
            raise ValueError(
                f"data.block_size ({self.data.block_size}) is larger than model.max_position_embeddings "
                f"({self.model.max_position_embeddings}); lower the block size or raise the positions"
            )
        return self

    def with_overrides(self, **dotted: Any) -> TuneConfig:
        """A validated copy with `section.field` values replaced; None leaves a field alone."""
        raw = self.model_dump()
        for key, value in dotted.items():
            if value is None or value == "":
                continue
            section, field = key.split(".")
            raw[section][field] = value
        return validate_config(raw)


def _describe(error: dict[str, Any]) -> str:
    where = error["loc"]
    # A compute section's target is part of pydantic's location (compute.train.sagemaker.volume_gb), not of ours.
    target = where[2] if len(where) > 2 and where[0] == "compute" and where[2] in TARGETS else None
    loc = [part for k, part in enumerate(where) if not (target and k == 2)]
    field = ".".join(str(part) for part in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{field}: unknown field; check the spelling against steps/config/"
    if error["type"] == "missing":
        return f"{field}: required" + (f" for target {target!r}" if target else "")
    if error["type"] == "value_error":
        message = error["msg"].removeprefix("Value error, ")
        if loc and not message.startswith(f"{loc[0]}."):  # a section's own check names its fields only
            return "\n  ".join(f"{field}.{line}" for line in message.split("\n"))
        return message
    return f"{field}: got {error.get('input')!r}, {error['msg'].lower()}"


def validate_config(raw: Any, source: str = "config") -> TuneConfig:
    """Validate a mapping against the schema, with all problems in one message."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return TuneConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"invalid configuration in {source}:\n  {problems}") from None


def parse_config_text(text: str) -> dict[str, Any]:
    """Metaflow `Config` parser: YAML (or JSON) text to a validated, fully defaulted dict."""
    return validate_config(_yaml(text, "config")).model_dump()


def _yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # PyYAML's own message quotes the lines around the error: a config's values (a token pasted in by
        # mistake) would go wherever this error is shown. The position and the problem say enough.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "it cannot be parsed"
        raise ConfigError(f"{source} is not valid YAML{where}: {problem}") from None


def load_config(path: str | Path) -> TuneConfig:
    """Read and validate a YAML or JSON config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return validate_config(_yaml(text, str(path)), source=str(path))


def write_config(config: TuneConfig, path: str | Path) -> Path:
    """Write the resolved config as JSON for the stage entrypoints."""
    path = Path(path)
    path.write_text(json.dumps(config.model_dump(), indent=2))
    return path
