"""prepare: corpus in, tokenizer and packed Arrow datasets out; runs without Metaflow.

    python -m steps.prepare --config run.yaml --out DIR [--base-model DIR]

Writes `<out>/tokenizer/` and `<out>/dataset/` (see `steps.prepare.pipeline`) and
prints the summary's counts.
"""

from __future__ import annotations

from steps.config import load_config
from steps.prepare.pipeline import run_prepare
from steps.runtime.launch import entrypoint_parser


def main(argv: list[str] | None = None) -> None:
    args = entrypoint_parser(__doc__, ["config", "out"]).parse_args(argv)
    summary = run_prepare(load_config(args.config).data, args.out, args.base_model)
    print(
        f"prepared {summary.report.kept_documents} documents: {summary.blocks.train} training and "
        f"{summary.blocks.validation} validation blocks of {summary.block_size} tokens in {args.out}",
        flush=True,
    )


if __name__ == "__main__":
    main()
