"""The house rules of the code, checked: where modules live, what they may import, how big they get.

- `steps/` never imports Metaflow; stage packages never import each other; the shared
  packages import no stage.
- The flow's own imports load no torch, so every step process starts fast; the heavy
  libraries load in the stage entrypoints, at the top of their modules.
- Every stage has a command line (`python -m steps.<stage>`), and no file edits `sys.path`.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from steps.project_files import REPO_ROOT
from steps.runtime.stage_spec import CheckpointArgs, entry_args
from steps.stages import SPECS

STEPS = REPO_ROOT / "steps"
STAGES = ("prepare", "train", "convert", "evaluate")
SHARED = ("config", "formats", "runtime", "results", "project_files")
REGISTRY = ("stages", "dispatch")
"""The stage specs (`steps/stages.py`) and the runner may name every stage; no stage and no shared package names
them."""
MAX_LINES = 600
"""The style's hard limit ("split anything past ~600"); below it, files are cut by concept, not by count."""
HEAVY = ("torch", "deepspeed", "transformers", "datasets", "tokenizers")
OPTIONAL = ("torch.utils.tensorboard",)
"""Imported where a setting asks for them, inside the function, so that the pipeline runs without them."""


def _modules() -> list[Path]:
    return sorted(STEPS.rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for every import of a file."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, in_function))
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return found


def _package(path: Path) -> str:
    """The first part below steps/: a stage, a shared package, or dispatch."""
    return path.relative_to(STEPS).parts[0].removesuffix(".py")


def test_steps_never_import_metaflow() -> None:
    offenders = [str(p) for p in _modules() for name, _ in _imports(p) if name.split(".")[0] == "metaflow"]
    assert not offenders


def test_stages_meet_only_through_shared_packages() -> None:
    crossings = []
    for path in _modules():
        home = _package(path)
        for name, _ in _imports(path):
            parts = name.split(".")
            if parts[0] != "steps" or len(parts) < 2:
                continue
            target = parts[1]
            stage_crossing = home in STAGES and target in STAGES and target != home
            shared_leaning = home in SHARED and (target in STAGES or target in REGISTRY)
            if stage_crossing or shared_leaning:
                crossings.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert not crossings


def test_every_module_belongs_to_a_stage_or_a_shared_package() -> None:
    allowed = {*STAGES, *SHARED, *REGISTRY, "__init__"}
    assert {_package(p) for p in _modules()} <= allowed


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(STEPS)))
def test_modules_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_heavy_libraries_are_imported_at_the_top_of_modules() -> None:
    """A function-level import of torch and friends hides a module's real weight from its readers."""
    hidden = [
        f"{p.relative_to(REPO_ROOT)}: {name}"
        for p in _modules()
        for name, in_function in _imports(p)
        if in_function and name.split(".")[0] in HEAVY and name not in OPTIONAL
    ]
    assert not hidden


def test_no_file_edits_the_import_path() -> None:
    files = [*REPO_ROOT.glob("steps/**/*.py"), *REPO_ROOT.glob("flows/**/*.py")]
    files += [*REPO_ROOT.glob("tests/**/*.py"), *REPO_ROOT.glob("bench/**/*.py")]
    this = Path(__file__).resolve()
    assert not [str(f) for f in files if f.resolve() != this and "sys.path" in f.read_text()]


def test_the_flow_and_the_stage_controllers_load_no_torch() -> None:
    """Nor the SageMaker SDK (about a second): every Metaflow step and card-refresh process imports the flow file."""
    code = (
        "import sys, flows.tune_flow, steps.stages, steps.dispatch.runner; "
        f"print(sorted(m for m in {(*HEAVY, 'sagemaker')!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_spec_gives_its_entry_point_a_command_line_it_takes(name: str, tmp_path: Path) -> None:
    """`python -m <module>` parses what the runner (here) and the SageMaker container build from the spec."""
    spec = SPECS[name]
    inputs = {key: tmp_path / key for key in spec.inputs}
    params = {"shard": 0} if "{shard}" in spec.folder else {}
    checkpoints = CheckpointArgs("s3://b/train/checkpoints", tmp_path / "staging") if spec.checkpoints else None
    args = entry_args(spec, tmp_path / "config.json", inputs, tmp_path / "out", params, checkpoints)
    parsed = importlib.import_module(f"{spec.module}.__main__").parser().parse_args(args)
    assert parsed.out == tmp_path / "out" and parsed.config == tmp_path / "config.json"


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_a_command_line(stage: str, capsys: pytest.CaptureFixture) -> None:
    """`python -m steps.<stage>` runs `steps/<stage>/__main__.py`; its --help names the paths it takes."""
    entrypoint = importlib.import_module(f"steps.{stage}.__main__")
    with pytest.raises(SystemExit) as done:
        entrypoint.parser().parse_args(["--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert "--config" in usage and "--out" in usage
