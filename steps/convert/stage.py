"""The convert step's controller: runs `python -m steps.convert` on the train folder and publishes the model.

Runs in the Metaflow step process and imports no torch; the conversion runs in
a child process, whose memory is the conversion's alone (bounded by one shard).
"""

from __future__ import annotations

from pathlib import Path

from steps.config import TuneConfig, write_config
from steps.formats.model_folder import CONVERSION_FILE
from steps.results import ConversionRecord, ConvertResult
from steps.runtime.launch import cli_args, run_module
from steps.runtime.scratch import stage_scratch
from steps.runtime.storage import Storage, StoredDir, fetch


def convert_stage(config: TuneConfig, storage: Storage, checkpoint: StoredDir, tokenizer: StoredDir) -> ConvertResult:
    with stage_scratch("convert") as scratch:  # fetched inputs and the written model go once published
        return _convert(config, storage, checkpoint, tokenizer, scratch)


def _convert(
    config: TuneConfig, storage: Storage, checkpoint: StoredDir, tokenizer: StoredDir, scratch: Path
) -> ConvertResult:
    # Not re-hashed here: the checkpoints are most of the run's bytes, and older ones are not read.
    # The manifest itself is checked against the reference; the child checks each file it reads
    # (the newest checkpoint, its record, the logits) against it before unpickling anything.
    train_dir = fetch(checkpoint, scratch / "train", verify=False)
    out = scratch / "model"
    config_file = write_config(config, scratch / "config.json")
    args = cli_args(config=config_file, train=train_dir, tokenizer=fetch(tokenizer, scratch / "tokenizer"), out=out)
    run_module("steps.convert", args)
    return publish_model(storage, out)


def publish_model(storage: Storage, out: Path) -> ConvertResult:
    """Publish a converted model folder (written here or by a SageMaker job) as the run's `convert/model`."""
    return ConvertResult(
        model=storage.publish(out, "convert/model"),
        conversion=ConversionRecord.model_validate_json((out / CONVERSION_FILE).read_text()),
    )
