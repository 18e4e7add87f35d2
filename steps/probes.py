"""Domain probes: did the model learn the corpus's facts, not only its style?

For the CWE catalogue (data.corpus = "cwe") two kinds, built from the catalogue
in the layout the training documents have (`CWE-<id>: <name>` then
`Description: ...`):

- `id_to_name`: prompt `CWE-79:`, the model must complete the weakness name.
  Scored by exact match of a greedy completion (first line) and by the mean
  log-likelihood per token of the true name.
- `description_to_name`: the model names the weakness a description belongs
  to by log-likelihood: each candidate name (the true one and distractors) is
  followed by the weakness's description, and the candidate under which the
  description is most likely (mean log-likelihood per description token) wins.
  A base model has no question-answer format to complete, so there is no
  exact match for this kind.

Both are also scored as multiple choice: the true name against distractors
(names of other weaknesses). For `description_to_name` every candidate is
followed by the same description tokens, so their likelihoods compare directly.
For `id_to_name` they do not: the raw likelihood of a name mostly measures how
formulaic it is ("Improper Neutralization of Special Elements ..." is easy to
continue whatever the ID), so a model that reads well but ignores the ID would
always pick the same fluent names. Each candidate is instead scored by how much
this weakness's ID raises its log-likelihood over the average across the
candidates' own IDs, an estimate of the pointwise mutual information between ID
and name (the "surface form competition" correction of Holtzman et al., 2021).
Probes are drawn half from weaknesses whose documents went to
training (what tuning should have taught) and half from held-out ones, as many
as there are, and reported per split. A held-out weakness's own document was
never trained on, but its ID and name may be: the catalogue names related
weaknesses and category members in other documents. Asking for more probes
than there are weaknesses probes the whole catalogue. A user probe file
(JSONL: prompt, answer, optional choices) adds probes of kind `user`.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from steps.eval_data import EvalDataError, read_jsonl

DESCRIPTION_CHARS = 240
"""Description text scored after each candidate name (enough to identify it, short enough to batch)."""


@dataclass
class Probe:
    kind: str
    split: str
    prompt: str
    answer: str
    choices: list[str]
    suffix: str = ""
    """Text scored after each choice (the description), identical for all choices."""
    weakness: str = ""
    generate: bool = True
    """Whether exact match applies (a completion of the prompt is the answer)."""
    choice_prompts: list[str] = field(default_factory=list)
    """The prompt each choice answers (its own weakness's ID), aligned with `choices`: when set, a choice
    scores by how much `prompt` raises its likelihood over these prompts on average."""
    extra: dict = field(default_factory=dict)


def _weaknesses(catalogue: Path) -> list[dict[str, str]]:
    from steps.cwe_catalogue import read_cwe_catalogue

    found = []
    # names={}: the related weaknesses' names are not read here, so the XML is parsed once, not twice.
    for weakness_id, text in read_cwe_catalogue(catalogue, names={}, categories=False):
        lines = text.split("\n")
        name = lines[0].split(": ", 1)[1]
        description = next(
            (line.removeprefix("Description: ") for line in lines if line.startswith("Description: ")), ""
        )
        if "Status: Deprecated" in lines[1] or not description or name.startswith("DEPRECATED"):
            continue
        found.append({"id": weakness_id, "name": name, "header": lines[1], "description": description})
    return found


def cwe_probes(catalogue: Path, validation_ids: set[str], count: int, choices: int, seed: int) -> list[Probe]:
    """`count` probes of each kind, half on training weaknesses, half on held-out ones where there are enough."""
    weaknesses = _weaknesses(catalogue)
    rng = random.Random(seed)
    held_out = [w for w in weaknesses if w["id"] in validation_ids]
    trained = [w for w in weaknesses if w["id"] not in validation_ids]
    picks = rng.sample(held_out, min(len(held_out), count // 2))
    picks = [(w, "validation") for w in picks] + [
        (w, "train") for w in rng.sample(trained, min(len(trained), count - len(picks)))
    ]
    # One weakness per name, so that no two choices read the same.
    by_name = list({w["name"]: w for w in weaknesses}.values())
    probes = []
    for weakness, split in picks:
        distractors = rng.sample([w for w in by_name if w["name"] != weakness["name"]], choices - 1)
        options = [" " + w["name"] for w in [weakness, *distractors]]
        prompt = f"{weakness['id']}:"
        own_prompts = [f"{w['id']}:" for w in [weakness, *distractors]]
        probes.append(
            Probe("id_to_name", split, prompt, options[0], options, weakness=weakness["id"], choice_prompts=own_prompts)
        )
        suffix = f"\n{weakness['header']}\nDescription: {weakness['description'][:DESCRIPTION_CHARS]}"
        probes.append(
            Probe("description_to_name", split, prompt, options[0], options, suffix, weakness["id"], generate=False)
        )
    return probes


def user_probes(path: Path) -> list[Probe]:
    probes = []
    for number, record in enumerate(read_jsonl(path, ("prompt", "answer"), {"choices": list}), start=1):
        choices = record.get("choices", [record["answer"]])
        if record["answer"] not in choices or not all(isinstance(c, str) and c for c in choices):
            raise EvalDataError(f"{path}, record {number}: 'choices' must be non-empty strings including the answer")
        probes.append(Probe("user", "user", record["prompt"], record["answer"], choices))
    return probes


def _sequence_logprobs(model, sequences: list[tuple[list[int], list[int]]], pad_id: int, device) -> list[list[float]]:
    """Log-probability of each continuation token given everything before it, for (context, continuation) pairs."""
    width = max(len(c) + len(t) for c, t in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (context, target) in enumerate(sequences):
        row = context + target
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1).cpu()
    out = []
    for i, (context, target) in enumerate(sequences):
        positions = torch.arange(len(context) - 1, len(context) + len(target) - 1)
        out.append(logprobs[i, positions, torch.tensor(target)].tolist())
    return out


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


def score_probes(model, tokenizer, probes: list[Probe], device, batch_size: int = 16) -> list[dict[str, Any]]:
    """One row per probe: greedy completion, exact match, answer log-likelihood, choice picked."""
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
    scores: dict[tuple[int, str, int], list[float]] = {}
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        logprobs = _sequence_logprobs(model, batch, tokenizer.pad_token_id, device)
        scores.update(zip(owners[start : start + batch_size], logprobs, strict=True))
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
    _complete(model, tokenizer, probes, rows, device, batch_size)
    return rows


def _complete(model, tokenizer, probes: list[Probe], rows: list[dict], device, batch_size: int) -> None:
    """Greedy completions of the generative probes, cut at the first newline, matched against the answer."""
    wanted = [i for i, p in enumerate(probes) if p.generate]
    if tokenizer.padding_side != "left":
        raise ValueError("probe completions need a left-padding tokenizer (steps.domain_tokenizer.load_tokenizer)")
    for start in range(0, len(wanted), batch_size):
        chunk = wanted[start : start + batch_size]
        encoded = tokenizer([probes[i].prompt for i in chunk], return_tensors="pt", padding=True)
        longest = max(len(tokenizer(probes[i].answer, add_special_tokens=False)["input_ids"]) for i in chunk)
        with torch.no_grad():
            out = model.generate(
                **encoded.to(device), max_new_tokens=longest + 2, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        for i, tokens in zip(chunk, out[:, encoded["input_ids"].shape[1] :].tolist(), strict=True):
            text = tokenizer.decode(tokens, skip_special_tokens=True).split("\n")[0]
            rows[i]["completion"] = text
            rows[i]["exact_match"] = text.strip() == probes[i].answer.strip()


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per `kind/split`: probes, exact match rate, mean answer log-likelihood per token, choice accuracy."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(f"{row['kind']}/{row['split']}", []).append(row)
        groups.setdefault("all", []).append(row)
    out = {}
    for name, group in sorted(groups.items()):
        matched = [r["exact_match"] for r in group if r["exact_match"] is not None]
        out[name] = {
            "probes": len(group),
            "exact_match": sum(matched) / len(matched) if matched else None,
            "answer_logprob_per_token": sum(r["answer_logprob_per_token"] for r in group) / len(group),
            "choice_accuracy": sum(r["choice_correct"] for r in group) / len(group),
        }
    return out


def build_probes(config, dataset_dir: Path) -> list[Probe]:
    """The probe set a run's config asks for: CWE probes for the CWE corpus, plus the user's file."""
    import json

    from steps.cwe_catalogue import bundled_catalogue_path

    probes: list[Probe] = []
    if config.data.corpus == "cwe" and config.evaluate.probes:
        manifest = json.loads((dataset_dir / "manifest.json").read_text())
        # doc ids look like `cwec_v4.14.xml#CWE-79`; an older manifest without the list means no held-out split.
        validation_ids = {doc.rsplit("#", 1)[-1] for doc in manifest.get("validation_doc_ids", [])}
        probes = cwe_probes(
            bundled_catalogue_path(),
            validation_ids,
            config.evaluate.probes,
            config.evaluate.probe_choices,
            config.data.seed,
        )
    if config.evaluate.probe_file:
        probes += user_probes(Path(config.evaluate.probe_file))
    return probes
