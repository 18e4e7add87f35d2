"""Settings that used to pass validation and fail after training now fail at once, naming what to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from steps.config import ConfigError, EvaluateConfig, validate_config, write_config
from steps.evaluate.probes import cwe_probes
from steps.formats.cwe_catalogue import bundled_catalogue_path
from steps.formats.dataset import DATASET_SUMMARY_FILE
from steps.prepare.__main__ import main as prepare_main
from steps.prepare.corpus import CorpusError
from steps.prepare.pipeline import run_prepare
from tests.support.corpus_files import prose

# Short documents: enough text for blocks on both sides, none long enough for a 200-token prompt.
SHORT = {
    "min_chars": 40,
    "vocab_size": 300,
    "block_size": 16,
    "num_proc": 1,
    "validation_fraction": 0.3,
    "prompt_tokens": 200,
}


def _short_corpus(root: Path) -> Path:
    root.mkdir()
    for i in range(30):
        (root / f"{i}.txt").write_text(prose(i, 12))
    return root


def test_no_held_out_prompt_fails_prepare_naming_prompt_tokens(tmp_path: Path) -> None:
    data = validate_config({"data": {"corpus": str(_short_corpus(tmp_path / "corpus")), **SHORT}}).data
    with pytest.raises(CorpusError, match=r"data\.prompt_tokens = 200 needs documents of at least 208 tokens"):
        run_prepare(data, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset" / DATASET_SUMMARY_FILE).exists()  # nothing that looks finished


def test_a_prompt_file_makes_held_out_prompts_optional(tmp_path: Path) -> None:
    corpus = _short_corpus(tmp_path / "corpus")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "The loader"}) + "\n")
    config = validate_config({"data": {"corpus": str(corpus), **SHORT}, "evaluate": {"prompt_file": str(prompts)}})
    prepare_main(["--config", str(write_config(config, tmp_path / "run.json")), "--out", str(tmp_path / "out")])
    summary = json.loads((tmp_path / "out" / "dataset" / DATASET_SUMMARY_FILE).read_text())
    assert summary["prompts"] == 0 and summary["blocks"]["validation"] > 0


@pytest.mark.parametrize("field", ["prompt_file", "probe_file"])
def test_a_missing_evaluate_file_fails_prepare_not_evaluate(tmp_path: Path, field: str) -> None:
    config = validate_config({"evaluate": {field: str(tmp_path / "nowhere.jsonl")}})
    with pytest.raises(ConfigError, match=rf"evaluate\.{field} = .*nowhere\.jsonl.*no such file"):
        prepare_main(["--config", str(write_config(config, tmp_path / "run.json")), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # stopped before reading the corpus


def test_more_probe_choices_than_names_fail_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"evaluate\.probe_choices: got 1000, input should be less than or equal"):
        validate_config(yaml.safe_load("evaluate: {probe_choices: 1000}"))
    # The most that validation allows is drawn from the catalogue without running out of names.
    most = EvaluateConfig.model_fields["probe_choices"].metadata[-1].le
    probes = cwe_probes(bundled_catalogue_path(), set(), count=4, choices=most, seed=0)
    assert probes and all(len(set(p.choices)) == most for p in probes)


def test_an_odd_head_dimension_fails_validation_not_model_build() -> None:
    with pytest.raises(ConfigError, match=r"model\.hidden_size \(36\) / model\.num_heads \(4\) = 9: .* must be even"):
        validate_config({"model": {"hidden_size": 36, "num_heads": 4, "num_kv_heads": 4}})
    validate_config({"model": {"hidden_size": 40, "num_heads": 4, "num_kv_heads": 4}})  # head_dim 10 is fine
