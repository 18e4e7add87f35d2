"""Every step's card opened in a real headless Chromium: it fits a 1400-pixel window and shows its values.

Cards are built from typed results (tests/support/card_results.py) with the long unbroken values
real runs have: hashes, URIs, decoded sample blocks. Needs Debian's `chromium` (.ci/run installs it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import cards
from flows.live_card import LiveTrainCard
from tests.support import card_results as results
from tests.support.browser import WINDOW, card_html, open_in_chromium, required_chromium


@pytest.fixture(scope="module")
def browser() -> str:
    return required_chromium()


def _cards() -> dict[str, tuple[list, list[str]]]:
    """Each step's card components and values a reader must find on it."""
    end_refs = {"model": results.stored("convert/model").to_dict()}
    return {
        "prepare": (
            cards.prepare_card(results.prepare_result()),
            ["documents kept", "1353", "1240 / 553000 / 2163", "aws_access_key", results.LONG_LINE, "not a PDF"],
        ),
        "train": (cards.train_card(results.train_result()), ["final_loss", "2.345", "1228800", results.ROOT]),
        "convert": (
            cards.convert_card(results.convert_result()),
            ["max_logit_difference", "1.2e-06", "model.layers.3.self_attn.q_proj.weight"],
        ),
        "evaluate": (
            cards.evaluate_card(results.evaluate_result()),
            ["4334.42", "25.84", "0.483", "decoding greedy", results.LONG_LINE],
        ),
        "end": (
            cards.end_card(end_refs, results.eval_summary(), results.conversion(), results.train_summary()),
            ["4334.4 → 25.8", "probe choice_accuracy 0.265 → 0.483", "final loss 2.345"],
        ),
        "instruct": (cards.train_card(results.instruct_result()), ["sft", "lora", "921600", "instruct/train"]),
        "evaluate after instruction tuning": (
            cards.evaluate_card(results.instructed_evaluate_result()),
            ["after continued pretraining", "11.02", "questions all (48): contains_reference", "0.125"]
            + ["Sample conversations", "What is CWE-1004?", results.LONG_LINE, "a cookie flag"],
        ),
        "end after instruction tuning": (
            cards.end_card(
                end_refs,
                results.instructed_evaluate_result().eval_summary.model_dump(),
                None,
                None,
                (results.instruct_result().instruct_summary.model_dump(), results.conversion()),
            ),
            ["instruction tuning with LoRA: 80 steps", "base model 0.125, after continued pretraining 0.125"],
        ),
    }


@pytest.mark.parametrize("step", ["prepare", "train", "convert", "evaluate", "end", "instruct"])
def test_each_card_fits_the_window_and_shows_its_values(step: str, tmp_path: Path, browser: str) -> None:
    components, expected = _cards()[step]
    page = open_in_chromium(browser, card_html(components), screenshot=tmp_path / f"{step}.png")
    assert page.scroll_width <= WINDOW[0] == page.client_width, f"{step} card is {page.scroll_width} px wide"
    missing = [value for value in expected if value not in page.text]
    assert not missing, f"{step} card does not show {missing}"
    assert (tmp_path / f"{step}.png").stat().st_size > 0


@pytest.mark.parametrize("step", ["evaluate after instruction tuning", "end after instruction tuning"])
def test_instruction_tuning_cards_fit_the_window_and_show_their_values(step: str, tmp_path: Path, browser: str) -> None:
    test_each_card_fits_the_window_and_shows_its_values(step, tmp_path, browser)


def test_the_evaluate_card_shows_only_the_decoding_settings_in_effect(browser: str) -> None:
    components, _ = _cards()["evaluate"]
    text = open_in_chromium(browser, card_html(components)).text
    assert "decoding greedy" in text
    assert "num_beams" not in text and "temperature" not in text


def test_without_chromium_the_card_tests_skip_on_a_laptop_and_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.support.browser.shutil.which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    # A skip must not pass for the failure here: it is what the guard prevents, and pytest.raises lets it through.
    try:
        required_chromium()
    except pytest.fail.Exception as failure:
        assert "no chromium on PATH in CI" in str(failure)
    except pytest.skip.Exception:
        pytest.fail("under CI=true the card tests skipped without chromium instead of failing")
    else:
        pytest.fail("required_chromium returned without a chromium on PATH")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        required_chromium()


def test_a_chart_counts_as_drawn_once_it_has_marks(browser: str) -> None:
    # The flow tier's card checks count the charts each card drew: an empty chart still draws axes and a title.
    live = LiveTrainCard(total_steps=10, refresh_interval_s=5)
    assert open_in_chromium(browser, card_html(live.components)).figures == []
    live.update(results.train_result().train_metrics)
    assert open_in_chromium(browser, card_html(live.components)).figures == [title for _, title in live.CHARTS]
