"""The tags that name a run in the Metaflow UI: model, corpus and config name, always ones Metaflow accepts."""

from __future__ import annotations

import pytest
from metaflow.tagging_util import validate_tags

from flows.run_tags import MAX_TAG_CHARS, run_tags
from steps.config import ConfigError, TuneConfig, load_config, parse_config_text
from steps.project_files import CONFIGS


def test_the_debug_config_names_model_corpus_and_itself(debug_config: TuneConfig) -> None:
    assert run_tags(debug_config) == ["model:from-scratch", "corpus:cwe", "config:debug"]


def test_every_shipped_config_has_a_name_matching_its_file() -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        assert f"config:{path.stem}" in run_tags(load_config(path)), path.name


def test_a_base_model_and_corpus_prefix_are_tagged_as_given_without_the_trailing_slash() -> None:
    config = TuneConfig().with_overrides(
        **{"model.base_model": "s3://acme-ml/models/llama-3.2-1b/", "data.corpus": "s3://acme-sec/threat-reports/"}
    )
    assert run_tags(config) == ["model:s3://acme-ml/models/llama-3.2-1b", "corpus:s3://acme-sec/threat-reports"]


def test_a_corpus_path_longer_than_metaflow_allows_keeps_its_end() -> None:
    deep = "/data/" + "/".join(f"level-{i:03d}" for i in range(80)) + "/incident-reports"
    tags = run_tags(TuneConfig().with_overrides(**{"data.corpus": deep}))
    validate_tags(tags)  # Metaflow's own check, which add_tags runs: a longer tag fails the start step
    corpus = next(t for t in tags if t.startswith("corpus:"))
    assert len(corpus) == MAX_TAG_CHARS and corpus.endswith("/incident-reports")


@pytest.mark.parametrize("name", ["my team", "-leading-dash", "x" * 65, "tags:nested"])
def test_a_name_that_cannot_be_a_tag_names_the_field_and_the_value(name: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config_text(f"run:\n  name: '{name}'\n")
    assert "run.name" in str(error.value) and repr(name) in str(error.value)
