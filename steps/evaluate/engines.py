"""Three ways to generate with one model, behind one interface.

- `hf`: plain Hugging Face `generate`; each rank takes its own share of prompts.
- `deepspeed`: DeepSpeed-Inference with automatic tensor parallelism over all
  ranks; every rank works on the same prompts (kernel injection is a GPU path).
- `zero`: ZeRO-Inference, a ZeRO-3 engine whose parameters are gathered layer by
  layer; ranks take their own prompts but must step together, hence
  `synced_gpus=True` and the same number of generate calls on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import deepspeed
import torch
from deepspeed.ops.op_builder import AsyncIOBuilder
from transformers import PreTrainedModel
from transformers.integrations import HfDeepSpeedConfig

from steps.config import EvaluateConfig
from steps.evaluate.decoding import search_arguments
from steps.formats.model import TORCH_DTYPES, load_pretrained
from steps.runtime.distributed import ON_GPU, DistContext


class EngineUnavailable(RuntimeError):
    """An engine setting this machine cannot honour (say NVMe offload without DeepSpeed's async I/O op)."""


@dataclass
class InferenceEngine:
    name: str
    model: PreTrainedModel
    shards_prompts: bool
    """True when each rank generates for its own prompts; False when all ranks share them (tensor parallel)."""
    synced: bool = False
    """True when ranks must call generate together (ZeRO-3 gathers parameters across ranks)."""
    notes: list[str] = field(default_factory=list)
    """What the engine could not do as configured, and why (shown on the card)."""
    kernel_injected: bool = False
    """DeepSpeed-Inference runs its fused CUDA kernels; False: plain modules (AutoTP), the notes say why."""

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        settings: EvaluateConfig,
        eos_ids: list[int],
        pad_id: int,
    ) -> torch.Tensor:
        """Continuations under the configured search; returns only the new tokens."""
        if settings.decoding == "sampling":
            # The same seed on every rank: tensor-parallel ranks must draw the same token.
            torch.manual_seed(settings.seed)
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
            synced_gpus=self.synced,
            **search_arguments(settings),
        )
        return out[:, input_ids.shape[1] :]


def _dtype(settings: EvaluateConfig) -> torch.dtype:
    # CPU kernels for half precision are slow or missing, and the parity check needs fp32 there.
    return TORCH_DTYPES[settings.dtype] if ON_GPU else torch.float32


def hf_engine(model_dir: Path, ctx: DistContext, settings: EvaluateConfig) -> InferenceEngine:
    model = load_pretrained(model_dir, _dtype(settings)).to(ctx.device).eval()
    return InferenceEngine("hf", model, shards_prompts=True)


def tensor_parallel_degree(model_config, world_size: int) -> tuple[int, str | None]:
    """The ranks a model is split over: all of them when they divide its attention and key/value heads, else none.

    AutoTP splits heads evenly; with 9 heads and 3 key/value heads (SmolLM2-135M) on 2 ranks it cannot, so every
    rank keeps the whole model and generates for its own prompts instead (a note on the card says so).
    """
    heads = model_config.num_attention_heads
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    if world_size == 1 or (heads % world_size == 0 and kv_heads % world_size == 0):
        return world_size, None
    return 1, (
        f"tensor parallelism off: {heads} attention heads and {kv_heads} key/value heads do not split over "
        f"{world_size} ranks; each rank runs the whole model on its own prompts (evaluate.nproc dividing both "
        "restores tensor parallelism)"
    )


