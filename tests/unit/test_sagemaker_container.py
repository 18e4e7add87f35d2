"""Our container under the SageMaker contract, without running a stage: its hosts (rendezvous, who writes
/opt/ml/model, a stale host count), and what a failed job says to whoever describes it (FailureReason) and a
failed step's live card shows: our own messages, never a library's, whose text may quote its input."""

from __future__ import annotations

import json
import shutil
import tempfile

import botocore.exceptions
import pytest

from steps.config import write_config
from steps.dispatch.container import main, read_contract
from steps.prepare.base_model import store_base_model
from steps.runtime.error_text import shown_message
from steps.runtime.launch import LaunchError

CANARY = "hf_CANARY_r3ason_9d1e"


def _host(tmp_path, monkeypatch, **env: str):
    temp = tmp_path / "tmp"  # the container's own /tmp, gone with it
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    for key, value in {
        "SAGEMAKER_BASE_DIR": str(tmp_path),
        "SM_HOSTS": json.dumps(["algo-1"]),
        "SM_CURRENT_HOST": "algo-1",
        **env,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TUNE_SECRET_SOURCES", raising=False)
    monkeypatch.delenv("SM_CHANNEL_CONFIG", raising=False)
    return tmp_path / "output" / "failure"


def test_a_library_error_reaches_failure_reason_as_its_type_only(tmp_path, monkeypatch, capsys) -> None:
    # int() quotes the value it could not read: here a secret that landed in the wrong variable.
    failure = _host(tmp_path, monkeypatch, SM_NUM_GPUS=CANARY)
    assert main() == 1
    reason = failure.read_text()
    assert reason.startswith("ValueError") and CANARY not in reason
    assert CANARY in capsys.readouterr().err  # the job's own log keeps the whole text


def test_our_own_error_reaches_failure_reason_whole(tmp_path, monkeypatch) -> None:
    failure = _host(tmp_path, monkeypatch, SM_NUM_GPUS="0")
    assert main() == 1
    assert failure.read_text() == (
        f"ContainerError: input channel 'config' is missing or empty at {tmp_path}/input/data/config"
    )


def test_shown_messages_keep_ours_and_drop_the_rest() -> None:
    foreign = botocore.exceptions.ClientError(
        {"Error": {"Code": "ValidationException", "Message": f"bad value {CANARY}"}}, "CreateTrainingJob"
    )
    assert CANARY not in shown_message(foreign) and shown_message(foreign).startswith("ClientError")
    launch = LaunchError(f"steps.train exited with code 1\nlast lines:\n{CANARY}", public="steps.train exited")
    assert shown_message(launch) == "LaunchError: steps.train exited"
    assert shown_message(KeyError(CANARY)).startswith("KeyError") and CANARY not in shown_message(KeyError(CANARY))


def test_a_missing_base_model_shows_what_to_fix(tmp_path) -> None:
    """A missing input named by the config is ours to explain: its message reaches cards and FailureReason."""
    with pytest.raises(FileNotFoundError) as missing:
        store_base_model(str(tmp_path / "no-model"), tmp_path / "copy")
    assert shown_message(missing.value).startswith("NotFound: model.base_model = ")


@pytest.mark.parametrize("card_kind", ["train", "status"])
def test_a_failed_steps_live_card_shows_no_library_message(card_kind: str) -> None:
    from flows.live_card import LiveStatusCard, LiveTrainCard
    from tests.unit.test_train_watching import _Card, _rendered

    live = LiveTrainCard(20, refresh_interval_s=0) if card_kind == "train" else LiveStatusCard("evaluate", 0)
    card = _Card()
    card.append = lambda component: card.components.append(component)
    with pytest.raises(OSError), live.shown_on(card):
        raise OSError(f"cannot open https://hub/model?token={CANARY}")
    text = _rendered(card)
    assert "FAILED" in text and "OSError" in text and CANARY not in text


def test_an_evaluate_job_whose_hosts_are_not_the_configs_fails_naming_the_field(
    tmp_path, monkeypatch, debug_config
) -> None:
    """The step sets InstanceCount from compute.evaluate.instance_count; a config channel that says otherwise is
    stale, and the hosts would each wait for ranks that never come."""
    failure = _host(tmp_path, monkeypatch, SM_NUM_GPUS="0", SM_HOSTS=json.dumps(["algo-2", "algo-1"]))
    monkeypatch.setenv("TUNE_STAGE", "evaluate")
    (tmp_path / "input" / "data" / "config").mkdir(parents=True)
    write_config(debug_config, tmp_path / "input" / "data" / "config" / "config.json")
    assert main() == 1
    assert failure.read_text().startswith(
        "ContainerError: compute.evaluate.instance_count is 1 but the job has 2 hosts"
    )
    # Every host meets at the same first host, and only that one writes the job's /opt/ml/model.
    contract = read_contract()
    assert contract.rendezvous().main_addr == "algo-1" and contract.node_rank == 0
    assert contract.model_output() == tmp_path / "model"
    monkeypatch.setenv("SM_CURRENT_HOST", "algo-2")
    other = read_contract()
    assert other.rendezvous().node_rank == 1 and other.rendezvous().num_nodes == 2
    assert other.model_output() != tmp_path / "model"


def test_a_channel_that_is_not_the_folder_the_step_sent_fails_the_job(tmp_path, monkeypatch, debug_config) -> None:
    """The container takes each channel's manifest hash to the reference the step sent in the config channel:
    whatever else lies under the prefix (a folder published again since, a file changed) never reaches a stage."""
    from steps.runtime.storage import open_storage

    failure = _host(tmp_path, monkeypatch, SM_NUM_GPUS="0")
    monkeypatch.setenv("TUNE_STAGE", "convert")
    data = tmp_path / "input" / "data"
    (data / "config").mkdir(parents=True)
    write_config(debug_config, data / "config" / "config.json")
    refs = {}
    for name in ("checkpoint", "tokenizer"):
        source = tmp_path / "published" / name
        source.mkdir(parents=True)
        (source / "file.json").write_text("{}")
        refs[name] = open_storage(tmp_path / "store").publish(source, name).to_dict()
        shutil.copytree(tmp_path / "store" / name, data / name)  # what SageMaker downloads: the prefix, manifest too
    (data / "tokenizer" / "file.json").write_text('{"changed": true}')
    (data / "config" / "inputs.json").write_text(json.dumps(refs))
    assert main() == 1
    reason = failure.read_text()
    assert reason.startswith("ContainerError: input channel 'tokenizer' is not the folder the step sent")
    assert "files differ from the manifest: changed file.json" in reason
