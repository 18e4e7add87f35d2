"""The whole flow with Metaflow's S3 datastore, against the moto server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
import yaml

from steps.project_files import DEBUG_CONFIG, FLOW_FILE
from steps.runtime.storage import StoredDir, fetch

ROOT = "s3://tune-flow-s3/metaflow"


def test_pipeline_on_the_s3_datastore(aws_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metaflow import Run, Runner, namespace

    boto3.client("s3").create_bucket(Bucket="tune-flow-s3")
    raw = yaml.safe_load(DEBUG_CONFIG.read_text())
    # Kept short: what is under test is where files and artifacts go, not training.
    raw["train"].update({"max_steps": 4, "checkpoint_every": 2, "warmup_steps": 1, "log_every": 2})
    raw["data"].update({"eval_prompts": 2})
    raw["evaluate"].update({"engines": ["hf"], "perplexity_blocks": 8})
    config = tmp_path / "s3.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {
        **aws_env,
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": ROOT,
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    temp = tmp_path / "tmp"  # the run's temporary folders, to see that each stage removed its own
    temp.mkdir()
    env["TMPDIR"] = str(temp)
    config_option = [("config", str(config))]
    with Runner(str(FLOW_FILE), show_output=False, cwd=str(tmp_path), env=env, config=config_option) as runner:
        result = runner.run()
        assert result.status == "successful", result.stdout[-3000:] + result.stderr[-3000:]
        pathspec = result.run.pathspec

    # Fetched inputs, base-model copies, checkpoint staging, outputs: gone once each stage ended.
    assert sorted(p.name for p in temp.glob("tune-*")) == []
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # the local metadata lives in <cwd>/.metaflow
    namespace(None)
    run = Run(pathspec)
    assert run.successful
    end = run["end"].task.data
    run_files = f"{ROOT}/TuneFlow/{run.id}/files"
    for name, ref in end.references.items():
        assert ref["uri"].startswith(run_files + "/"), (name, ref["uri"])
    model = fetch(StoredDir.from_dict(end.references["model"]), tmp_path / "model")  # hashes checked
    assert (model / "model.safetensors").is_file()
    assert end.conversion["logits_match"] is True and end.train_summary["steps"] == 4
    # Metaflow's own artifacts are in the same bucket, not in a local .metaflow folder.
    keys = boto3.client("s3").list_objects_v2(Bucket="tune-flow-s3", Prefix="metaflow/TuneFlow/")["KeyCount"]
    assert keys > 0 and not (tmp_path / ".metaflow" / "TuneFlow" / run.id / "end").exists()
