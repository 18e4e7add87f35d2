"""The tags that name a run in the Metaflow UI and client: its model, its corpus and its config's name.

They are Metaflow's own user tags on the run, which the UI's run list filters by and the client selects by
(`Flow("TuneFlow").runs("corpus:cwe")`).
"""

from __future__ import annotations

from metaflow import current

from steps.config import TuneConfig

MAX_TAG_CHARS = 500
"""Metaflow refuses a longer tag (metaflow/tagging_util.py, MAX_TAG_SIZE)."""


def run_tags(config: TuneConfig) -> list[str]:
    """`model:<base model or from-scratch>`, `corpus:<corpus>` and, when the config has a name, `config:<name>`."""
    tags = [_tag("model", config.model.base_model or "from-scratch"), _tag("corpus", config.data.corpus)]
    if config.run.name:
        tags.append(f"config:{config.run.name}")
    return tags


def _tag(key: str, value: str) -> str:
    value = value.rstrip("/") or value  # s3://bucket/corpus/ and s3://bucket/corpus are the same corpus
    tag = f"{key}:{value}"
    if len(tag) > MAX_TAG_CHARS:  # a deep path: its end names it
        tag = f"{key}:…{value[len(tag) - MAX_TAG_CHARS + 1 :]}"
    return tag


def tag_run(config: TuneConfig) -> None:
    """Put the run's tags on it. The start step does so; the end step again, for a run made by `resume`, which
    clones start instead of running it (adding a tag the run has is a no-op)."""
    current.run.add_tags(run_tags(config))
