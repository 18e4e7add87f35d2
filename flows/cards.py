"""Card contents for each step, built from the typed results the stages return (`steps.results`).

The train step's card is live while training runs (`flows/live_card.py`); these add what each step
knows once its stage has returned.
"""

from __future__ import annotations

import html

from metaflow.cards import Markdown, Table, VegaChart
from pydantic import BaseModel

from steps.config import TuneConfig
from steps.results import (
    ConversionRecord,
    ConvertResult,
    EvalSummary,
    EvaluateResult,
    InstructConvertResult,
    InstructionSummary,
    InstructResult,
    PrepareResult,
    TrainResult,
    TrainSummary,
)
from steps.runtime.storage import StoredDir


def vega_chart(title: str, values: list[dict], mark: str | dict, encoding: dict, width: int = 480, height: int = 200):
    """A Vega-Lite chart of `values` for a card."""
    return VegaChart(
        {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": title,
            "width": width,
            "height": height,
            "data": {"values": values},
            "mark": mark,
            "encoding": encoding,
        }
    )


def _histogram_chart(histogram, title: str, unit: str) -> VegaChart:
    edges, counts = histogram.edges, histogram.counts
    values = [{"from": edges[i], "to": edges[i + 1], "documents": c} for i, c in enumerate(counts)]
    encoding = {
        "x": {"field": "from", "bin": {"binned": True}, "title": unit},
        "x2": {"field": "to"},
        "y": {"field": "documents", "type": "quantitative"},
    }
    return vega_chart(title, values, "bar", encoding)


def _fields_table(record: BaseModel, keys: tuple[str, ...], label: str) -> Table:
    """Chosen fields of a summary record as a two-column table."""
    return Table([[key, str(getattr(record, key))] for key in keys], headers=[label, "value"])


def wrapped_text(text: str) -> Markdown:
    """Preformatted text that wraps at the card's width, in a box that scrolls when long.

    A Markdown code block keeps each line whole, so one long line (a hash, a URL, a minified
    file) widened the whole page and pushed every table's value column off-screen.
    """
    style = "white-space: pre-wrap; overflow-wrap: anywhere; max-height: 24em; overflow-y: auto"
    return Markdown(f'<pre style="{style}">{html.escape(text)}</pre>')


def refs_table(refs: dict[str, StoredDir]) -> Table:
    rows = [[name, ref.uri, ref.sha256[:16], str(ref.files), f"{ref.bytes / 1e6:.1f} MB"] for name, ref in refs.items()]
    return Table(rows, headers=["what", "where", "sha256", "files", "size"])


def prepare_card(result: PrepareResult, workers: int = 1) -> list:
    s = result.prepare_summary
    report = s.report
    rows = [["documents kept", report.kept_documents], ["characters kept", report.kept_chars]]
    if workers > 1:
        rows.append(["prepared by (foreach workers over corpus shards)", workers])
    rows += [[f"dropped: {reason}", count] for reason, count in sorted(report.dropped.items())]
    rows += [
        ["duplicates found: exact / near", f"{report.duplicates.exact} / {report.duplicates.near}"],
        ["documents with redactions", report.redacted_documents],
    ]
    for split in ("train", "validation"):
        counts = [getattr(part, split) for part in (s.documents, s.tokens, s.blocks)]
        rows.append([f"{split}: documents / tokens / blocks", " / ".join(str(c) for c in counts)])
    rows += [["block size", s.block_size], ["vocabulary", s.vocab_size], ["evaluation prompts", s.prompts]]
    if s.separator is not None:
        rows.append(["document separator", f"{s.separator} (id {s.separator_id})"])
    mix = [["files", fmt, n] for fmt, n in sorted(report.files_by_format.items())]
    mix += [["documents kept", fmt, n] for fmt, n in sorted(report.documents_by_format.items())]
    mix += [["documents kept, decoded from", enc, n] for enc, n in sorted(report.documents_by_encoding.items())]
    redactions = [[kind, count] for kind, count in sorted(report.redactions.items())] or [["none", 0]]
    parts = [
        Markdown(
            f"# prepare\nCorpus: `{s.corpus}`" + (f"\n\n**Note:** {s.base_model_note}" if s.base_model_note else "")
        ),
        Table(rows, headers=["", "value"]),
        Markdown("## Source mix"),
        Table(mix, headers=["", "format", "count"]),
        Markdown("## Redactions (counts only; every change is in the dataset's report.jsonl)"),
        Table(redactions, headers=["type", "count"]),
        _histogram_chart(s.doc_chars_histogram, "Document length in characters", "characters"),
        _histogram_chart(s.doc_tokens_histogram, "Document length in tokens", "tokens"),
        Markdown("## Sample blocks (decoded)"),
    ]
    parts += [wrapped_text(block) for block in s.sample_blocks]
    if report.skipped_files:
        title = f"## Skipped files ({report.skipped_file_count}, first {len(report.skipped_files)} shown)"
        parts += [
            Markdown(title),
            # The reason first: a long path scrolls inside the table's box and would hide a column after it.
            Table([[f.reason, f.path] for f in report.skipped_files], headers=["why", "skipped file"]),
        ]
    if result.instruction_summary is not None:
        parts += instructions_part(result.instruction_summary)
    stored = {"dataset": result.dataset, "tokenizer": result.tokenizer, "base_model": result.base_model}
    stored["instructions"] = result.instructions
    parts.append(refs_table({name: ref for name, ref in stored.items() if ref is not None}))
    return parts


