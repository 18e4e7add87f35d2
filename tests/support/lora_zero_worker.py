"""One torchrun rank of tests/distributed/test_instruct_lora_zero.py: LoRA instruction tuning under ZeRO.

    python -m torch.distributed.run --nproc_per_node 2 tests/support/lora_zero_worker.py STAGE BASE SPLIT OUT

Tunes adapters on the base model for 3 steps of conversation batches, saves a checkpoint as a LoRA run does
(`steps.train.lora.CHECKPOINT_SAVE`), loads it into an engine whose adapters started elsewhere, and takes one
more step on both. Rank 0 writes `logits.pt`: each engine's logits on a fixed batch, after saving and after
the extra step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import deepspeed
import torch

from steps.config.instruct import InstructConfig
from steps.formats.instruction_dataset import load_conversations
from steps.formats.model import load_pretrained
from steps.runtime.distributed import init_distributed, shutdown
from steps.train.lora import CHECKPOINT_LOAD, CHECKPOINT_SAVE, lora_for_training
from steps.train.optimization import parameter_groups
from steps.train.sft_batches import ConversationBatches

LORA = InstructConfig(method="lora", lora_rank=4, lora_alpha=8.0, lora_dropout=0.0)
MICRO, ACCUMULATION, STEPS = 2, 2, 3
PROBE = torch.arange(24).reshape(2, 12)


def main(stage: int, base_dir: Path, split_dir: Path, out: Path) -> None:
    ctx = init_distributed(120)
    ds_config = {
        "train_micro_batch_size_per_gpu": MICRO,
        "gradient_accumulation_steps": ACCUMULATION,
        "zero_optimization": {"stage": stage},
        "gradient_clipping": 1.0,
        "steps_per_print": 10**9,
    }

    def engine_for(seed: int):
        model = lora_for_training(load_pretrained(base_dir), LORA, seed)
        optimizer = torch.optim.AdamW(parameter_groups(model, 0.0), lr=1e-2)
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
        return engine

    batches = ConversationBatches(load_conversations(split_dir), 0, 3, MICRO, ctx.world_size, ACCUMULATION)

    def train_step(engine, step: int) -> None:
        engine.train()
        for micro in range(ACCUMULATION):
            # The batch's keyword arguments (num_items_in_batch included) go through DeepSpeed and PEFT to the model.
            loss = engine(**batches.batch(step, micro, ctx.rank).model_inputs(ctx.device)).loss
            engine.backward(loss)
            engine.step()

    def probe(engine) -> torch.Tensor:
        engine.eval()
        with torch.no_grad():
            return engine(input_ids=PROBE.to(ctx.device)).logits.float().cpu()

    trained = engine_for(seed=1)
    for step in range(STEPS):
        train_step(trained, step)
    trained.save_checkpoint(str(out / "checkpoints"), tag="step-3", **CHECKPOINT_SAVE)
    resumed = engine_for(seed=2)  # other initial adapters: the checkpoint must replace them
    resumed.load_checkpoint(str(out / "checkpoints"), tag="step-3", **CHECKPOINT_LOAD)
    logits = {"probe": PROBE, "trained": probe(trained), "resumed": probe(resumed)}
    for engine in (trained, resumed):
        train_step(engine, STEPS)
    logits.update(trained_after=probe(trained), resumed_after=probe(resumed))
    if ctx.is_main:
        torch.save(logits, out / "logits.pt")
    shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
