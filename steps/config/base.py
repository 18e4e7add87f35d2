"""What every config section shares: unknown keys are errors, field docstrings are the documentation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration value that the schema does not allow."""


class Section(BaseModel):
    # Unknown keys are typos until proven otherwise: name them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
