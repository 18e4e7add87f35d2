"""Running the flow from tests: configs derived from the debug one, metaflow.Runner, the client, card data."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import yaml

from steps.project_files import DEBUG_CONFIG, FLOW_FILE

DEBUG = yaml.safe_load(DEBUG_CONFIG.read_text())


def flow_home(root: Path) -> Path:
    """A folder of its own for Metaflow's local datastore, so runs of other tests don't mix in."""
    (root / ".metaflow").mkdir(parents=True, exist_ok=True)
    return root


def config_file(home: Path, name: str, **sections) -> Path:
    """The debug config with some sections' values replaced, written as `<home>/<name>.yaml`."""
    config = {key: dict(value) for key, value in DEBUG.items()}
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = home / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def runner(home: Path, config: Path | None, env: dict[str, str] | None = None, **options):
    """A Runner on the local datastore under `home`, with `env` added to its processes' environment (not
    this one's); `resume` takes no config (it reuses the run's)."""
    from metaflow import Runner

    env = {**(env or {}), "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(home)}
    if config is not None:
        options["config"] = [("config", str(config))]
    return Runner(str(FLOW_FILE), show_output=False, cwd=str(home), env=env, **options)


def run_flow(home: Path, config: Path, **parameters) -> str:
    """Run the flow to success; its run's pathspec."""
    with runner(home, config) as flow:
        result = flow.run(**parameters)
        assert result.status == "successful", result.stdout + result.stderr
        return result.run.pathspec


def client_run(home: Path, pathspec: str):
    """The run, read back with the Metaflow client."""
    os.environ["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = str(home)
    from metaflow import Run, namespace

    namespace(None)
    return Run(pathspec)


def card_data(html: str) -> str:
    """The data a Metaflow card renders: base64-encoded JSON inside its HTML."""
    encoded = re.search(r'window.__MF_DATA__\[[^]]+\] = "([^"]+)"', html).group(1)
    return base64.b64decode(encoded).decode()
