"""LoRA under DeepSpeed ZeRO-2 and ZeRO-3 on 2 CPU ranks (tests/support/lora_zero_worker.py): the checkpoint
holds the adapters alone, resumes exactly, and its adapter tensors, read as convert reads any ZeRO
checkpoint, give the trained engine's logits on the base model, merged or not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steps.convert.zero_reader import ZeroCheckpointReader
from steps.formats.adapter_folder import adapter_names, load_adapter_weights, merged_model, wrap_with_lora
from steps.formats.chat_template import IGNORE_INDEX
from steps.formats.instruction_dataset import ConversationWriter
from steps.formats.model import load_pretrained
from steps.runtime.launch import run_torchrun
from tests.support.lora_zero_worker import LORA
from tests.support.tiny_llama import save_tiny_tied_llama

WORKER = str(Path(__file__).parents[1] / "support" / "lora_zero_worker.py")
VOCAB = 64


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lora-zero")
    base = save_tiny_tied_llama(root / "base", VOCAB, 64)
    rng = np.random.default_rng(0)
    writer = ConversationWriter(root / "train")
    for number in range(24):
        ids = rng.integers(1, VOCAB, int(rng.integers(6, 30))).tolist()
        writer.add(f"c{number}", ids, [IGNORE_INDEX] * (len(ids) // 2) + ids[len(ids) // 2 :])
    writer.close()
    return base, root / "train"


@pytest.mark.parametrize("stage", [2, 3])
def test_a_lora_checkpoint_holds_the_adapters_resumes_exactly_and_converts(stage: int, inputs, tmp_path) -> None:
    base, split = inputs
    run_torchrun(WORKER, [str(stage), str(base), str(split), str(tmp_path)], nproc_per_node=2)
    logits = torch.load(tmp_path / "logits.pt")
    assert torch.equal(logits["resumed"], logits["trained"])
    assert torch.equal(logits["resumed_after"], logits["trained_after"])  # the optimizer state came back too

    folder = tmp_path / "checkpoints" / "step-3"
    for states in folder.glob("*model_states.pt"):
        saved = torch.load(states, map_location="cpu", weights_only=False)
        # Besides the adapters only the output head, tied to the (frozen) embedding, which DeepSpeed saves as a
        # shared parameter (whole with ZeRO-2, an empty placeholder with ZeRO-3).
        others = {name for name in saved["module"] if ".lora_" not in name}
        assert others <= {"base_model.model.lm_head.weight"} and not saved["frozen_param_shapes"]

    wrapped = wrap_with_lora(load_pretrained(base), LORA)
    reader = ZeroCheckpointReader(folder)
    assert sorted(reader.shapes) == sorted(adapter_names(wrapped))
    load_adapter_weights(wrapped, dict(reader.gather(list(reader.shapes))))
    with torch.no_grad():
        unmerged = wrapped.eval()(input_ids=logits["probe"]).logits
        merged = merged_model(wrapped)(input_ids=logits["probe"]).logits
    torch.testing.assert_close(unmerged, logits["trained"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged, logits["trained"], atol=1e-5, rtol=1e-5)
