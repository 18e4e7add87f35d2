"""The model, shared by train (the starting point), convert (the architecture) and evaluate (the untuned rebuild):
a Llama-style network built from the config, or a base model folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
    """The model before tuning: the base model, or the seeded initialisation sized to the tokenizer."""
    if base_model_dir is not None:
        return load_pretrained(base_model_dir)
    return build_model(model, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)


def state_dict_sha256(model: torch.nn.Module) -> str:
    """A fingerprint of the weights, to prove that two processes built the same model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_vocabulary(model: PreTrainedModel, tokenizer) -> None:
    """The tokenizer must fit the embedding table, or training indexes out of range."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding has {rows} rows; "
            "use the base model's tokenizer (leave data.vocab_size alone with model.base_model) or a matching model"
        )