def instructions_part(s: InstructionSummary) -> list:
    """What prepare made of the instruction data: conversations, tokens that carry loss, drops, questions."""
    report = s.report
    rows = [["source", s.source], ["chat template", s.chat_template], ["end-of-turn token id", s.end_of_turn_id]]
    for split in ("train", "validation"):
        counts = [getattr(part, split) for part in (s.conversations, s.tokens, s.label_tokens)]
        rows.append([f"{split}: conversations / tokens / answer tokens", " / ".join(str(c) for c in counts)])
    rows += [["longest conversation (tokens)", s.longest], ["held-out questions", s.questions]]
    if s.held_out_subjects:
        rows.append(["held-out weaknesses (never in the training conversations)", len(s.held_out_subjects)])
    rows += [[f"dropped: {reason}", count] for reason, count in sorted(report.dropped.items())]
    rows.append(["conversations with redactions", report.redacted_documents])
    parts = [Markdown("## Instruction data (every drop and redaction is in instructions/report.jsonl)"), Table(rows)]
    if report.skipped_files:
        parts.append(Table([[f.reason, f.path] for f in report.skipped_files], headers=["why", "skipped file"]))
    return parts


def train_card(result: TrainResult | InstructResult) -> list:
    """What the final card of a training step (train, instruct) adds below the live plots."""
    if isinstance(result, InstructResult):
        s, refs = result.instruct_summary, {"instruct_checkpoint": result.instruct_checkpoint}
    else:
        s, refs = result.train_summary, {"checkpoint": result.checkpoint}
    keys = (
        "objective",
        "method",
        "steps",
        "resumed_from_step",
        "resumed_from",
        "final_loss",
        "tokens_seen",
        "world_size",
        "zero_stage",
        "parameters",
        "trainable_parameters",
        "flops_per_token",
        "peak_tflops",
        "elapsed_s",
    )
    return [_fields_table(s, keys, ""), refs_table(refs)]


def convert_card(result: ConvertResult | InstructConvertResult) -> list:
    if isinstance(result, InstructConvertResult):
        v, refs, title = result.instruct_conversion, {"instructed_model": result.instructed_model}, "instruct_convert"
    else:
        v, refs, title = result.conversion, {"model": result.model}, "convert"
    keys = (
        "checkpoint",
        "step",
        "zero_stage",
        "trained_world_size",
        "dtype",
        "shards",
        "written_bytes",
        "tensors",
        "parameters",
        "all_tensors_checked",
        "max_logit_difference",
        "tolerance",
        "logits_match",
        "lora_merged",
        "adapter",
    )
    checks = Table(
        [[r.name, str(r.shape), f"{r.norm:.4g}"] for r in v.tensor_checks[:200]],
        headers=["tensor (non-empty, expected shape, non-zero norm)", "shape", "norm"],
    )
    note = ""
    if v.adapter:
        note = (
            f"\n\nLoRA adapters merged into the weights; the adapter itself is in `{v.adapter}/` of the model folder, "
            "in PEFT's format (`PeftModel.from_pretrained(start_model, <model>/adapter)`)."
        )
    return [
        Markdown(f"# {title}{note}"),
        _fields_table(v, keys, "verification"),
        Markdown("## Tensors"),
        checks,
        refs_table(refs),
    ]


def _bar_chart(values: list[dict], x: str, y: str, title: str) -> VegaChart:
    encoding = {"x": {"field": x, "type": "nominal"}, "y": {"field": y, "type": "quantitative"}}
    return vega_chart(title, values, "bar", encoding, width=360, height=180)


