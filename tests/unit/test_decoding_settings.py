"""The evaluation summary shows the decoding settings in effect, and only those."""

from __future__ import annotations

import pytest

from steps.config import EvaluateConfig
from steps.evaluate.decoding import search_arguments, settings_in_effect

SEARCH_ONLY = {"temperature", "top_p", "seed", "num_beams"}


def test_greedy_decoding_shows_no_beam_or_sampling_settings() -> None:
    shown = settings_in_effect(EvaluateConfig(decoding="greedy", num_beams=4, temperature=0.7))
    assert shown == {"decoding": "greedy", "max_new_tokens": 24, "batch_size": 4, "extra_eos_ids": []}


@pytest.mark.parametrize(
    ("decoding", "own"),
    [("greedy", set()), ("sampling", {"temperature", "top_p", "seed"}), ("beams", {"num_beams"})],
)
def test_each_decoding_shows_the_settings_its_search_uses(decoding: str, own: set[str]) -> None:
    settings = EvaluateConfig(decoding=decoding, num_beams=3, temperature=0.5, top_p=0.9, seed=7)
    shown = settings_in_effect(settings)
    assert set(shown) & SEARCH_ONLY == own
    searched = search_arguments(settings)
    # what generate is called with agrees with what is shown (the seed is set with torch.manual_seed)
    for key in own - {"seed"}:
        assert searched[key] == shown[key] == getattr(settings, key)
    assert searched["do_sample"] == (decoding == "sampling")
    if decoding != "beams":
        assert searched.get("num_beams", 1) == 1
