"""GPU-path choices checked on CPU: fused AdamW on CUDA, SDPA attention, the kernel-injection fallback, the
synthetic dataset of the GPU benchmarks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from transformers.integrations import is_deepspeed_zero3_enabled

from steps.config import EvaluateConfig, ModelConfig, TuneConfig
from steps.evaluate import engines
from steps.formats.blocks import load_blocks
from steps.formats.dataset import read_prompts
from steps.formats.model import build_model
from steps.formats.tokenizer_folder import load_tokenizer
from steps.runtime.distributed import DistContext
from steps.train import optimization
from tests.support.synthetic_dataset import write_synthetic_dataset

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)


def test_adamw_is_fused_on_cuda_and_plain_on_cpu(monkeypatch) -> None:
    model = build_model(TINY, 300, 0, 1)
    assert not optimization.build_optimizer(model, TuneConfig(), offloaded=False).defaults["fused"]
    monkeypatch.setattr(optimization, "ON_GPU", True)
    fused = optimization.build_optimizer(model, TuneConfig(), offloaded=False)
    assert isinstance(fused, torch.optim.AdamW) and fused.defaults["fused"] is True


def test_the_model_uses_pytorch_fused_attention() -> None:
    assert build_model(TINY, 300, 0, 1).config._attn_implementation == "sdpa"


class _Injected:
    """What deepspeed.init_inference returns: kernel injection that initialises but breaks inside generate."""

    def __init__(self, model, replace_with_kernel_inject: bool, **_) -> None:
        self.module = model
        if replace_with_kernel_inject:
            self.module = SimpleNamespace(generate=self._broken, eval=lambda: self.module)

    @staticmethod
    def _broken(**_):
        raise TypeError("LlamaAttention.forward() got an unexpected keyword argument 'position_embeddings'")


def test_kernel_injection_breaking_in_generate_falls_back_to_autotp_with_a_note(monkeypatch, tmp_path: Path) -> None:
    model = build_model(TINY, 300, 0, 1)
    monkeypatch.setattr(engines, "ON_GPU", True)  # the CUDA branch; everything else stays on this CPU
    monkeypatch.setattr(engines, "load_pretrained", lambda folder, dtype: model)
    monkeypatch.setattr(engines.deepspeed, "init_inference", _Injected)
    settings = EvaluateConfig(dtype="fp32", kernel_inject=True)
    engine = engines.deepspeed_inference_engine(tmp_path, DistContext(0, 1, 0, torch.device("cpu")), settings)
    assert engine.model is model  # AutoTP's plain module, not the broken injected one
    assert len(engine.notes) == 1 and "TypeError" in engine.notes[0] and "using AutoTP" in engine.notes[0]
    assert engine.kernel_injected is False  # which path ran is recorded, so the GPU test can insist on the kernels
    ids = torch.tensor([[5, 6, 7]])
    assert engine.generate(ids, torch.ones_like(ids), settings, [0], 1).shape == (1, settings.max_new_tokens)


def test_synthetic_dataset_has_the_asked_shapes_and_a_learnable_stream(tmp_path: Path) -> None:
    dataset, tokenizer_dir = write_synthetic_dataset(tmp_path, vocab_size=1000, block_size=64, train_blocks=12)
    train, validation = load_blocks(dataset / "train"), load_blocks(dataset / "validation")
    assert train.shape == (12, 64) and validation.shape == (8, 64)
    tokenizer = load_tokenizer(tokenizer_dir)
    assert len(tokenizer) == 1000 and tokenizer.eos_token_id == 0 and tokenizer.pad_token_id == 1
    assert (train[:, -1] == 0).all() and train.max() < 1000  # one document per block, EOS last
    body = train[:, :-1].astype(np.int64) - 3
    assert body.max() < 64  # the 64 words in use
    follows = ((body[:, :-1] * 7 + 13) % 64 == body[:, 1:]).mean()
    assert 0.85 < follows < 0.95  # 9 in 10 tokens follow from the previous: a loss that can fall
    prompt = read_prompts(dataset)[0]
    assert tokenizer(prompt["prompt"], add_special_tokens=False)["input_ids"] == prompt["prompt_ids"]


def test_zero_inference_with_offload_loads_the_model_straight_into_partitions(monkeypatch, tmp_path: Path) -> None:
    """deepspeed.initialize moves a plain module to the GPU whole; an offloaded model must be loaded under zero.Init."""
    loaded_under_zero3 = []

    def load(folder, dtype):
        loaded_under_zero3.append(is_deepspeed_zero3_enabled())
        return build_model(TINY, 300, 0, 1)

    def initialize(model, config):
        assert not is_deepspeed_zero3_enabled()  # only the load, not whatever loads after
        return SimpleNamespace(module=model), None, None, None

    monkeypatch.setattr(engines, "load_pretrained", load)
    monkeypatch.setattr(engines.deepspeed, "initialize", initialize)
    ctx = DistContext(0, 1, 0, torch.device("cpu"))
    engines.zero_inference_engine(tmp_path, ctx, EvaluateConfig(zero_offload="cpu"))  # CPU: nothing offloaded
    monkeypatch.setattr(engines, "ON_GPU", True)
    engines.zero_inference_engine(tmp_path, ctx, EvaluateConfig(zero_offload="none"))
    engines.zero_inference_engine(tmp_path, ctx, EvaluateConfig(zero_offload="cpu"))
    assert loaded_under_zero3 == [False, False, True]


def test_offloaded_zero_inference_releases_layers_after_use(monkeypatch) -> None:
    monkeypatch.setattr(engines, "ON_GPU", True)
    zero = engines.zero_inference_config(EvaluateConfig(zero_offload="cpu", dtype="fp16"))[0]["zero_optimization"]
    assert zero["offload_param"]["device"] == "cpu" and zero["stage3_max_reuse_distance"] == 0
    assert zero["stage3_max_live_parameters"] <= 1e8
    on_gpu = engines.zero_inference_config(EvaluateConfig(zero_offload="none"))[0]["zero_optimization"]
    assert "stage3_max_reuse_distance" not in on_gpu  # parameters stay on the GPU: DeepSpeed's defaults