PROBE_METRICS = ("exact_match", "answer_logprob_per_token", "choice_accuracy")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def evaluate_card(result: EvaluateResult) -> list:
    s = result.eval_summary
    ppl = s.perplexity
    before_after = [["held-out perplexity", f"{ppl.untuned:.2f}", f"{ppl.tuned:.2f}"]]
    if s.general_perplexity is not None:  # forgetting: general text beside the domain, with both ratios
        general = s.general_perplexity
        before_after += [
            [f"general-text perplexity ({s.general_text})", f"{general.untuned:.2f}", f"{general.tuned:.2f}"],
            ["perplexity after/before: domain, general", "", f"{ppl.ratio:.3f}, {general.ratio:.3f}"],
        ]
    tuned, untuned = s.probes.tuned, s.probes.untuned
    for group in tuned:
        for metric in PROBE_METRICS:
            before = _fmt(getattr(untuned[group], metric))
            before_after.append([f"probes {group}: {metric}", before, _fmt(getattr(tuned[group], metric))])
    engines = [
        [e, t.tokens, f"{t.tokens_per_s:.1f}", f"{t.latency_s_mean:.4f}", f"{s.agreement[e]:.2f}"]
        for e, t in s.throughput.items()
    ]
    notes = [f"- {e}: {n}" for e, ns in s.engine_notes.items() for n in ns]
    speed = [{"engine": e, "tokens_per_s": t.tokens_per_s} for e, t in s.throughput.items()]
    agreement = "required and met" if s.agreement_required else "reported (not required on GPU or when sampling)"
    samples = [r for r in result.eval_table if r.engine == s.engines[0]][:8]
    settings = ", ".join(f"{key} {value}" for key, value in s.generation.items())  # those in effect only
    completed = [r for r in result.probes if r.model == "tuned" and r.completion is not None]
    # The names the model got right first: with a whole catalogue probed they are the news, and rare.
    probe_samples = sorted(completed, key=lambda r: not r.exact_match)
    parts = [
        Markdown(f"# evaluate\n{s.prompts} prompts {s.prompt_sources}; generation: {settings}"),
        *stages_part(s),
        Markdown("## Before and after tuning"),
        Table(before_after, headers=["metric", "before (untuned)", "after (tuned)"]),
        Markdown(f"## Engines\nToken-for-token agreement with `{s.agreement_with}`: {agreement}"),
        Table(engines, headers=["engine", "tokens", "tokens/s", "latency per prompt (s)", "agreement"]),
        _bar_chart(speed, "engine", "tokens_per_s", "Generation throughput (tokens/s)"),
    ]
    if notes:
        parts.append(Markdown("\n".join(notes)))
    parts += [
        Markdown("## Sample generations"),
        Table(
            [[r.index, r.source, r.prompt, r.reference, r.generation] for r in samples],
            headers=["#", "source", "prompt", "reference", "generation"],
        ),
        Markdown("## Generations (all engines)"),
        Table(
            [[r.index, r.engine, r.generation, r.tokens, f"{r.latency_s:.4f}"] for r in result.eval_table],
            headers=["#", "engine", "generation", "tokens", "latency (s)"],
        ),
    ]
    parts += conversations_part(result)
    if probe_samples:
        parts += [
            Markdown(
                f"## Probe completions (tuned)\n{sum(bool(r.exact_match) for r in completed)} of {len(completed)} "
                "completed exactly; those first, then the others in probe order."
            ),
            Table(
                [[r.split, r.prompt, r.answer, r.completion, str(r.exact_match)] for r in probe_samples[:12]],
                headers=["split", "prompt", "answer", "completion", "exact"],
            ),
        ]
    parts.append(refs_table({"evaluation": result.evaluation}))
    return parts


STAGE_TITLES = {
    "base": "base model",
    "pretrained": "after continued pretraining",
    "instructed": "after instruction tuning",
}
ANSWER_METRICS = ("contains_reference", "exact_match", "choice_accuracy", "stopped")


