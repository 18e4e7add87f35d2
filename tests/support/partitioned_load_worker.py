"""One torchrun rank of tests/distributed/test_partitioned_load.py: build the model training starts from, under
ZeRO-3, from a base model folder, and record what this rank holds.

    python -m torch.distributed.run --nproc_per_node 2 tests/support/partitioned_load_worker.py CONFIG MODEL OUT

Spies count calls to the functions that read a whole state dict at once (transformers' `load_state_dict`,
safetensors' `load_file`/`load`) while the model is built. Writes `rank-<r>.json`: the parameter elements
this rank holds against the model's, the spies' counts, the fingerprint, and whether the gathered weights
equal a plain load's.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import deepspeed
import safetensors.torch
import torch
import transformers.modeling_utils

from steps.config import load_config
from steps.formats.model import load_pretrained
from steps.runtime.distributed import init_distributed, shutdown
from steps.train.deepspeed_config import build_deepspeed_config
from steps.train.loop import starting_model

WHOLE_STATE_DICT_READERS = [
    (transformers.modeling_utils, "load_state_dict"),
    (safetensors.torch, "load_file"),
    (safetensors.torch, "load"),
]


def main(config_file: Path, model_dir: Path, out: Path) -> None:
    config = load_config(config_file)
    ctx = init_distributed()
    ds_config = build_deepspeed_config(config, ctx.world_size)
    calls: dict[str, int] = {}
    originals = [(owner, name, getattr(owner, name)) for owner, name in WHOLE_STATE_DICT_READERS]
    for owner, name, original in originals:
        setattr(owner, name, _counting(original, name, calls))
    try:
        model, fingerprint = starting_model(config, ds_config, model_dir, None)
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    params = list(model.parameters())  # a tied table once
    held = sum((p.ds_tensor if hasattr(p, "ds_tensor") else p).numel() for p in params)
    total = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    plain = load_pretrained(model_dir).state_dict()
    with deepspeed.zero.GatheredParameters(params):  # every rank joins; the test compares afterwards
        equal = all(torch.equal(tensor, plain[name]) for name, tensor in model.state_dict().items())
    record = {"held": held, "total": total, "tensors": len(params), "calls": calls}
    record |= {"fingerprint": fingerprint, "weights_equal": equal}
    (out / f"rank-{ctx.rank}.json").write_text(json.dumps(record))
    # As the product's entrypoints end: a rank that exits with its process group alive can abort in gloo's
    # threads ("terminate called without an active exception", SIGABRT), which failed this test once in CI.
    shutdown()
    # It aborted once more after that, in CI, with both ranks' records already written: at teardown, in C++
    # destructors (unlike the product's entrypoints, this worker builds the model under zero.Init and ends
    # without an engine). What is under test is in the records, so the worker ends without running them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _counting(function, name: str, calls: dict[str, int]):
    def counted(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return function(*args, **kwargs)

    return counted


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
