"""The decoding settings in effect: what `generate` is called with, and what the summary shows.

One function for both, so that the evaluation summary and card never list a setting the
search did not use (a `num_beams` under greedy decoding, a temperature under beam search).
"""

from __future__ import annotations

from typing import Any

from steps.config import EvaluateConfig


def search_arguments(settings: EvaluateConfig) -> dict[str, Any]:
    """The search keywords of `generate` for the configured decoding."""
    if settings.decoding == "sampling":
        return {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
    if settings.decoding == "beams":
        return {"do_sample": False, "num_beams": settings.num_beams}
    return {"do_sample": False, "num_beams": 1}


def settings_in_effect(settings: EvaluateConfig) -> dict[str, Any]:
    """The generation settings a run used: the common ones and only its decoding's own."""
    own = {
        "greedy": {},
        "sampling": {"temperature": settings.temperature, "top_p": settings.top_p, "seed": settings.seed},
        "beams": {"num_beams": settings.num_beams},
    }[settings.decoding]
    return {
        "decoding": settings.decoding,
        **own,
        "max_new_tokens": settings.max_new_tokens,
        "batch_size": settings.batch_size,
        "extra_eos_ids": settings.extra_eos_ids,
    }
