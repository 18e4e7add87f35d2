"""Card contents for each step, built from the summaries the stages return."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from metaflow.cards import Markdown, Table, VegaChart


def _line_spec(records: list[dict], field: str, title: str) -> dict:
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title,
        "width": 480,
        "height": 220,
        "data": {"values": [{"step": r["step"], field: r[field]} for r in records if r.get(field) is not None]},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "step", "type": "quantitative"},
            "y": {"field": field, "type": "quantitative", "scale": {"zero": False}},
        },
    }


def _histogram_chart(histogram: dict[str, list[float]], title: str, unit: str) -> VegaChart:
    edges, counts = histogram["edges"], histogram["counts"]
    values = [{"from": edges[i], "to": edges[i + 1], "documents": c} for i, c in enumerate(counts)]
    return VegaChart(
        {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": title,
            "width": 480,
            "height": 200,
            "data": {"values": values},
            "mark": "bar",
            "encoding": {
                "x": {"field": "from", "bin": {"binned": True}, "title": unit},
                "x2": {"field": "to"},
                "y": {"field": "documents", "type": "quantitative"},
            },
        }
    )


def _fields_table(record: dict[str, Any], keys: tuple[str, ...], label: str) -> Table:
    """Chosen fields of a summary record as a two-column table."""
    return Table([[key, str(record[key])] for key in keys], headers=[label, "value"])


def _ref_rows(refs: dict[str, dict]) -> list[list[str]]:
    return [
        [name, ref["uri"], ref["sha256"][:16], str(ref["files"]), f"{ref['bytes'] / 1e6:.1f} MB"]
        for name, ref in refs.items()
    ]


def refs_table(refs: dict[str, dict]) -> Table:
    return Table(_ref_rows(refs), headers=["what", "where", "sha256", "files", "size"])


def prepare_card(result: dict[str, Any]) -> list:
    s = result["summary"]
    report = s["report"]
    rows = [["documents kept", report["kept_documents"]], ["characters kept", report["kept_chars"]]]
    rows += [[f"dropped: {reason}", count] for reason, count in sorted(report["dropped"].items())]
    rows += [
        ["duplicates found: exact / near", f"{report['duplicates']['exact']} / {report['duplicates']['near']}"],
        ["documents with redactions", report["redacted_documents"]],
    ]
    for split in ("train", "validation"):
        rows.append(
            [
                f"{split}: documents / tokens / blocks",
                f"{s['documents'][split]} / {s['tokens'][split]} / {s['blocks'][split]}",
            ]
        )
    rows += [["block size", s["block_size"]], ["vocabulary", s["vocab_size"]], ["evaluation prompts", s["prompts"]]]
    mix = [["files", fmt, n] for fmt, n in sorted(report["files_by_format"].items())]
    mix += [["documents kept", fmt, n] for fmt, n in sorted(report["documents_by_format"].items())]
    redactions = [[kind, count] for kind, count in sorted(report["redactions"].items())] or [["none", 0]]
    parts = [
        Markdown(f"# prepare\nCorpus: `{s['corpus']}`"),
        Table(rows, headers=["", "value"]),
        Markdown("## Source mix"),
        Table(mix, headers=["", "format", "count"]),
        Markdown("## Redactions (counts only; every change is in the dataset's report.jsonl)"),
        Table(redactions, headers=["type", "count"]),
        _histogram_chart(s["doc_chars_histogram"], "Document length", "characters"),
        _histogram_chart(s["doc_tokens_histogram"], "Document length", "tokens"),
        Markdown("## Sample blocks (decoded)"),
    ]
    parts += [Markdown(f"```\n{block}\n```") for block in s["sample_blocks"]]
    if report["skipped_files"]:
        title = f"## Skipped files ({report['skipped_file_count']}, first {len(report['skipped_files'])} shown)"
        parts += [
            Markdown(title),
            Table([[f["path"], f["reason"]] for f in report["skipped_files"]], headers=["skipped file", "why"]),
        ]
    parts.append(refs_table({"dataset": result["dataset"], "tokenizer": result["tokenizer"]}))
    return parts


class LiveTrainCard:
    """The train card while training runs: status line, loss and throughput plots, refreshed in place.

    `components` go on the card when the step starts; `update` takes the metrics so far
    and returns True when the card should be refreshed.
    """

    CHARTS = (
        ("loss", "Training loss"),
        ("lr", "Learning rate"),
        ("tokens_per_s", "Throughput (tokens/s)"),
        ("tflops", "Achieved TFLOP/s per device"),
    )

    def __init__(self, total_steps: int, refresh_interval_s: float) -> None:
        self.total, self.refresh_interval_s = total_steps, refresh_interval_s
        self._card = None
        self.status = Markdown("# train\nWaiting for the first metrics...")
        self.charts = {field: VegaChart(_line_spec([], field, title)) for field, title in self.CHARTS}

    @property
    def components(self) -> list:
        return [self.status, *self.charts.values()]

    def update(self, records: list[dict]) -> None:
        if not records:
            return
        last = records[-1]
        mfu = f", MFU {last['mfu']:.1%}" if last.get("mfu") is not None else ""
        self.status.update(
            f"# train\nStep **{last['step']} / {self.total}**: loss {last['loss']:.4f}, "
            f"{last['tokens_per_s']:.0f} tokens/s, {last['tflops']:.2f} TFLOP/s per device{mfu}, "
            f"memory {last['memory_gib']:.2f} GiB"
        )
        for field, title in self.CHARTS:
            self.charts[field].update(_line_spec(records, field, title))

    @contextlib.contextmanager
    def shown_on(self, card):
        """Put the live components on the step's card; on a failure, leave them marked FAILED."""
        self._card = card
        card.extend(self.components)
        try:
            yield self
        except Exception as exc:
            # Metaflow renders no final card for a failed task, so the live card is what stays; its
            # refreshes are rate-limited (even forced ones), hence the wait before the last one.
            self.failed(exc)
            time.sleep(self.refresh_interval_s)
            card.refresh(force=True)
            raise

    def refresh_with(self, records: list[dict]) -> None:
        """The metrics so far onto the plots, and the card refreshed (Metaflow rate-limits it)."""
        self.update(records)
        if self._card is not None:
            self._card.refresh()

    def failed(self, error: BaseException) -> None:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        self.status.update(f"# train: FAILED\n`{first_line}`\n\nThe plots show the metrics up to the failure.")


