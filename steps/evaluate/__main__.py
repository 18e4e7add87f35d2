"""evaluate: batch generation with each engine, perplexity and probes; runs in every torchrun rank, without Metaflow.

    python -m torch.distributed.run --nproc_per_node 2 -m steps.evaluate \\
        --config run.json --model DIR --dataset DIR --train-summary FILE --out DIR \\
        [--base-model DIR] [--progress-file FILE]

Writes `<out>/generations.parquet`, `<out>/probes.parquet` and `<out>/eval_summary.json`
(see `steps.evaluate.evaluation`). Rank 0 prints progress lines with counts and time left, and
writes the latest to `--progress-file` (`steps.evaluate.progress`) for the controller's live card.
"""

from __future__ import annotations

from torch.distributed.elastic.multiprocessing.errors import record

from steps.config import load_config
from steps.evaluate.evaluation import run_evaluation
from steps.results import TrainSummary
from steps.runtime.launch import entrypoint_parser


# @record makes torchrun's failure summary carry this rank's exception, not only its exit code.
@record
def main(argv: list[str] | None = None) -> None:
    required = ["config", "model", "dataset", "train-summary", "out"]
    args = entrypoint_parser(__doc__, required, optional=("base-model", "progress-file")).parse_args(argv)
    summary = TrainSummary.model_validate_json(args.train_summary.read_text())
    config = load_config(args.config)
    run_evaluation(config, args.model, args.dataset, summary, args.out, args.base_model, args.progress_file)


if __name__ == "__main__":
    main()
