"""Fetch the wheels the GPU machine lacks into a git-ignored folder, for `bench/gpu/run.sh` to install offline.

    python bench/gpu/fetch_wheels.py [--dest .gl/wheels]    # download + build, print the size
    python bench/gpu/fetch_wheels.py --plan                  # check and print the plan, no network

The GPU machine (/work/.library/device/KINDS.md) has Python 3.12, torch, transformers,
tokenizers, safetensors, pyarrow, pandas, accelerate, ninja, numpy, PyYAML, psutil, … but no
internet. What our train/convert/evaluate entrypoints and the GPU tests import beyond that
travels as wheels for cp312 manylinux x86_64, installed there with `--no-index --no-deps`
(so every dependency we need is named here, each once). DeepSpeed is published as an sdist
only: it is built into a wheel here with no ops (they JIT-compile on the GPU machine, which
has nvcc and ninja). Our own package goes as a wheel too. The carried folder plus the
working tree must stay under the device tool's 64 MiB; over that, this exits non-zero.
`--plan` checks, without the network, that the pins agree with requirements.txt and that
no carried package is one the image already has (a second version there would shadow
its own); tests/unit/test_gpu_bench.py runs it in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO / ".gl" / "wheels"
LIMIT_BYTES = 64 * 2**20
PLATFORM_ARGS = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:", "--no-deps"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]

# (distribution, version, why). Versions of requirements.txt pins must match it (checked by --plan).
CARRIED: list[tuple[str, str, str]] = [
    ("deepspeed", "0.19.8", "training and inference engines (built here from the sdist)"),
    ("hjson", "3.1.0", "deepspeed"),
    ("pydantic", "2.14.3", "steps.config, steps.results, deepspeed"),
    ("pydantic-core", "2.50.4", "pydantic"),
    ("annotated-types", "0.8.0", "pydantic"),
    ("typing-inspection", "0.4.5", "pydantic"),
    ("datasets", "5.2.0", "steps.formats.blocks"),
    ("dill", "0.4.1", "datasets"),
    ("multiprocess", "0.70.19", "datasets"),
    ("boto3", "1.44.5", "steps.runtime.storage (S3 backend, imported with the package)"),
    ("botocore", "1.44.8", "boto3"),
    ("s3transfer", "0.19.3", "boto3"),
    ("jmespath", "1.1.0", "boto3"),
    ("metaflow", "2.19.39", "flows/ (the flow itself; not run by the GPU check)"),
    ("cwe2", "3.0.0", "evaluate's probes (steps.formats.cwe_catalogue)"),
    ("importlib-resources", "7.1.0", "cwe2"),
]
OUR_PACKAGE = "security-llm-tuning"

# The image's Python packages (KINDS.md, "Python packages already there"), normalised names.
IMAGE_HAS = set(
    """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
    charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
    cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
    fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
    joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
    markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
    mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
    nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
    nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
    nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
    orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
    protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
    pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml
    regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
    sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate
    tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
    torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
    typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
    zipp""".split()
)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins(path: Path = REPO / "requirements.txt") -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def check_plan() -> list[str]:
    """Problems with CARRIED: pins that disagree with requirements.txt, duplicates, packages the image has."""
    problems, seen = [], set()
    pins = requirement_pins()
    for name, version, _ in CARRIED:
        key = normalise(name)
        if key in seen:
            problems.append(f"{name} is listed twice; pip install --no-deps refuses two versions")
        seen.add(key)
        if key in pins and pins[key] != version:
            problems.append(f"{name}=={version} here but requirements.txt pins {pins[key]}")
        if key in IMAGE_HAS:
            problems.append(f"{name}: the GPU image already has it; carrying a second version shadows its own")
    return problems


def plan() -> dict:
    return {
        "python": "3.12",
        "platforms": PLATFORMS,
        "wheels": [{"name": n, "version": v, "why": w} for n, v, w in CARRIED] + [{"name": OUR_PACKAGE, "why": "ours"}],
        "limit_bytes": LIMIT_BYTES,
    }


def tree_bytes() -> int:
    """Bytes of the working tree that travels with every device call (tracked and untracked-not-ignored files)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((REPO / p.decode()).stat().st_size for p in listed if p and (REPO / p.decode()).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.whl"))


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"], check=True)


def fetch(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()  # one version of each: two stop the offline install
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    binary = [f"{n}=={v}" for n, v, _ in CARRIED if n != "deepspeed"]
    _pip("download", *PLATFORM_ARGS, *platforms, "-d", str(dest), *binary)
    with tempfile.TemporaryDirectory() as build:
        # The sdist's setup.py imports torch; no isolation so it finds this venv's. No ops prebuilt: they JIT on CUDA.
        env_args = ["wheel", "--no-deps", "--no-build-isolation", "-w", build]
        subprocess.run(
            [sys.executable, "-m", "pip", *env_args, "deepspeed==" + dict((n, v) for n, v, _ in CARRIED)["deepspeed"]],
            check=True,
            env={**os.environ, "DS_BUILD_OPS": "0"},
        )
        # Built from a copy of the package's files, so that setuptools' build/ folder never lands in the checkout.
        source = Path(build) / "source"
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        for package in ("steps", "flows"):
            shutil.copytree(REPO / package, source / package, ignore=skip)
        for name in ("pyproject.toml", "requirements.txt"):
            shutil.copy2(REPO / name, source / name)
        _pip("wheel", "--no-deps", "--no-build-isolation", "-w", build, str(source))
        for wheel in Path(build).glob("*.whl"):
            shutil.move(str(wheel), dest / wheel.name)


def report_size(dest: Path, fetched: bool) -> int:
    """Prints what would travel (the wheels and the working tree); 1 if over the device tool's limit."""
    wheels, tree = folder_bytes(dest), tree_bytes()
    names = sorted(p.name for p in dest.glob("*.whl"))
    if fetched:
        print("\n".join(names))
    size = {
        "wheels_folder": str(dest),
        "wheels": len(names),
        "wheels_expected": len(CARRIED) + 1,
        "wheels_mib": round(wheels / 2**20, 2),
        "tree_mib": round(tree / 2**20, 2),
        "total_mib": round((wheels + tree) / 2**20, 2),
        "limit_mib": LIMIT_BYTES // 2**20,
    }
    print(json.dumps(size))
    if wheels + tree > LIMIT_BYTES:
        print(
            f"fetch_wheels: {dest} ({wheels / 2**20:.1f} MiB) plus the working tree ({tree / 2**20:.1f} MiB) "
            f"is over the device tool's {LIMIT_BYTES / 2**20:.0f} MiB; carry fewer wheels",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--plan", action="store_true", help="check and print the plan; download nothing")
    parser.add_argument("--size", action="store_true", help="print the size of what would travel; download nothing")
    args = parser.parse_args(argv)
    problems = check_plan()
    if problems:
        print("fetch_wheels: the plan is wrong:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.plan:
        print(json.dumps(plan(), indent=1))
        return 0
    if args.size:
        return report_size(args.dest, fetched=False)
    fetch(args.dest)
    return report_size(args.dest, fetched=True)


if __name__ == "__main__":
    sys.exit(main())
