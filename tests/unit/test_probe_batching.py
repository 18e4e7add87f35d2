"""Probe scoring in batches: the same scores and decisions as one pair at a time, each distinct pair scored once."""

from __future__ import annotations

import itertools

import torch

from steps.config import load_config
from steps.evaluate.evaluation import probe_shard
from steps.evaluate.probe_scoring import score_probes
from steps.evaluate.probes import cwe_probes
from steps.evaluate.progress import Progress
from steps.formats.cwe_catalogue import bundled_catalogue_path, read_weaknesses
from steps.formats.model import build_model
from steps.prepare.tokenizer_training import train_bpe_tokenizer
from steps.project_files import DEBUG_CONFIG


class CountingModel(torch.nn.Module):
    """A model that counts the rows its forward passes see (likelihood scoring only; generate is passed on)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, input_ids, attention_mask):
        self.rows += input_ids.shape[0]
        return self.model(input_ids=input_ids, attention_mask=attention_mask)

    def generate(self, **kwargs):
        return self.model.generate(**kwargs)


def _debug_model_and_probes():
    weaknesses = list(itertools.islice(read_weaknesses(bundled_catalogue_path()), 100))
    texts = [f"{w.key}: {w.name}\nDescription: {w.description}" for w in weaknesses]
    tokenizer = train_bpe_tokenizer(texts, 600)
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    model = build_model(load_config(DEBUG_CONFIG).model, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    probes = cwe_probes(bundled_catalogue_path(), set(), count=6, choices=4, seed=3)
    return model.eval(), tokenizer, probes


def test_batched_probe_scores_equal_one_pair_at_a_time_and_pick_the_same() -> None:
    model, tokenizer, probes = _debug_model_and_probes()
    cpu = torch.device("cpu")
    batched = score_probes(model, tokenizer, probes, cpu)
    alone = score_probes(model, tokenizer, probes, cpu, batch_size=1, tokens_per_batch=1)  # no neighbours
    assert len(batched) == len(alone) == 12
    for fast, slow in zip(batched, alone, strict=True):
        assert abs(fast["answer_logprob_per_token"] - slow["answer_logprob_per_token"]) < 1e-4
        assert (fast["picked"], fast["choice_correct"]) == (slow["picked"], slow["choice_correct"])
        assert (fast["completion"], fast["exact_match"]) == (slow["completion"], slow["exact_match"])


def test_each_distinct_context_and_choice_is_scored_once() -> None:
    # An ID-to-name probe scores every choice after every choice's own ID; across probes the same
    # (ID, name) pairs recur, so scoring them per probe repeats work.
    model, tokenizer, probes = _debug_model_and_probes()
    shared = probes[0]
    twin = type(shared)(**{**shared.__dict__, "split": "validation"})  # the same question asked twice
    counting = CountingModel(model)
    score_probes(counting, tokenizer, [shared, twin], torch.device("cpu"))
    contexts = len(dict.fromkeys([shared.prompt, *shared.choice_prompts]))
    assert counting.rows == contexts * len(shared.choices)


def test_probe_scoring_reports_progress_through_each_part() -> None:
    model, tokenizer, probes = _debug_model_and_probes()
    lines = []
    progress = Progress(interval_s=0, write=lines.append)
    progress.scope = "tuned model"
    score_probes(model, tokenizer, probes[:4], torch.device("cpu"), progress=progress)
    assert lines[0].startswith("evaluate: probe likelihoods (tuned model): 0/")
    assert any(line.startswith("evaluate: probe likelihoods (tuned model):") and "(done)" in line for line in lines)
    assert lines[-1].startswith("evaluate: probe completions (tuned model): 2/2 probes (100%)")


def test_each_rank_gets_half_of_each_kind_of_probe() -> None:
    # Probes alternate ID-to-name (completed) and description-to-name (long, not completed); every
    # other probe gave rank 0 all the completions.
    probes = cwe_probes(bundled_catalogue_path(), set(), count=5, choices=4, seed=3)
    shards = [probe_shard(probes, 2, rank) for rank in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    for shard in shards:
        kinds = [probes[i].kind for i in shard]
        assert abs(kinds.count("id_to_name") - kinds.count("description_to_name")) <= 1
