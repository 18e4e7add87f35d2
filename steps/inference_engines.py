"""Three ways to generate with one model, behind one interface.

- `hf`: plain Hugging Face `generate`; each rank takes its own share of prompts.
- `deepspeed`: DeepSpeed-Inference with automatic tensor parallelism over all
  ranks; every rank works on the same prompts (kernel injection is a GPU path).
- `zero`: ZeRO-Inference, a ZeRO-3 engine whose parameters are gathered layer by
  layer; ranks take their own prompts but must step together, hence
  `synced_gpus=True` and the same number of generate calls on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import deepspeed
import torch
from transformers import PreTrainedModel

from steps.distributed import ON_GPU, DistContext
from steps.model import load_pretrained


@dataclass
class InferenceEngine:
    name: str
    model: PreTrainedModel
    shards_prompts: bool
    """True when each rank generates for its own prompts; False when all ranks share them (tensor parallel)."""
    synced: bool = False
    """True when ranks must call generate together (ZeRO-3 gathers parameters across ranks)."""

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy continuation; returns only the new tokens."""
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            synced_gpus=self.synced,
        )
        return out[:, input_ids.shape[1] :]


def hf_engine(model_dir: Path, ctx: DistContext) -> InferenceEngine:
    model = load_pretrained(model_dir).to(ctx.device).eval()
    return InferenceEngine("hf", model, shards_prompts=True)


def deepspeed_inference_engine(model_dir: Path, ctx: DistContext) -> InferenceEngine:
    model = load_pretrained(model_dir).eval()
    engine = deepspeed.init_inference(
        model,
        tensor_parallel={"tp_size": ctx.world_size},
        dtype=torch.float32,
        # Fused kernels exist for CUDA only; on CPU AutoTP shards the plain modules.
        replace_with_kernel_inject=False,
    )
    return InferenceEngine("deepspeed", engine.module.eval(), shards_prompts=False)


def zero_inference_engine(model_dir: Path, ctx: DistContext) -> InferenceEngine:
    model = load_pretrained(model_dir).eval()
    zero = {"stage": 3, "stage3_param_persistence_threshold": 0}
    if ON_GPU:
        # Parameters live in CPU memory and stream to the GPU layer by layer.
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config = {"zero_optimization": zero, "train_micro_batch_size_per_gpu": 1, "fp16": {"enabled": False}}
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.module.eval()
    return InferenceEngine("zero", engine.module, shards_prompts=True, synced=True)


ENGINES = {"hf": hf_engine, "deepspeed": deepspeed_inference_engine, "zero": zero_inference_engine}


def build_engine(name: str, model_dir: Path, ctx: DistContext) -> InferenceEngine:
    """A fresh engine over a freshly loaded model (tensor parallelism and ZeRO-3 both rewrite the model)."""
    return ENGINES[name](model_dir, ctx)
