"""prepare: corpus in, tokenizer and packed Arrow datasets out; runs without Metaflow.

    python -m steps.prepare --config run.yaml --out DIR

Writes `<out>/dataset/`, `<out>/tokenizer/` (see `steps.prepare.pipeline`), when
`model.base_model` names one, `<out>/base_model/`: the base model as the run stores it
(`steps.prepare.base_model`), whose tokenizer it uses, and when `instruct.instructions` names
instruction data, `<out>/instructions/` (`steps.formats.instruction_dataset`). Prints progress and what was read,
skipped, dropped, redacted, tokenized and packed. Settings that would only fail later
(evaluate's files, no held-out prompt) fail here, with the field to change.

One phase at a time, as the flow's foreach workers run them over `compute.prepare.workers` shards:

    python -m steps.prepare --config C --phase read --shard K --out READ_K
    python -m steps.prepare --config C --phase decide --read READ_0 READ_1 ... --out D   # decisions/, tokenizer/,
                                                                                         # base_model/
    python -m steps.prepare --config C --phase encode --shard K --read READ_K --decisions D/decisions \
        --tokenizer D/tokenizer --out ENC_K
    python -m steps.prepare --config C --phase pack --encoded ENC_0 ENC_1 ... --decisions D/decisions \
        --tokenizer D/tokenizer --out DIR                                                # dataset/, instructions/
"""

from __future__ import annotations

from pathlib import Path

from steps.config import ConfigError, TuneConfig, load_config
from steps.prepare.base_model import store_base_model
from steps.prepare.shard_read import plan_and_read_shard
from steps.runtime.launch import entrypoint_parser

PHASES = ("all", "read", "decide", "encode", "pack")


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


def parser():
    parser = entrypoint_parser(__doc__, ["config", "out"], optional=("decisions", "tokenizer"))
    parser.add_argument("--phase", choices=PHASES, default="all")
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--read", type=Path, nargs="*", default=[])
    parser.add_argument("--encoded", type=Path, nargs="*", default=[])
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    config = load_config(args.config)
    data, workers = config.data, config.compute.prepare.workers
    # A run with its own prompt file can do without held-out prompts; without one, evaluate needs them.
    require_prompts = not config.evaluate.prompt_file
    if args.phase in ("all", "read"):
        check_evaluate_files(config)
    if args.phase == "read":
        # The phase N workers run starts without loading transformers and datasets (seconds per task).
        plan_and_read_shard(data, workers, args.shard, args.out)
        return
    from steps.prepare import pipeline  # noqa: PLC0415
    from steps.prepare.instructions_write import write_instruction_folder  # noqa: PLC0415

    if args.phase in ("all", "decide"):
        base_model = store_base_model(config.model.base_model, args.out / "base_model")
    instruct = config.instruct
    if args.phase == "decide":
        decisions = args.out / "decisions"
        pipeline.decide_phase(data, args.read, decisions, args.out / "tokenizer", base_model, instruct=instruct)
    elif args.phase == "encode":
        pipeline.encode_phase(data, args.shard, args.read[0], args.decisions, args.tokenizer, args.out)
    elif args.phase == "pack":
        summary = pipeline.pack_phase(data, args.decisions, args.tokenizer, args.encoded, args.out, require_prompts)
        if instruct.enabled:
            write_instruction_folder(instruct, data, args.tokenizer, summary, args.out / "instructions")
    else:
        summary = pipeline.run_prepare(data, args.out, base_model, require_prompts=require_prompts, instruct=instruct)
        print(
            f"prepared {summary.report.kept_documents} documents: {summary.blocks.train} training and "
            f"{summary.blocks.validation} validation blocks of {summary.block_size} tokens in {args.out}",
            flush=True,
        )
        if instruct.enabled:
            write_instruction_folder(instruct, data, args.out / "tokenizer", summary, args.out / "instructions")


if __name__ == "__main__":
    main()
