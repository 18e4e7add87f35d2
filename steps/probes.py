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

Both are also scored as multiple choice (true name against distractors by
log-likelihood). Probes are drawn half from weaknesses whose documents went to
training (what tuning should have taught) and half from held-out ones (which
only generalisation can answer), and reported per split. A user probe file
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
    extra: dict = field(default_factory=dict)


def _weaknesses(catalogue: Path) -> list[dict[str, str]]:
    from steps.cwe_catalogue import read_cwe_catalogue

    found = []
    for weakness_id, text in read_cwe_catalogue(catalogue):
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
    picks = [(w, "validation") for w in picks] + [(w, "train") for w in rng.sample(trained, count - len(picks))]
    names = [w["name"] for w in weaknesses]
    probes = []
    for weakness, split in picks:
        distractors = rng.sample([n for n in names if n != weakness["name"]], choices - 1)
        options = [" " + n for n in [weakness["name"], *distractors]]
        prompt = f"{weakness['id']}:"
        probes.append(Probe("id_to_name", split, prompt, options[0], options, weakness=weakness["id"]))
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


def score_probes(model, tokenizer, probes: list[Probe], device, batch_size: int = 16) -> list[dict[str, Any]]:
    """One row per probe: greedy completion, exact match, answer log-likelihood, choice picked."""
    model.eval()
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    pairs, owners = [], []
    for p_index, probe in enumerate(probes):
        context = encode(probe.prompt)
        for c_index, choice in enumerate(probe.choices):
            pairs.append((context, encode(choice + probe.suffix)))
            owners.append((p_index, c_index, len(encode(choice))))
    owners_length = {(p, c): n for p, c, n in owners}
    scores: dict[tuple[int, int], list[float]] = {}
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        for (p_index, c_index, _), logprobs in zip(
            owners[start : start + batch_size],
            _sequence_logprobs(model, batch, tokenizer.pad_token_id, device),
            strict=True,
        ):
            scores[(p_index, c_index)] = logprobs
    rows = []
    for p_index, probe in enumerate(probes):
        # Length-neutral scores: a name's mean log-likelihood per token or, with a suffix, that of the
        # description given the name (the same tokens for every candidate). Summed log-likelihoods would
        # favour the shortest name, which is all an untrained model "knows".
        totals = []
        for c_index in range(len(probe.choices)):
            name_tokens = owners_length[(p_index, c_index)]
            logprobs = scores[(p_index, c_index)]
            part = logprobs[name_tokens:] if probe.suffix else logprobs[:name_tokens]
            totals.append(sum(part) / max(1, len(part)))
        answer_index = probe.choices.index(probe.answer)
        best = max(range(len(totals)), key=totals.__getitem__)
        rows.append(
            {
                **{k: v for k, v in asdict(probe).items() if k not in ("extra", "generate")},
                "answer_logprob_per_token": totals[answer_index],
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
