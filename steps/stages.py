"""One function per pipeline stage: fetch inputs from run storage, do the work, publish outputs.

This is what the flow calls, one line per step; it knows nothing of Metaflow, so
a SageMaker or Batch container, or a test, can call it the same way. Stored
folders travel as `StoredDir` dicts (URI plus content hash).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from steps.config import TuneConfig, write_config
from steps.launch import Rendezvous, cli_args, run_torchrun
from steps.storage import RunStorage, StoredDir, download_prefix, fetch


def resolve_base_model(spec: str | None) -> Path | None:
    """A local folder for the base model: as given, or downloaded from an s3:// prefix."""
    if not spec:
        return None
    if spec.startswith("s3://"):
        return download_prefix(spec, Path(tempfile.mkdtemp(prefix="tune-base-model-")))
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.base_model = {spec!r} is not a Hugging Face model folder (no config.json)")
    return path


def _config_file(config: TuneConfig) -> Path:
    return write_config(config, Path(tempfile.mkdtemp(prefix="tune-config-")) / "config.json")


def prepare_stage(config: TuneConfig, storage: RunStorage) -> dict[str, Any]:
    from steps.domain_tokenizer import load_tokenizer
    from steps.prepare import run_prepare, sample_blocks

    work = Path(tempfile.mkdtemp(prefix="tune-prepare-"))
    summary = run_prepare(config.data, work, resolve_base_model(config.model.base_model))
    summary["sample_blocks"] = sample_blocks(work / "dataset", load_tokenizer(work / "tokenizer"))
    return {
        "dataset": storage.publish(work / "dataset", "prepare/dataset").to_dict(),
        "tokenizer": storage.publish(work / "tokenizer", "prepare/tokenizer").to_dict(),
        "summary": summary,
    }


def train_stage(
    config: TuneConfig, storage: RunStorage, dataset: dict, tokenizer: dict, rdzv: Rendezvous
) -> dict[str, Any] | None:
    """Run this node's share of training; node 0 returns the sealed training folder and its records."""
    dataset_dir = fetch(StoredDir.from_dict(dataset))
    tokenizer_dir = fetch(StoredDir.from_dict(tokenizer))
    out = storage.workdir("train")
    args = cli_args(
        config=_config_file(config),
        dataset=dataset_dir,
        tokenizer=tokenizer_dir,
        out=out,
        base_model=resolve_base_model(config.model.base_model),
    )
    run_torchrun("steps.train", args, config.train.nproc_per_node, rdzv)
    if rdzv.node_rank != 0:
        return None
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "checkpoint": storage.seal(out, "train").to_dict(),
        "summary": json.loads((out / "train_summary.json").read_text()),
        "metrics": metrics,
    }


def convert_stage(config: TuneConfig, storage: RunStorage, checkpoint: dict, tokenizer: dict) -> dict[str, Any]:
    from steps.convert import run_convert

    train_dir = fetch(StoredDir.from_dict(checkpoint), verify=False)
    tokenizer_dir = fetch(StoredDir.from_dict(tokenizer))
    out = Path(tempfile.mkdtemp(prefix="tune-convert-")) / "model"
    record = run_convert(config, train_dir, tokenizer_dir, out)
    return {"model": storage.publish(out, "convert/model").to_dict(), "verification": record}


def evaluate_stage(
    config: TuneConfig, storage: RunStorage, model: dict, dataset: dict, train_summary: dict
) -> dict[str, Any]:
    model_dir = fetch(StoredDir.from_dict(model))
    dataset_dir = fetch(StoredDir.from_dict(dataset))
    work = Path(tempfile.mkdtemp(prefix="tune-evaluate-"))
    summary_file = work / "train_summary.json"
    summary_file.write_text(json.dumps(train_summary))
    out = work / "evaluation"
    args = cli_args(
        config=_config_file(config),
        model=model_dir,
        dataset=dataset_dir,
        train_summary=summary_file,
        out=out,
        base_model=resolve_base_model(config.model.base_model),
    )
    run_torchrun("steps.evaluate", args, config.evaluate.nproc)
    probes = out / "probes.parquet"
    return {
        "evaluation": storage.publish(out, "evaluate").to_dict(),
        "summary": json.loads((out / "eval_summary.json").read_text()),
        "table": pq.read_table(out / "generations.parquet").to_pylist(),
        "probes": pq.read_table(probes).to_pylist() if probes.is_file() else [],
    }