def train_card(result: dict[str, Any]) -> list:
    """What the final train card adds below the live plots."""
    s = result["summary"]
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
    return [_fields_table(s, keys, ""), refs_table({"checkpoint": result["checkpoint"]})]


def convert_card(result: dict[str, Any]) -> list:
    v = result["verification"]
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
        [[r["name"], str(r["shape"]), f"{r['norm']:.4g}"] for r in v["tensor_checks"][:200]],
        headers=["tensor (non-empty, expected shape, non-zero norm)", "shape", "norm"],
    )
    return [
        Markdown("# convert"),
        _fields_table(v, keys, "verification"),
        Markdown("## Tensors"),
        checks,
        refs_table({"model": result["model"]}),
    ]


def _bar_chart(values: list[dict], x: str, y: str, title: str) -> VegaChart:
    return VegaChart(
        {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": title,
            "width": 360,
            "height": 180,
            "data": {"values": values},
            "mark": "bar",
            "encoding": {"x": {"field": x, "type": "nominal"}, "y": {"field": y, "type": "quantitative"}},
        }
    )


PROBE_METRICS = ("exact_match", "answer_logprob_per_token", "choice_accuracy")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def evaluate_card(result: dict[str, Any]) -> list:
    s = result["summary"]
    ppl = s["perplexity"]
    before_after = [["held-out perplexity", f"{ppl['untuned']:.2f}", f"{ppl['tuned']:.2f}"]]
    tuned, untuned = s["probes"]["tuned"], s["probes"]["untuned"]
    for group in tuned:
        for metric in PROBE_METRICS:
            before_after.append([f"probes {group}: {metric}", _fmt(untuned[group][metric]), _fmt(tuned[group][metric])])
    engines = [
        [e, t["tokens"], f"{t['tokens_per_s']:.1f}", f"{t['latency_s_mean']:.4f}", f"{s['agreement'][e]:.2f}"]
        for e, t in s["throughput"].items()
    ]
    notes = [f"- {e}: {n}" for e, ns in s["engine_notes"].items() for n in ns]
    speed = [{"engine": e, "tokens_per_s": t["tokens_per_s"]} for e, t in s["throughput"].items()]
    agreement = "required and met" if s["agreement_required"] else "reported (not required on GPU or when sampling)"
    samples = [r for r in result["table"] if r["engine"] == s["engines"][0]][:8]
    completed = [r for r in result.get("probes", []) if r["model"] == "tuned" and r["completion"] is not None]
    # The names the model got right first: with a whole catalogue probed they are the news, and rare.
    probe_samples = sorted(completed, key=lambda r: not r["exact_match"])
    parts = [
        Markdown(f"# evaluate\n{s['prompts']} prompts {s['prompt_sources']}, generation {s['generation']}"),
        Markdown("## Before and after tuning"),
        Table(before_after, headers=["metric", "before (untuned)", "after (tuned)"]),
        Markdown(f"## Engines\nToken-for-token agreement with `{s['agreement_with']}`: {agreement}"),
        Table(engines, headers=["engine", "tokens", "tokens/s", "latency per prompt (s)", "agreement"]),
        _bar_chart(speed, "engine", "tokens_per_s", "Generation throughput (tokens/s)"),
    ]
    if notes:
        parts.append(Markdown("\n".join(notes)))
    parts += [
        Markdown("## Sample generations"),
        Table(
            [[r["index"], r["source"], r["prompt"], r["reference"], r["generation"]] for r in samples],
            headers=["#", "source", "prompt", "reference", "generation"],
        ),
        Markdown("## Generations (all engines)"),
        Table(
            [[r["index"], r["engine"], r["generation"], r["tokens"], f"{r['latency_s']:.4f}"] for r in result["table"]],
            headers=["#", "engine", "generation", "tokens", "latency (s)"],
        ),
    ]
    if probe_samples:
        parts += [
            Markdown(
                f"## Probe completions (tuned)\n{sum(r['exact_match'] for r in completed)} of {len(completed)} "
                "completed exactly; those first, then the others in probe order."
            ),
            Table(
                [
                    [r["split"], r["prompt"], r["answer"], r["completion"], str(r["exact_match"])]
                    for r in probe_samples[:12]
                ],
                headers=["split", "prompt", "answer", "completion", "exact"],
            ),
        ]
    parts.append(refs_table({"evaluation": result["evaluation"]}))
    return parts


