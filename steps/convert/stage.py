"""The convert step's controller: runs `python -m steps.convert` on the train folder and publishes the model.

Runs in the Metaflow step process and imports no torch; the conversion runs in
a child process, whose memory is the conversion's alone (bounded by one shard).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from steps.config import TuneConfig, write_temp_config
from steps.formats.model_folder import CONVERSION_FILE
from steps.results import ConversionRecord, ConvertResult
from steps.runtime.launch import cli_args, run_module
from steps.runtime.storage import Storage, StoredDir, fetch


def convert_stage(config: TuneConfig, storage: Storage, checkpoint: StoredDir, tokenizer: StoredDir) -> ConvertResult:
    # Not re-hashed here: the checkpoints are most of the run's bytes, and the logits check after
    # conversion is what proves the weights.
    train_dir = fetch(checkpoint, verify=False)
    out = Path(tempfile.mkdtemp(prefix="tune-convert-")) / "model"
    args = cli_args(config=write_temp_config(config), train=train_dir, tokenizer=fetch(tokenizer), out=out)
    run_module("steps.convert", args)
    return publish_model(storage, out)


def publish_model(storage: Storage, out: Path) -> ConvertResult:
    """Publish a converted model folder (written here or by a SageMaker job) as the run's `convert/model`."""
    return ConvertResult(
        model=storage.publish(out, "convert/model"),
        conversion=ConversionRecord.model_validate_json((out / CONVERSION_FILE).read_text()),
    )
