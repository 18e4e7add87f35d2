"""convert: the newest complete ZeRO checkpoint of a train folder to a verified Hugging Face folder; no Metaflow.

    python -m steps.convert --config run.json --checkpoint TRAIN_DIR --tokenizer DIR --out DIR [--base-model DIR]

Writes the model folder (see `steps.convert.consolidate`) with its verification record,
`conversion.json`, and prints that record without the per-tensor rows as one JSON line. A LoRA
checkpoint (instruction tuning with instruct.method: lora) needs `--base-model`, the model its
adapters were trained on: they are merged into it, and saved in PEFT's format under `<out>/adapter`.
"""

from __future__ import annotations

from steps.config import load_config
from steps.convert.consolidate import run_convert
from steps.runtime.launch import entrypoint_parser


def parser():
    return entrypoint_parser(__doc__, ["config", "checkpoint", "tokenizer", "out"], optional=("base-model",))


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    record = run_convert(load_config(args.config), args.checkpoint, args.tokenizer, args.out, args.base_model)
    print(record.model_dump_json(exclude={"tensor_checks"}))


if __name__ == "__main__":
    main()
