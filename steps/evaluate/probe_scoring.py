"""Scoring probes on a model: log-likelihoods of the choices, the pick, greedy completions.

See `steps.evaluate.probes` for what each kind of probe asks and why choices are
scored the way they are.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from steps.evaluate.probes import Probe
from steps.evaluate.progress import NO_PROGRESS, Progress

TOKENS_PER_BATCH = {"cpu": 256, "cuda": 16384}
"""Padded tokens per forward pass when scoring, by device type. On 1-thread CPU ranks larger batches
measured slower (bench/probe_scoring.py); a GPU wants them as large as memory allows."""


def _sequence_logprobs(model, sequences: list[tuple[list[int], list[int]]], pad_id: int, device) -> list[list[float]]:
    """Log-probability of each continuation token given everything before it, for (context, continuation) pairs.

    Right-padded: a causal model's logits at a row's own positions do not depend on the pads after them.
    Only the positions that predict a continuation token go through the softmax.
    """
    width = max(len(c) + len(t) for c, t in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    rows, positions, targets = [], [], []
    for i, (context, target) in enumerate(sequences):
        row = context + target
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        rows += [i] * len(target)
        positions += range(len(context) - 1, len(context) + len(target) - 1)
        targets += target
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        picked = logits[torch.tensor(rows, device=logits.device), torch.tensor(positions, device=logits.device)]
        logprobs = torch.log_softmax(picked.float(), dim=-1).cpu()
    flat = logprobs[torch.arange(len(targets)), torch.tensor(targets)].tolist()
    out, start = [], 0
    for _, target in sequences:
        out.append(flat[start : start + len(target)])
        start += len(target)
    return out


def score_sequences(
    model,
    sequences: list[tuple[list[int], list[int]]],
    pad_id: int,
    device,
    tokens_per_batch: int,
    progress: Progress = NO_PROGRESS,
) -> list[list[float]]:
    """`_sequence_logprobs` of many pairs: each distinct pair scored once, in batches of similar length.

    Probes share pairs (a weakness's ID and name recur as other probes' distractors), and sorting by
    length keeps short ID-to-name rows out of batches padded to a description's length.
    """
    unique = list(dict.fromkeys((tuple(c), tuple(t)) for c, t in sequences))
    order = sorted(range(len(unique)), key=lambda i: len(unique[i][0]) + len(unique[i][1]))
    scored: dict[tuple, list[float]] = {}
    # Counted in tokens: sorted by length, sequences get longer as it goes, tokens keep a steady pace.
    progress.begin("probe likelihoods", sum(len(c) + len(t) for c, t in unique), "tokens")
    start = 0
    while start < len(order):
        # Sorted ascending, so the last row of a batch is its widest.
        end = start + 1
        while end < len(order) and (end - start + 1) * sum(map(len, unique[order[end]])) <= tokens_per_batch:
            end += 1
        batch = [unique[i] for i in order[start:end]]
        lists = [(list(c), list(t)) for c, t in batch]
        scored.update(zip(batch, _sequence_logprobs(model, lists, pad_id, device), strict=True))
        progress.advance(sum(len(c) + len(t) for c, t in batch))
        start = end
    return [scored[(tuple(c), tuple(t))] for c, t in sequences]


def _scored_part(logprobs: list[float], name_tokens: int, suffix: str) -> list[float]:
    """The tokens a choice is judged on: the name's own, or the suffix's after it when there is one."""
    return logprobs[name_tokens:] if suffix else logprobs[:name_tokens]


def _mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))


def choice_scores(probe: Probe, part: dict[tuple[str, int], list[float]]) -> list[float]:
    """Each choice's score from the log-probabilities of its judged tokens after each context.

    `part[(context, c)]` holds those of choice `c` after `context` (the probe's prompt, and each
    of `probe.choice_prompts` when set).
    """
    choices = range(len(probe.choices))
    if probe.choice_prompts:
        # Pointwise mutual information of ID and name, over whole names: the name's log-likelihood after
        # this prompt minus its average after every candidate's own prompt.
        prompts = probe.choice_prompts
        return [sum(part[(probe.prompt, c)]) - sum(sum(part[(x, c)]) for x in prompts) / len(prompts) for c in choices]
    # Length-neutral: mean log-likelihood per token of a name or, with a suffix, of the description given
    # the name (the same tokens for every candidate). Summed log-likelihoods would favour the shortest
    # name, which is all an untrained model "knows".
    return [_mean(part[(probe.prompt, c)]) for c in choices]


def score_probes(
    model,
    tokenizer,
    probes: list[Probe],
    device,
    batch_size: int = 16,
    tokens_per_batch: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> list[dict[str, Any]]:
    """One row per probe: greedy completion, exact match, answer log-likelihood, choice picked.

    `batch_size` is the completions' (prompts per generate call); `tokens_per_batch` bounds the padded
    tokens of one likelihood forward pass (default by device type, `TOKENS_PER_BATCH`).
    """
    budget = tokens_per_batch or TOKENS_PER_BATCH.get(torch.device(device).type, TOKENS_PER_BATCH["cuda"])
    model.eval()
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    # Every (context, choice) pair to score: the probe's own prompt, plus each choice's own prompt when
    # the choices are calibrated against them.
    contexts = [list(dict.fromkeys([probe.prompt, *probe.choice_prompts])) for probe in probes]
    pairs, owners, name_tokens = [], [], {}
    for p_index, probe in enumerate(probes):
        continuations = [encode(choice + probe.suffix) for choice in probe.choices]
        for c_index, choice in enumerate(probe.choices):
            name_tokens[(p_index, c_index)] = len(encode(choice))
        for context in contexts[p_index]:
            context_ids = encode(context)
            for c_index, continuation in enumerate(continuations):
                pairs.append((context_ids, continuation))
                owners.append((p_index, context, c_index))
    logprobs = score_sequences(model, pairs, tokenizer.pad_token_id, device, budget, progress)
    scores: dict[tuple[int, str, int], list[float]] = dict(zip(owners, logprobs, strict=True))
    rows = []
    for p_index, probe in enumerate(probes):
        choices = range(len(probe.choices))
        answer_index = probe.choices.index(probe.answer)
        part = {
            (context, c): _scored_part(scores[(p_index, context, c)], name_tokens[(p_index, c)], probe.suffix)
            for context in contexts[p_index]
            for c in choices
        }
        totals = choice_scores(probe, part)
        best = max(choices, key=totals.__getitem__)
        rows.append(
            {
                **{k: v for k, v in asdict(probe).items() if k not in ("extra", "generate", "choice_prompts")},
                "answer_logprob_per_token": _mean(part[(probe.prompt, answer_index)]),
                "picked": probe.choices[best],
                "choice_correct": best == answer_index,
                "completion": None,
                "exact_match": None,
            }
        )
    _complete(model, tokenizer, probes, rows, device, batch_size, progress)
    return rows


def _complete(
    model, tokenizer, probes: list[Probe], rows: list[dict], device, batch_size: int, progress: Progress
) -> None:
    """Greedy completions of the generative probes, cut at the first newline, matched against the answer."""
    wanted = [i for i, p in enumerate(probes) if p.generate]
    if tokenizer.padding_side != "left":
        raise ValueError(
            "probe completions need a left-padding tokenizer (steps.formats.tokenizer_folder.load_tokenizer)"
        )
    if wanted:
        progress.begin("probe completions", len(wanted), "probes")
    for start in range(0, len(wanted), batch_size):
        chunk = wanted[start : start + batch_size]
        encoded = tokenizer([probes[i].prompt for i in chunk], return_tensors="pt", padding=True)
        # Each probe's own budget: its answer's tokens and 2 more. Greedy tokens do not depend on the budget,
        # so cutting to it makes a completion independent of which probes share its batch (and its rank).
        budgets = [len(tokenizer(probes[i].answer, add_special_tokens=False)["input_ids"]) + 2 for i in chunk]
        longest = max(budgets) - 2
        with torch.no_grad():
            out = model.generate(
                **encoded.to(device), max_new_tokens=longest + 2, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        new_tokens = out[:, encoded["input_ids"].shape[1] :].tolist()
        for i, tokens, budget in zip(chunk, new_tokens, budgets, strict=True):
            text = tokenizer.decode(tokens[:budget], skip_special_tokens=True).split("\n")[0]
            rows[i]["completion"] = text
            rows[i]["exact_match"] = text.strip() == probes[i].answer.strip()
        progress.advance(len(chunk))
