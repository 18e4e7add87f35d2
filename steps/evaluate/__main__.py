"""evaluate: batch generation with each engine, perplexity and probes; runs in every torchrun rank, without Metaflow.

    python -m torch.distributed.run --nproc_per_node 2 -m steps.evaluate \\
        --config run.json --model DIR --dataset DIR --out DIR [--base-model DIR] \\
        [--pretrained-model DIR --instructions DIR]

Writes `<out>/generations.parquet`, `<out>/probes.parquet` and `<out>/eval_summary.json`
(see `steps.evaluate.evaluation`). Rank 0 prints progress lines with counts and time left, and
keeps the latest in `<out>/progress.json` (`steps.evaluate.progress`) for the runner's live card.
The model folder's `conversion.json` carries the fingerprint of the weights training started
from, which the rebuilt untuned model must match. After instruction tuning, `--model` is the
instruction-tuned model, `--pretrained-model` the continued-pretrained one it started from (when
pretraining ran), and `--instructions` the instruction dataset folder, whose held-out questions
are asked of each model (`answers.parquet`).
"""

from __future__ import annotations

from torch.distributed.elastic.multiprocessing.errors import record

from steps.config import load_config
from steps.evaluate.evaluation import run_evaluation
from steps.runtime.distributed import exit_now_that_the_work_is_done
from steps.runtime.launch import entrypoint_parser


def parser():
    optional = ("base-model", "pretrained-model", "instructions")
    return entrypoint_parser(__doc__, ["config", "model", "dataset", "out"], optional=optional)


# @record makes torchrun's failure summary carry this rank's exception, not only its exit code.
@record
def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    paths = (args.model, args.dataset, args.out, args.base_model, args.pretrained_model, args.instructions)
    run_evaluation(load_config(args.config), *paths)


if __name__ == "__main__":
    main()
    exit_now_that_the_work_is_done()
