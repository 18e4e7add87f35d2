"""A ZeRO checkpoint of a model of chosen size, in the layout `steps.train` writes, in seconds.

    python -m torch.distributed.run --nproc_per_node 2 bench/zero_checkpoint.py \
        --out DIR --stage 2 --hidden 384 --layers 6 --vocab 8192

Training a model of 50+ MB to a checkpoint would take minutes on CPU; conversion
does not care whether the weights learned anything, only about their layout.
So this builds the Llama of the pipeline, takes one optimizer step under
DeepSpeed (so that Adam's states exist as in a real checkpoint) and saves it
with `steps.checkpoint.CheckpointStore`, plus `verify_logits.pt` and a
tokenizer sized to the vocabulary. Used by the conversion memory test and
bench/convert.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import deepspeed  # noqa: E402
import torch  # noqa: E402

from steps.checkpoint import CheckpointStore  # noqa: E402
from steps.config import ModelConfig  # noqa: E402
from steps.distributed import init_distributed, shutdown  # noqa: E402
from steps.domain_tokenizer import train_bpe_tokenizer  # noqa: E402
from steps.model import build_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stage", type=int, default=2, choices=[0, 1, 2, 3])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8192)
    args = parser.parse_args()

    ctx = init_distributed()
    tokenizer = train_bpe_tokenizer(["CWE-79: Improper Neutralization of Input " * 4] * 4, 300)
    model_config = ModelConfig(
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=8,
        num_kv_heads=8,
        intermediate_size=args.hidden * 3,
    )
    model = build_model(model_config, args.vocab, tokenizer.eos_token_id, tokenizer.pad_token_id)
    ds_config = {
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": {"stage": args.stage},
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    ids = torch.randint(0, args.vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()
    store = CheckpointStore(str(args.out / "checkpoints"), args.out / "staging", keep=1, ctx=ctx)
    store.save(engine, 1, {"tokens_seen": 16, "zero_stage": args.stage}, metrics_file=None)
    engine.eval()
    with torch.no_grad():
        logits = engine(input_ids=ids).logits.float()
    if ctx.is_main:
        torch.save({"input_ids": ids, "logits": logits}, args.out / "verify_logits.pt")
        tokenizer.save_pretrained(str(args.out / "tokenizer"))
    shutdown()


if __name__ == "__main__":
    main()