def deepspeed_inference_engine(model_dir: Path, ctx: DistContext, settings: EvaluateConfig) -> InferenceEngine:
    model = load_pretrained(model_dir, _dtype(settings)).eval()
    degree, why = tensor_parallel_degree(model.config, ctx.world_size)
    notes = [why] if why else []
    inject = settings.kernel_inject and ON_GPU
    if settings.kernel_inject and not ON_GPU:
        notes.append(
            "kernel injection off: DeepSpeed's fused inference kernels exist for CUDA only; "
            "AutoTP shards the plain modules"
        )
    try:
        engine = deepspeed.init_inference(
            model,
            tensor_parallel={"tp_size": degree},
            dtype=_dtype(settings),
            replace_with_kernel_inject=inject,
        )
        if inject:
            _smoke_generate(engine.module, ctx)
        injected = inject
    except Exception as exc:
        if not inject:
            raise
        # Kernel injection covers a fixed list of architectures, needs its ops to build, and its module
        # replacements break with new transformers releases (at init or at the first generate): fall back to AutoTP.
        notes.append(
            f"kernel injection unavailable for {type(model).__name__} ({type(exc).__name__}: {exc}); using AutoTP"
        )
        model = load_pretrained(model_dir, _dtype(settings)).eval()
        engine = deepspeed.init_inference(
            model, tensor_parallel={"tp_size": degree}, dtype=_dtype(settings), replace_with_kernel_inject=False
        )
        injected = False
    split = degree > 1
    return InferenceEngine(
        "deepspeed", engine.module.eval(), shards_prompts=not split, notes=notes, kernel_injected=injected
    )


def _smoke_generate(model, ctx: DistContext) -> None:
    """Two greedy tokens, so that injected kernels that only break inside generate fail here, not mid-evaluation."""
    ids = torch.full((1, 4), 3, dtype=torch.long, device=ctx.device)
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False)


def zero_inference_config(settings: EvaluateConfig) -> tuple[dict, list[str]]:
    """The ZeRO-3 config of ZeRO-Inference and notes on what the machine changed."""
    zero: dict = {"stage": 3, "stage3_param_persistence_threshold": 0}
    notes = []
    if settings.zero_offload != "none" and not ON_GPU:
        notes.append(
            f"zero_offload={settings.zero_offload} not applied: on CPU the parameters already live in host memory"
        )
    elif settings.zero_offload == "cpu":
        # Parameters live in pinned CPU memory and stream to the GPU layer by layer.
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    elif settings.zero_offload == "nvme":
        if not AsyncIOBuilder().is_compatible():
            raise EngineUnavailable(
                "evaluate.zero_offload = 'nvme' needs DeepSpeed's async I/O op (libaio); install libaio-dev "
                "and reinstall DeepSpeed, or set evaluate.zero_offload to 'cpu'"
            )
        Path(settings.nvme_path).mkdir(parents=True, exist_ok=True)
        zero["offload_param"] = {"device": "nvme", "nvme_path": settings.nvme_path, "pin_memory": True}
    if "offload_param" in zero:
        # Release each layer after use: by default ZeRO-3 keeps up to 1e9 gathered parameters on the GPU and
        # skips releasing any it will reuse within 1e9 parameters, which in generate is every one of a <1B model.
        zero.update({"stage3_max_reuse_distance": 0, "stage3_max_live_parameters": int(1e8)})
    precision = settings.dtype if ON_GPU else "fp32"
    config = {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": 1,
        "fp16": {"enabled": precision == "fp16"},
        "bf16": {"enabled": precision == "bf16"},
    }
    return config, notes


def zero_inference_engine(model_dir: Path, ctx: DistContext, settings: EvaluateConfig) -> InferenceEngine:
    config, notes = zero_inference_config(settings)
    # With parameters offloaded, the model must never be whole on the GPU (deepspeed.initialize moves a plain
    # module there before partitioning it): while this object lives, from_pretrained loads under zero.Init.
    zero_init = HfDeepSpeedConfig(config) if "offload_param" in config["zero_optimization"] else None
    model = load_pretrained(model_dir, _dtype(settings)).eval()
    del zero_init
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.module.eval()
    return InferenceEngine("zero", engine.module, shards_prompts=True, synced=True, notes=notes)


ENGINES = {"hf": hf_engine, "deepspeed": deepspeed_inference_engine, "zero": zero_inference_engine}


def build_engine(name: str, model_dir: Path, ctx: DistContext, settings: EvaluateConfig) -> InferenceEngine:
    """A fresh engine over a freshly loaded model (tensor parallelism and ZeRO-3 both rewrite the model)."""
    return ENGINES[name](model_dir, ctx, settings)
