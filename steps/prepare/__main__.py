"""prepare: corpus in, tokenizer and packed Arrow datasets out; runs without Metaflow.

    python -m steps.prepare --config run.yaml --out DIR [--base-model DIR]

Writes `<out>/tokenizer/` and `<out>/dataset/` (see `steps.prepare.pipeline`), printing
progress and what was read, skipped, dropped, redacted, tokenized and packed. Settings that
would only fail later (evaluate's files, no held-out prompt) fail here, with the field to change.
"""

from __future__ import annotations

from pathlib import Path

from steps.config import ConfigError, TuneConfig, load_config
from steps.prepare.pipeline import run_prepare
from steps.runtime.launch import entrypoint_parser


def check_evaluate_files(config: TuneConfig) -> None:
    """evaluate reads its prompt and probe files after training: a missing one stops the run now instead."""
    if config.compute.prepare.target != "local" or config.compute.evaluate.target != "local":
        return  # another machine: the file need not be here
    for field in ("prompt_file", "probe_file"):
        value = getattr(config.evaluate, field)
        if value and not Path(value).is_file():
            raise ConfigError(
                f"evaluate.{field} = {value!r}: no such file (relative to {Path.cwd()}); "
                "evaluate would stop on it after training: fix the path or unset it"
            )


def main(argv: list[str] | None = None) -> None:
    args = entrypoint_parser(__doc__, ["config", "out"]).parse_args(argv)
    config = load_config(args.config)
    check_evaluate_files(config)
    # A run with its own prompt file can do without held-out prompts; without one, evaluate needs them.
    summary = run_prepare(config.data, args.out, args.base_model, require_prompts=not config.evaluate.prompt_file)
    print(
        f"prepared {summary.report.kept_documents} documents: {summary.blocks.train} training and "
        f"{summary.blocks.validation} validation blocks of {summary.block_size} tokens in {args.out}",
        flush=True,
    )


if __name__ == "__main__":
    main()
