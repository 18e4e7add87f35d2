"""The CPU side of the GPU check (bench/gpu/): the wheel plan for the offline GPU machine and run.sh --dry-run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steps.project_files import REPO_ROOT

GPU_BENCH = REPO_ROOT / "bench" / "gpu"
ENTRYPOINTS = ["steps.train.__main__", "steps.convert.__main__", "steps.evaluate.__main__"]
ENTRYPOINTS += ["tests.support.synthetic_dataset", "tests.support.synthetic_checkpoint"]
# Imported here only because this venv's newer huggingface_hub (2.x) and pandas (2.x) use them; the image's
# huggingface_hub 1.x uses httpx (which it has) and its pandas brings what it needs.
NOT_NEEDED_THERE = {"httpx2", "httpcore2", "truststore", "pytz", "tzdata"}


@pytest.fixture(scope="module")
def fetch_wheels():
    spec = importlib.util.spec_from_file_location("fetch_wheels", GPU_BENCH / "fetch_wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_agrees_with_the_pins_and_the_image(fetch_wheels, capsys) -> None:
    assert fetch_wheels.main(["--plan"]) == 0
    plan = json.loads(capsys.readouterr().out)
    names = [w["name"] for w in plan["wheels"]]
    assert {"deepspeed", "datasets", "metaflow", "pydantic", "pydantic-core", "security-llm-tuning"} <= set(names)
    assert plan["python"] == "3.12" and plan["limit_bytes"] == 64 * 2**20


def test_a_wrong_plan_is_refused_with_the_reason(fetch_wheels, monkeypatch, capsys) -> None:
    wrong = [*fetch_wheels.CARRIED, ("deepspeed", "0.1.0", "x"), ("torch", "2.0.0", "x")]
    monkeypatch.setattr(fetch_wheels, "CARRIED", wrong)
    assert fetch_wheels.main(["--plan"]) == 2
    err = capsys.readouterr().err
    assert "deepspeed is listed twice" in err and "requirements.txt pins 0.19.8" in err
    assert "torch: the GPU image already has it" in err


@pytest.mark.slow
def test_carried_wheels_and_the_image_cover_every_import_of_the_gpu_path(fetch_wheels) -> None:
    """Whatever the entrypoints import is either in the GPU image or carried: the offline install misses nothing."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {ENTRYPOINTS!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    distributions = importlib.metadata.packages_distributions()
    carried = {fetch_wheels.normalise(n) for n, _, _ in fetch_wheels.CARRIED}
    missing = set()
    # This checkout's own packages travel with it (run.sh puts it on PYTHONPATH); `tests` is also the name of a
    # package another distribution installs (smdebug-rulesconfig), which the checkout's shadows.
    for module in set(modules) - {"steps", "flows", "tests"}:
        for dist in distributions.get(module, []):
            key = fetch_wheels.normalise(dist)
            if key not in fetch_wheels.IMAGE_HAS | carried | NOT_NEEDED_THERE and key != "security-llm-tuning":
                missing.add(f"{dist} (for import {module})")
    assert not missing, f"neither in the GPU image nor carried: {sorted(missing)}"


def test_dry_run_prints_every_part_and_the_carried_size_and_runs_nothing(tmp_path: Path) -> None:
    out, wheels = tmp_path / "out", tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "x-1.0-py3-none-any.whl").write_bytes(b"0" * 2**20)
    env = {**os.environ, "WHEELS": str(wheels), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(GPU_BENCH / "run.sh"), str(out), "--dry-run"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    for part, name in enumerate(["gpu_tests", "train", "inference", "offload", "convert"], start=1):
        assert f"part {part} " in done.stdout and f"{out}/{name}.json" in done.stdout
    assert "-m pytest -m gpu tests/gpu" in done.stdout
    limits = int(done.stdout.split("time limits: ")[1].split("s")[0])
    assert limits <= 9 * 60  # one device call (10 minutes at most) must hold every part
    size = json.loads(done.stdout.strip().splitlines()[-1])
    assert size["wheels"] == 1 and size["wheels_mib"] == 1.0 and size["total_mib"] < size["limit_mib"] == 64
    assert not out.exists()  # nothing ran


def test_dry_run_of_some_parts_and_a_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "PARTS": "2,5", "WHEELS": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(GPU_BENCH / "run.sh"), "o", "--dry-run"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0 and "part 2 " in done.stdout and "part 5 " in done.stdout
    assert "part 1 " not in done.stdout and "part 3 " not in done.stdout
    usage = subprocess.run(["bash", str(GPU_BENCH / "run.sh")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: bench/gpu/run.sh OUTDIR" in usage.stderr


@pytest.mark.slow
def test_the_full_fetch_stays_under_the_device_limit(fetch_wheels, tmp_path: Path, capsys) -> None:
    """Downloads and builds every wheel (about 15 s and 33 MiB with the index reachable)."""
    assert fetch_wheels.main(["--dest", str(tmp_path)]) == 0
    size = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert size["wheels"] == size["wheels_expected"] and size["total_mib"] < 64
    names = sorted(p.name for p in tmp_path.glob("*.whl"))
    assert any(n.startswith("deepspeed-0.19.8-") for n in names)
    assert any(n.startswith("pydantic_core-") and "cp312" in n and "x86_64" in n for n in names)
    assert any(n.startswith("security_llm_tuning-") for n in names)
    assert not (REPO_ROOT / "build").exists()  # our wheel is built from a copy


def _table(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GPU_BENCH / "table.py"), *args], capture_output=True, text=True)


def test_the_table_puts_each_figure_next_to_its_target_and_names_what_is_missing(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase classname="t" name="a"/><testcase classname="t" name="b">'
        '<failure message="x"/></testcase><testcase classname="t" name="c"><skipped/></testcase>'
        "</testsuite></testsuites>"
    )
    out = tmp_path / "out"
    out.mkdir()
    assert _table("tests", str(junit), str(out / "gpu_tests.json")).returncode == 0
    tests = json.loads((out / "gpu_tests.json").read_text())
    assert (tests["passed"], tests["failed"], tests["skipped"]) == (1, 1, 1) and tests["failed_tests"] == ["t::b"]
    train = {"tokens_per_s": 50000.0, "tflops_per_device": 380.2, "mfu": 0.4813, "peak_tflops_measured": 790.0}
    (out / "train.json").write_text(json.dumps({**train, "memory_gib": 60.1, "meets_target": True}))
    (out / "offload.json").write_text(json.dumps({"error": "stopped at its 40s limit; see run.log"}))
    done = _table("summary", str(out))
    assert done.returncode == 1  # parts 3 and 5 wrote nothing, part 4 failed
    assert "| 2 training throughput | 50000 tokens/s, 380.2 TFLOP/s, MFU 48.1% of 790.0 (target 45%)" in done.stdout
    assert (
        "1 passed, 1 failed, 1 skipped | False" in done.stdout and "did not finish: stopped at its 40s" in done.stdout
    )
    assert done.stdout.count("no result") == 2
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
    only = _table("summary", str(out), "2")
    assert only.returncode == 0 and "no result" not in only.stdout and "offload" not in only.stdout


def test_the_inference_bench_waits_for_the_gpu_once_per_call(monkeypatch) -> None:
    """Its timing helper calls CUDA's synchronize, not itself (a recursion would void parts 3 and 4 on a GPU)."""
    import torch

    spec = importlib.util.spec_from_file_location("gpu_inference_bench", GPU_BENCH / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: calls.append(args))
    module.synchronize()
    assert calls == [()]
