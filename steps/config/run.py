"""The config's own name: the flow tags every run `config:<name>`, which the Metaflow UI and client filter by."""

from __future__ import annotations

import re

from pydantic import field_validator

from steps.config.base import Section

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class RunConfig(Section):
    name: str | None = None
    """A short name for this configuration (`default`, `smollm2`, `my-team-llama`): every run of it is tagged
    `config:<name>` beside `model:` and `corpus:` (flows/run_tags.py). Letters, digits, `.`, `_` and `-`, at most
    64; empty leaves the config tag off."""

    @field_validator("name")
    @classmethod
    def _tag_safe(cls, name: str | None) -> str | None:
        if name is not None and not NAME.fullmatch(name):
            raise ValueError(
                f"run.name: got {name!r}; use up to 64 letters, digits, '.', '_' or '-', starting with a letter or "
                "digit (e.g. 'my-team-llama')"
            )
        return name
