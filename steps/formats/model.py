"""The model, shared by train (the starting point), convert (the architecture) and evaluate (the untuned rebuild):
a Llama-style network built from the config, or a base model folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import deepspeed
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from steps.config import ModelConfig


def llama_config(model: ModelConfig, vocab_size: int, eos_id: int, pad_id: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=model.hidden_size,
        intermediate_size=model.intermediate_size,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_heads,
        num_key_value_heads=model.num_kv_heads,
        max_position_embeddings=model.max_position_embeddings,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
        # PyTorch's fused attention (flash / memory-efficient kernels on CUDA), whatever transformers' default.
        attn_implementation="sdpa",
    )


TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The config's precision names (train.dtype, convert.dtype, evaluate.dtype) as torch dtypes."""


def build_model(model: ModelConfig, vocab_size: int, eos_id: int, pad_id: int) -> PreTrainedModel:
    """A freshly initialised model; the same config and seed give the same weights on CPU."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(model.init_seed)
        return LlamaForCausalLM(llama_config(model, vocab_size, eos_id, pad_id)).float()


def load_pretrained(folder: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A Hugging Face causal LM from a local folder (safetensors)."""
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)


def initial_model(model: ModelConfig, base_model_dir: str | Path | None, tokenizer) -> PreTrainedModel:
    """The model before tuning: the whole base model, or the seeded initialisation sized to the tokenizer.

    ZeRO-3 training loads a base model partitioned instead (`steps.formats.partitioned_model`).
    """
    if base_model_dir is not None:
        return load_pretrained(base_model_dir)
    return build_model(model, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)


def _full(name: str, tensor: torch.Tensor) -> bytes:
    """A tensor's bytes; a ZeRO-3 partitioned parameter is gathered for the moment (every rank must call)."""
    if hasattr(tensor, "ds_id"):
        with deepspeed.zero.GatheredParameters([tensor]):
            return tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()


def state_dict_sha256(model: torch.nn.Module) -> str:
    """A fingerprint of the weights, to prove that two processes built the same model (partitioned or not)."""
    tensors = dict(model.named_buffers(remove_duplicate=False))
    tensors.update(model.named_parameters(remove_duplicate=False))
    digest = hashlib.sha256()
    for name in sorted(model.state_dict().keys()):
        digest.update(name.encode())
        digest.update(_full(name, tensors[name]))
    return digest.hexdigest()


def parameter_shapes(model: torch.nn.Module) -> dict[str, torch.Size]:
    """Each parameter's full shape, also when ZeRO-3 has partitioned it (`ds_shape`)."""
    return {name: getattr(p, "ds_shape", p.shape) for name, p in model.named_parameters()}


def check_vocabulary(model: PreTrainedModel, tokenizer) -> None:
    """The tokenizer must fit the embedding table, or training indexes out of range."""
    weight = model.get_input_embeddings().weight
    rows = getattr(weight, "ds_shape", weight.shape)[0]
    if len(tokenizer) > rows:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding has {rows} rows; "
            "use the base model's tokenizer (leave data.vocab_size alone with model.base_model) or a matching model"
        )
