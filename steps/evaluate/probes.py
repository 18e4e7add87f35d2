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
from dataclasses import dataclass, field
from pathlib import Path

from steps.config import DEFAULT_CORPUS, TuneConfig
from steps.evaluate.prompts import EvalDataError, read_jsonl
from steps.formats.cwe_catalogue import Weakness, bundled_catalogue_path, read_weaknesses
from steps.formats.dataset import DATASET_SUMMARY_FILE, record_key
from steps.results import PrepareSummary

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


def _probed_weaknesses(catalogue: Path) -> list[Weakness]:
    """Weaknesses worth asking about: not deprecated, with a description."""
    return [w for w in read_weaknesses(catalogue) if w.description and not w.deprecated]


def cwe_probes(catalogue: Path, validation_ids: set[str], count: int, choices: int, seed: int) -> list[Probe]:
    """`count` probes of each kind, half on training weaknesses, half on held-out ones where there are enough."""
    weaknesses = _probed_weaknesses(catalogue)
    rng = random.Random(seed)
    held_out = [w for w in weaknesses if w.key in validation_ids]
    trained = [w for w in weaknesses if w.key not in validation_ids]
    picks = rng.sample(held_out, min(len(held_out), count // 2))
    picks = [(w, "validation") for w in picks] + [
        (w, "train") for w in rng.sample(trained, min(len(trained), count - len(picks)))
    ]
    # One weakness per name, so that no two choices read the same.
    by_name = list({w.name: w for w in weaknesses}.values())
    probes = []
    for weakness, split in picks:
        distractors = rng.sample([w for w in by_name if w.name != weakness.name], choices - 1)
        options = [" " + w.name for w in [weakness, *distractors]]
        # The document's own layout (steps.prepare.cwe_documents): `CWE-79: <name>`, header, description.
        prompt = f"{weakness.key}:"
        own_prompts = [f"{w.key}:" for w in [weakness, *distractors]]
        probes.append(
            Probe("id_to_name", split, prompt, options[0], options, weakness=weakness.key, choice_prompts=own_prompts)
        )
        suffix = f"\n{weakness.header}\nDescription: {weakness.description[:DESCRIPTION_CHARS]}"
        probes.append(
            Probe("description_to_name", split, prompt, options[0], options, suffix, weakness.key, generate=False)
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


def build_probes(config: TuneConfig, dataset_dir: Path) -> list[Probe]:
    """The probe set a run's config asks for: CWE probes for the CWE corpus, plus the user's file."""
    probes: list[Probe] = []
    if config.data.corpus == DEFAULT_CORPUS and config.evaluate.probes:
        summary = PrepareSummary.model_validate_json((dataset_dir / DATASET_SUMMARY_FILE).read_text())
        validation_ids = {record_key(doc_id) for doc_id in summary.validation_doc_ids}
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
