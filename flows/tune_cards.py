"""Card contents for each step, built from the summaries the stages return."""

from __future__ import annotations

from typing import Any

from metaflow.cards import Markdown, Table, VegaChart


def _line_chart(records: list[dict], field: str, title: str) -> VegaChart:
    return VegaChart(
        {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": title,
            "width": 480,
            "height": 220,
            "data": {"values": [{"step": r["step"], field: r[field]} for r in records]},
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": "step", "type": "quantitative"},
                "y": {"field": field, "type": "quantitative", "scale": {"zero": False}},
            },
        }
    )


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


def train_card(result: dict[str, Any]) -> list:
    s, metrics = result["summary"], result["metrics"]
    keys = (
        "steps",
        "resumed_from_step",
        "final_loss",
        "tokens_seen",
        "world_size",
        "zero_stage",
        "parameters",
        "elapsed_s",
    )
    return [
        Markdown("# train"),
        _fields_table(s, keys, ""),
        _line_chart(metrics, "loss", "Training loss"),
        _line_chart(metrics, "lr", "Learning rate"),
        _line_chart(metrics, "tokens_per_s", "Throughput (tokens/s)"),
        refs_table({"checkpoint": result["checkpoint"]}),
    ]


def convert_card(result: dict[str, Any]) -> list:
    v = result["verification"]
    keys = (
        "checkpoint",
        "step",
        "trained_world_size",
        "tensors",
        "parameters",
        "max_logit_difference",
        "tolerance",
        "logits_match",
    )
    return [
        Markdown("# convert"),
        _fields_table(v, keys, "verification"),
        refs_table({"model": result["model"]}),
    ]


def evaluate_card(result: dict[str, Any]) -> list:
    s = result["summary"]
    ppl = s["perplexity"]
    agreement_key = next(k for k in s if k.startswith("agreement_with_"))
    metrics = [
        ["held-out perplexity, tuned", f"{ppl['tuned']:.2f}"],
        ["held-out perplexity, untuned", f"{ppl['untuned']:.2f}"],
        ["ratio tuned / untuned", f"{ppl['ratio']:.3f}"],
        ["engines agree token for token", str(s["engines_agree"])],
    ]
    metrics += [[f"{agreement_key.replace('_', ' ')}: {e}", f"{r:.2f}"] for e, r in s[agreement_key].items()]
    speed = [{"engine": e, "tokens_per_s": t["tokens_per_s"]} for e, t in s["throughput"].items()]
    chart = VegaChart(
        {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": "Generation throughput",
            "width": 360,
            "height": 180,
            "data": {"values": speed},
            "mark": "bar",
            "encoding": {
                "x": {"field": "engine", "type": "nominal"},
                "y": {"field": "tokens_per_s", "type": "quantitative"},
            },
        }
    )
    table = Table(
        [[r["index"], r["engine"], r["prompt"], r["reference"], r["generation"]] for r in result["table"]],
        headers=["#", "engine", "prompt", "reference", "generation"],
    )
    return [
        Markdown("# evaluate"),
        Table(metrics, headers=["metric", "value"]),
        chart,
        Markdown("## Generations"),
        table,
        refs_table({"evaluation": result["evaluation"]}),
    ]


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
    return [Markdown("\n".join(lines)), refs_table(refs)]


def config_card(settings: dict[str, Any]) -> list:
    rows = [[f"{section}.{key}", str(value)] for section, fields in settings.items() for key, value in fields.items()]
    return [Markdown("# Resolved configuration"), Table(rows, headers=["field", "value"])]