def stages_part(s: EvalSummary) -> list:
    """With instruction tuning: each model of the run in a column (base, continued-pretrained, instructed)."""
    if not s.by_model:
        return []
    names = list(s.by_model)
    rows = [["held-out perplexity", *(f"{s.by_model[n].perplexity:.2f}" for n in names)]]
    if all(s.by_model[n].general_perplexity is not None for n in names):
        rows.append(
            [f"general-text perplexity ({s.general_text})", *(f"{s.by_model[n].general_perplexity:.2f}" for n in names)]
        )
    groups = sorted({g for n in names for g in s.by_model[n].answers}, key=lambda g: (g != "all", g))
    for group in groups:
        for metric in ANSWER_METRICS:
            values = [s.by_model[n].answers.get(group) for n in names]
            shown = [_fmt(getattr(v, metric)) if v is not None else "n/a" for v in values]
            count = next((v.questions for v in values if v is not None), 0)
            rows.append([f"questions {group} ({count}): {metric}", *shown])
    return [
        Markdown(
            f"## The run's models on {s.questions} held-out questions\nAsked through the chat template; "
            "`contains_reference`: the answer holds the reference's fact (name or ID) as a whole word; "
            "`stopped`: the answer ended its turn within instruct.max_new_tokens."
        ),
        Table(rows, headers=["metric", *(STAGE_TITLES.get(n, n) for n in names)]),
    ]


def conversations_part(result: EvaluateResult, per_engine: int = 4) -> list:
    """Sample conversations: the tuned model's answers to held-out questions from each engine."""
    asked = [r for r in result.eval_table if r.source == "question"]
    if not asked:
        return []
    rows = []
    for engine in result.eval_summary.engines:
        rows += [[engine, r.prompt, r.generation, r.reference] for r in asked if r.engine == engine][:per_engine]
    parts = [
        Markdown("## Sample conversations (the tuned model, each engine)"),
        Table(rows, headers=["engine", "question", "answer", "reference"]),
    ]
    compared = [r for r in result.answers if r.model != "instructed"][: 2 * per_engine]
    if compared:
        parts += [
            Markdown("## The same questions asked of the models before instruction tuning"),
            Table(
                [[r.model, r.question, r.answer, str(r.contains_reference)] for r in compared],
                headers=["model", "question", "answer", "holds the fact"],
            ),
        ]
    return parts


def end_card(
    references: dict[str, dict],
    eval_summary: dict,
    conversion: dict | None,
    train_summary: dict | None,
    instructed: tuple[dict, dict] | None = None,
) -> list:
    """The run's summary from the artifacts the end step holds (plain data, validated here); `instructed`: the
    instruction tuning's summary and conversion record, when it ran (`conversion` and `train_summary` are
    continued pretraining's, None when it was skipped)."""
    evaluation = EvalSummary.model_validate(eval_summary)
    ppl = evaluation.perplexity
    lines = ["# Run summary"]
    trainings = [("continued pretraining", train_summary, conversion)]
    trainings += [("instruction tuning", *instructed)] if instructed else []
    for what, summary, record in trainings:
        if summary is None:
            continue
        trained, verification = TrainSummary.model_validate(summary), ConversionRecord.model_validate(record)
        method = " with LoRA" if trained.method == "lora" else ""
        lines += [
            f"- {what}{method}: {trained.steps} steps on {trained.world_size} ranks "
            f"(ZeRO-{trained.zero_stage}), final loss {trained.final_loss:.3f}",
            f"- its conversion verified: logits within {verification.tolerance} "
            f"(max difference {verification.max_logit_difference:.2g})",
        ]
    lines += [
        f"- held-out perplexity {ppl.untuned:.1f} → {ppl.tuned:.1f}",
        f"- engines {', '.join(evaluation.engines)} agree token for token: {evaluation.engines_agree}",
    ]
    if evaluation.by_model:
        answered = {STAGE_TITLES.get(name, name): s.answers.get("all") for name, s in evaluation.by_model.items()}
        shown = ", ".join(f"{name} {_fmt(a.contains_reference if a else None)}" for name, a in answered.items())
        lines.append(f"- held-out questions answered with the right fact: {shown}")
    before, after = evaluation.probes.untuned.get("all"), evaluation.probes.tuned.get("all")
    if before and after:
        lines += [
            f"- probe {metric} {_fmt(getattr(before, metric))} → {_fmt(getattr(after, metric))}"
            for metric in PROBE_METRICS
        ]
    refs = {name: StoredDir.from_dict(ref) for name, ref in references.items()}
    return [Markdown("\n".join(lines)), refs_table(refs)]


def config_card(config: TuneConfig) -> list:
    rows = [
        [f"{section}.{key}", str(value)]
        for section, fields in config.model_dump().items()
        for key, value in fields.items()
    ]
    return [Markdown("# Resolved configuration"), Table(rows, headers=["field", "value"])]
