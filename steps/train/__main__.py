"""train: DeepSpeed ZeRO training, continued pretraining or instruction tuning; runs in every torchrun rank,
without Metaflow.

    python -m torch.distributed.run --nproc_per_node 2 -m steps.train \\
        --config run.json --dataset DIR --tokenizer DIR --out DIR [--base-model DIR] \\
        [--checkpoint-uri URI] [--checkpoint-staging DIR] [--resume-from URI ...]
    python -m torch.distributed.run --nproc_per_node 2 -m steps.train --objective sft \\
        --config run.json --instructions DIR --tokenizer DIR --base-model MODEL_DIR --out DIR ...

`--objective pretrain` (the default) trains on the dataset folder's packed blocks, from
`--base-model` or the model the config builds; `--objective sft` instruction-tunes (instruct.*,
full or LoRA) on the instruction dataset folder, from `--base-model`: the continued-pretrained
model folder, or the base model when pretraining was skipped.

Checkpoints go to `--checkpoint-uri` (a folder or object-store prefix; default
`<out>/checkpoints`). Training continues from the newest complete checkpoint there
or, failing that, under any `--resume-from` root (the run this one resumes). The
train folder's other files go to `--out` (see `steps.formats.train_folder`).
"""

from __future__ import annotations

from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from steps.config import load_config
from steps.runtime.distributed import exit_now_that_the_work_is_done
from steps.runtime.launch import entrypoint_parser
from steps.train.checkpoints import CheckpointPlace
from steps.train.loop import run_training


def parser():
    optional = ("base-model", "dataset", "instructions")
    parser = entrypoint_parser(__doc__, ["config", "tokenizer", "out"], optional=optional)
    parser.add_argument("--objective", choices=("pretrain", "sft"), default="pretrain")
    parser.add_argument("--checkpoint-uri", default=None, help="checkpoint root: a folder or s3:// prefix")
    parser.add_argument(
        "--checkpoint-staging",
        type=Path,
        default=None,
        help="a local folder of this machine for checkpoint copies (default: a private temporary one, removed at "
        "the end)",
    )
    parser.add_argument("--resume-from", action="append", default=[], help="an earlier run's checkpoint root")
    return parser


# @record makes torchrun's failure summary carry this rank's exception (a config it cannot read among them), not
# only its exit code.
@record
def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    needs = "instructions" if args.objective == "sft" else "dataset"
    data = getattr(args, needs)
    if data is None:
        raise SystemExit(f"--objective {args.objective} needs --{needs}")
    if args.objective == "sft" and args.base_model is None:
        raise SystemExit("--objective sft needs --base-model: the model instruction tuning starts from")
    args.out.mkdir(parents=True, exist_ok=True)
    place = CheckpointPlace(
        uri=args.checkpoint_uri or str(args.out / "checkpoints"),
        staging=args.checkpoint_staging,
        resume_from=tuple(args.resume_from),
    )
    run_training(load_config(args.config), args.objective, data, args.tokenizer, args.out, args.base_model, place)


if __name__ == "__main__":
    main()
    exit_now_that_the_work_is_done()
