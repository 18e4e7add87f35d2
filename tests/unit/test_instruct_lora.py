"""LoRA through PEFT: merged weights give the base + adapter's logits, the saved adapter loads with PEFT, and
adapter tensors named as a ZeRO checkpoint names them go back into a wrapped base."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from steps.config.instruct import InstructConfig
from steps.formats.adapter_folder import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterError,
    adapter_names,
    load_adapter,
    load_adapter_weights,
    merged_model,
    save_adapter,
    wrap_with_lora,
)
from steps.train.lora import lora_for_training, trainable_parameters
from steps.train.optimization import parameter_groups
from tests.support.tiny_llama import save_tiny_tied_llama

VOCAB = 97
LORA = InstructConfig(method="lora", lora_rank=4, lora_alpha=8.0, lora_dropout=0.0)
IDS = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return save_tiny_tied_llama(tmp_path_factory.mktemp("base"), VOCAB, 64)


def base(base_dir: Path) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()


def trained(base_dir: Path) -> torch.nn.Module:
    """Base + adapters after a few optimizer steps (B is no longer zero, so the adapters change the output)."""
    model = lora_for_training(base(base_dir), LORA, seed=1)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.0), lr=5e-2)
    model.train()
    for _ in range(3):
        model(input_ids=IDS, labels=IDS).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merged_model_gives_the_base_plus_adapters_logits(base_dir: Path) -> None:
    model = trained(base_dir)
    with_adapters = logits(model)
    assert (with_adapters - logits(base(base_dir))).abs().max() > 1e-2  # the adapters do change the output
    merged = merged_model(model)
    assert type(merged) is LlamaForCausalLM and not [n for n, _ in merged.named_parameters() if "lora" in n]
    torch.testing.assert_close(logits(merged), with_adapters, atol=1e-5, rtol=1e-5)


def test_saved_adapter_loads_with_peft_on_the_base(base_dir: Path, tmp_path: Path) -> None:
    model = trained(base_dir)
    folder = save_adapter(model, tmp_path / "adapter", base_model="s3://bucket/models/base/")
    assert {p.name for p in folder.iterdir()} >= {ADAPTER_CONFIG, ADAPTER_WEIGHTS}
    loaded = load_adapter(base(base_dir), folder)
    assert loaded.peft_config["default"].base_model_name_or_path == "s3://bucket/models/base/"
    assert loaded.peft_config["default"].r == 4
    torch.testing.assert_close(logits(loaded), logits(model), atol=0.0, rtol=0.0)


def test_adapter_tensors_named_as_a_zero_checkpoint_go_back_into_a_wrapped_base(base_dir: Path) -> None:
    model = trained(base_dir)
    checkpoint = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_A.default." in n or ".lora_B.default." in n for n in checkpoint)
    fresh = wrap_with_lora(base(base_dir), LORA)
    assert sorted(adapter_names(fresh)) == sorted(checkpoint)
    load_adapter_weights(fresh, checkpoint)
    torch.testing.assert_close(logits(fresh.eval()), logits(model), atol=0.0, rtol=0.0)


def test_adapter_tensors_that_do_not_fit_are_refused(base_dir: Path) -> None:
    model = wrap_with_lora(base(base_dir), LORA)
    tensors = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    first = next(iter(tensors))
    with pytest.raises(AdapterError, match=r"1 missing .*0 not adapters"):
        load_adapter_weights(model, {k: v for k, v in tensors.items() if k != first})
    base_weight = "base_model.model.model.embed_tokens.weight"
    with pytest.raises(AdapterError, match=r"0 missing .*1 not adapters .*embed_tokens"):
        load_adapter_weights(model, {**tensors, base_weight: torch.zeros(VOCAB, 36)})
    with pytest.raises(AdapterError, match=rf"{first}: shape \(2, 36\), the model's adapter is \(4, 36\)"):
        load_adapter_weights(model, {**tensors, first: torch.zeros(2, 36)})


def test_all_linear_adapts_every_projection_and_freezes_the_base(base_dir: Path) -> None:
    model = lora_for_training(base(base_dir), LORA, seed=1)
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[1] for name in adapter_names(model)}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < total / 4
    grouped = [p for group in parameter_groups(model, 0.1) for p in group["params"]]
    assert len(grouped) == len(adapter_names(model)) and all(p.requires_grad for p in grouped)
    with pytest.raises(AdapterError, match=r"instruct.lora_target_modules = \['qkv_proj'\]"):
        wrap_with_lora(base(base_dir), InstructConfig(lora_target_modules=["qkv_proj"]))


def test_adapters_start_the_same_for_the_same_seed_and_leave_the_global_generator_alone(base_dir: Path) -> None:
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = lora_for_training(base(base_dir), LORA, seed=7)
    assert torch.equal(torch.rand(3), before)
    second = lora_for_training(base(base_dir), LORA, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
    third = lora_for_training(base(base_dir), LORA, seed=8)
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), third.parameters(), strict=True))


def test_adapters_get_gradients_under_gradient_checkpointing(base_dir: Path) -> None:
    # Switched on after wrapping, as the training loop does once the model is built, with reentrant recomputation:
    # the frozen embedding's output must require a gradient, or the adapters inside recomputed blocks get none.
    model = lora_for_training(base(base_dir), LORA, seed=1)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    # B starts at zero, so A's gradient is zero at first; B's is not, unless recomputation cut the graph.
    inner = [p for n, p in model.named_parameters() if "layers.0" in n and "lora_B" in n]
    assert inner and all(p.grad is not None and p.grad.abs().sum() > 0 for p in inner)
