"""The prepare step's controllers: run `python -m steps.prepare` and publish what it wrote.

Run in the Metaflow step processes and import no torch; the work happens in the child process (see
`steps.prepare.__main__`). `prepare_stage` does everything in one step; the four phase controllers
below are what the flow's foreach over `compute.prepare.workers` shards calls, each task publishing its
folder to the run's storage for the next phase, which may run on another machine.
"""

from __future__ import annotations

import json
from pathlib import Path

from steps.config import TuneConfig, write_config
from steps.formats.dataset import SUMMARY_FILE
from steps.formats.model_folder import published_copy, resolve_base_model
from steps.results import PrepareResult, PrepareSummary
from steps.runtime.launch import LaunchError, cli_args, run_module
from steps.runtime.scratch import stage_scratch
from steps.runtime.storage import Storage, StoredDir, fetch

_PLAN_FILE = "plan.json"  # steps.prepare.shard_plan.PLAN_FILE (not imported: it would load the readers here)


def prepare_stage(config: TuneConfig, storage: Storage) -> PrepareResult:
    with stage_scratch("prepare") as scratch:  # the base model's copy and the outputs go once published
        work = scratch / "out"
        base_model = resolve_base_model(config.model.base_model, scratch / "base-model", storage)
        config_file = write_config(config, scratch / "config.json")
        run_module("steps.prepare", cli_args(config=config_file, out=work, base_model=base_model))
        tokenizer = storage.publish(work / "tokenizer", "prepare/tokenizer")
        return _result(config, storage, work / "dataset", tokenizer)


def _result(config: TuneConfig, storage: Storage, dataset: Path, tokenizer: StoredDir) -> PrepareResult:
    return PrepareResult(
        dataset=storage.publish(dataset, "prepare/dataset"),
        tokenizer=tokenizer,
        summary=PrepareSummary.model_validate_json((dataset / SUMMARY_FILE).read_text()),
        base_model_copy=published_copy(config.model.base_model, storage),
    )


def _shard_files(folder: Path, shard: int, shown: int = 5) -> str:
    plan = folder / _PLAN_FILE
    if not plan.is_file():
        return "not planned yet"
    raw = json.loads(plan.read_text())
    names = [raw["units"][part["unit"]]["name"] for part in raw["shards"][shard]]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more or "no files"


def prepare_read(config: TuneConfig, storage: Storage, shard: int) -> StoredDir:
    """Foreach task `shard`: plan the shards, read, clean, redact and fingerprint this one's documents."""
    with stage_scratch(f"prepare-read-{shard}") as scratch:
        out = scratch / "read"
        args = cli_args(config=write_config(config, scratch / "config.json"), phase="read", shard=shard, out=out)
        try:
            run_module("steps.prepare", args)
        except LaunchError as exc:
            # Whatever killed the child (an error it names, or the OOM killer), say which files this shard had.
            headline = f"prepare shard {shard} failed; its files: {_shard_files(out, shard)}"
            raise LaunchError(f"{headline}\n{exc}", public=f"{headline}; {exc.public or 'see the log'}") from None
        return storage.publish(out, f"prepare/read/{shard}")


def prepare_decide(config: TuneConfig, storage: Storage, reads: list[StoredDir]) -> tuple[StoredDir, StoredDir]:
    """The join of the reads: duplicates and split for the whole corpus, and the tokenizer."""
    with stage_scratch("prepare-decide") as scratch:
        read_dirs = [fetch(read, scratch / "read" / str(k)) for k, read in enumerate(reads)]
        base_model = resolve_base_model(config.model.base_model, scratch / "base-model", storage)
        decisions, tokenizer = scratch / "decisions", scratch / "tokenizer"
        args = cli_args(
            config=write_config(config, scratch / "config.json"),
            phase="decide",
            decisions=decisions,
            tokenizer=tokenizer,
            base_model=base_model,
        )
        run_module("steps.prepare", [*args, "--read", *map(str, read_dirs)])
        return storage.publish(decisions, "prepare/decisions"), storage.publish(tokenizer, "prepare/tokenizer")


def prepare_encode(
    config: TuneConfig, storage: Storage, shard: int, read: StoredDir, decisions: StoredDir, tokenizer: StoredDir
) -> StoredDir:
    """Foreach task `shard`: the tokens of this shard's kept documents."""
    with stage_scratch(f"prepare-encode-{shard}") as scratch:
        out = scratch / "encoded"
        args = cli_args(
            config=write_config(config, scratch / "config.json"),
            phase="encode",
            shard=shard,
            decisions=fetch(decisions, scratch / "decisions"),
            tokenizer=fetch(tokenizer, scratch / "tokenizer"),
            out=out,
            read=fetch(read, scratch / "read"),
        )
        run_module("steps.prepare", args)
        return storage.publish(out, f"prepare/encoded/{shard}")


def prepare_pack(
    config: TuneConfig, storage: Storage, decisions: StoredDir, tokenizer: StoredDir, encoded: list[StoredDir]
) -> PrepareResult:
    """The last join: every shard's tokens packed into one dataset, with one report and summary."""
    with stage_scratch("prepare-pack") as scratch:
        encoded_dirs = [fetch(e, scratch / "encoded" / str(k)) for k, e in enumerate(encoded)]
        args = cli_args(
            config=write_config(config, scratch / "config.json"),
            phase="pack",
            decisions=fetch(decisions, scratch / "decisions"),
            tokenizer=fetch(tokenizer, scratch / "tokenizer"),
            out=scratch / "out",
        )
        run_module("steps.prepare", [*args, "--encoded", *map(str, encoded_dirs)])
        return _result(config, storage, scratch / "out" / "dataset", tokenizer)
