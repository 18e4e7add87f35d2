"""The runner on a toy stage (tests/support/toy_stage.py): a new stage is its spec and its work, nothing else.

The spec below is all the toy needs to be fetched, launched, published and read back by `run_stage`, the same
way as prepare, train, convert and evaluate; the failure cases are the runner's own guards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.config import TuneConfig
from steps.dispatch.runner import Place, StageError, run_stage
from steps.results import Record
from steps.runtime.stage_spec import Output, StageSpec
from steps.runtime.storage import MANIFEST, StorageError, StoredDir, fetch, open_storage


class WordSummary(Record):
    words: int
    distinct: int


class WordResult(Record):
    counts: StoredDir
    word_summary: WordSummary


def toy(mode: str = "ok") -> StageSpec:
    return StageSpec(
        name="count_words",
        module="tests.support.toy_stage",
        launch="process",
        compute="evaluate",
        folder="count_words",
        result=WordResult,
        inputs=("words",),
        outputs=(Output("counts"),),
        summary=("word_summary", "summary.json"),
        args=("--mode", mode),
    )


@pytest.fixture
def run(tmp_path: Path) -> tuple[Place, StoredDir]:
    storage = open_storage(tmp_path / "run")
    (tmp_path / "words").mkdir()
    (tmp_path / "words" / "words.txt").write_text("phishing kit phishing lure")
    return Place(storage), storage.publish(tmp_path / "words", "words")


def test_a_stage_is_its_spec_and_its_work(run) -> None:
    place, words = run
    result = run_stage(toy(), TuneConfig(), place, {"words": words})
    assert isinstance(result, WordResult) and result.word_summary == WordSummary(words=4, distinct=3)
    assert result.counts.uri == place.storage.uri("count_words") and result.counts.files == 2
    assert (fetch(result.counts) / "counts.json").read_text() == '{"phishing": 2, "kit": 1, "lure": 1}'
    assert set(result.model_dump()) == {"counts", "word_summary"}  # the flow's artifacts, one per field


def test_a_summary_that_does_not_match_its_model_publishes_nothing(run) -> None:
    place, words = run
    with pytest.raises(StageError, match=r"count_words's summary summary.json does not match its model"):
        run_stage(toy("bad-summary"), TuneConfig(), place, {"words": words})
    assert place.storage.get_text(f"count_words/{MANIFEST}") is None


def test_a_stage_that_wrote_no_output_fails_naming_it(run) -> None:
    place, words = run
    with pytest.raises(StageError, match="count_words ended without writing its summary summary.json"):
        run_stage(toy("no-output"), TuneConfig(), place, {"words": words})


def test_an_input_that_is_not_the_folder_referenced_never_reaches_the_stage(run) -> None:
    place, words = run
    (Path(words.uri) / "words.txt").write_text("planted")
    with pytest.raises(StorageError, match="files differ from the manifest: changed words.txt"):
        run_stage(toy(), TuneConfig(), place, {"words": words})
    assert place.storage.get_text(f"count_words/{MANIFEST}") is None