def end_card(refs: dict[str, dict], evaluation: dict, verification: dict, train_summary: dict) -> list:
    ppl = evaluation["perplexity"]
    lines = [
        "# Run summary",
        f"- trained {train_summary['steps']} steps on {train_summary['world_size']} ranks "
        f"(ZeRO-{train_summary['zero_stage']}), final loss {train_summary['final_loss']:.3f}",
        f"- conversion verified: logits within {verification['tolerance']} "
        f"(max difference {verification['max_logit_difference']:.2g})",
        f"- held-out perplexity {ppl['untuned']:.1f} → {ppl['tuned']:.1f}",
        f"- engines {', '.join(evaluation['engines'])} agree token for token: {evaluation['engines_agree']}",
    ]
    before, after = evaluation["probes"]["untuned"].get("all"), evaluation["probes"]["tuned"].get("all")
    if before and after:
        lines += [f"- probe {metric} {_fmt(before[metric])} → {_fmt(after[metric])}" for metric in PROBE_METRICS]
    return [Markdown("\n".join(lines)), refs_table(refs)]


def config_card(settings: dict[str, Any]) -> list:
    rows = [[f"{section}.{key}", str(value)] for section, fields in settings.items() for key, value in fields.items()]
    return [Markdown("# Resolved configuration"), Table(rows, headers=["field", "value"])]
