"""Probe scoring, batched (each distinct pair once, length-sorted, softmax only where scored) against the
one-batch-of-16-pairs-in-probe-order scoring it replaced, in one run, on one CPU thread (one evaluate rank
of the default run on a 2-core machine).

    python bench/probe_scoring.py [--probes 300]

Builds the default config's model (random weights: the cost does not depend on what they learned) and a
4096-token BPE over the CWE catalogue, scores `--probes` CWE probes of each kind both ways, reports whether
the scores agree to float tolerance and every pick and completion is the same, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from steps.config import load_config
from steps.evaluate import probe_scoring
from steps.evaluate.probes import cwe_probes
from steps.formats.cwe_catalogue import bundled_catalogue_path, read_weaknesses
from steps.formats.model import build_model
from steps.prepare.tokenizer_training import train_bpe_tokenizer
from steps.project_files import DEFAULT_CONFIG


def baseline_sequences(model, sequences, pad_id, device, tokens_per_batch, progress) -> list[list[float]]:
    """The scoring before: pairs in probe order, 16 per forward pass, a softmax over every position."""
    out = []
    for start in range(0, len(sequences), 16):
        batch = sequences[start : start + 16]
        width = max(len(c) + len(t) for c, t in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (context, target) in enumerate(batch):
            ids[i, : len(context) + len(target)] = torch.tensor(context + target)
            mask[i, : len(context) + len(target)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        for i, (context, target) in enumerate(batch):
            positions = torch.arange(len(context) - 1, len(context) + len(target) - 1)
            out.append(logprobs[i, positions, torch.tensor(target)].tolist())
    return out


def timed(score, *args) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    rows = score(*args)
    return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=300, help="CWE probes of each kind")
    args = parser.parse_args()
    torch.set_num_threads(1)
    weaknesses = list(itertools.islice(read_weaknesses(bundled_catalogue_path()), 2000))
    tokenizer = train_bpe_tokenizer([f"{w.key}: {w.name}\nDescription: {w.description}" for w in weaknesses], 4096)
    tokenizer.padding_side = "left"
    config = load_config(DEFAULT_CONFIG)
    torch.manual_seed(0)
    model = build_model(config.model, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id).eval()
    probes = cwe_probes(bundled_catalogue_path(), set(), args.probes, config.evaluate.probe_choices, seed=0)
    cpu = torch.device("cpu")

    batched_s, batched = timed(probe_scoring.score_probes, model, tokenizer, probes, cpu)
    batched_lk = probe_scoring.score_sequences
    probe_scoring.score_sequences = baseline_sequences
    try:
        baseline_s, baseline = timed(probe_scoring.score_probes, model, tokenizer, probes, cpu)
    finally:
        probe_scoring.score_sequences = batched_lk

    difference = max(
        abs(a["answer_logprob_per_token"] - b["answer_logprob_per_token"])
        for a, b in zip(batched, baseline, strict=True)
    )
    same = all(
        (a["picked"], a["completion"], a["exact_match"]) == (b["picked"], b["completion"], b["exact_match"])
        for a, b in zip(batched, baseline, strict=True)
    )
    result = {
        "bench": "probe_scoring",
        "probes": len(probes),
        "threads": 1,
        "baseline_s": round(baseline_s, 2),
        "batched_s": round(batched_s, 2),
        "speedup": round(baseline_s / batched_s, 2),
        "max_logprob_difference": difference,
        "same_picks_and_completions": same,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
