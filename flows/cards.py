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
    stored = {"dataset": result.dataset, "tokenizer": result.tokenizer, "base_model": result.base_model}
    parts.append(refs_table({name: ref for name, ref in stored.items() if ref is not None}))
    return parts


def train_card(result: TrainResult) -> list:
    """What the final train card adds below the live plots."""
    s = result.train_summary
    keys = (
        "steps",
        "resumed_from_step",
        "resumed_from",
        "final_loss",
        "tokens_seen",
        "world_size",
        "zero_stage",
        "parameters",
        "flops_per_token",
        "peak_tflops",
        "elapsed_s",
    )
    return [_fields_table(s, keys, ""), refs_table({"checkpoint": result.checkpoint})]


def convert_card(result: ConvertResult) -> list:
    v = result.conversion
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
    )
    checks = Table(
        [[r.name, str(r.shape), f"{r.norm:.4g}"] for r in v.tensor_checks[:200]],
        headers=["tensor (non-empty, expected shape, non-zero norm)", "shape", "norm"],
    )
    return [
        Markdown("# convert"),
        _fields_table(v, keys, "verification"),
        Markdown("## Tensors"),
        checks,
        refs_table({"model": result.model}),
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


def end_card(references: dict[str, dict], eval_summary: dict, conversion: dict, train_summary: dict) -> list:
    """The run's summary from the artifacts the end step holds (plain data, validated here)."""
    evaluation = EvalSummary.model_validate(eval_summary)
    verification = ConversionRecord.model_validate(conversion)
    trained = TrainSummary.model_validate(train_summary)
    ppl = evaluation.perplexity
    lines = [
        "# Run summary",
        f"- trained {trained.steps} steps on {trained.world_size} ranks "
        f"(ZeRO-{trained.zero_stage}), final loss {trained.final_loss:.3f}",
        f"- conversion verified: logits within {verification.tolerance} "
        f"(max difference {verification.max_logit_difference:.2g})",
        f"- held-out perplexity {ppl.untuned:.1f} → {ppl.tuned:.1f}",
        f"- engines {', '.join(evaluation.engines)} agree token for token: {evaluation.engines_agree}",
    ]
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
