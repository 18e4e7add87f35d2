#!/usr/bin/env bash
# Benchmark for a GPU machine: a Llama-style model of about 1.1B parameters (TinyLlama's shape),
# bf16, sequence 2048, ZeRO-2 on one GPU, through our training entrypoint. Prints tokens/s and
# MFU against the device's dense bf16 peak (looked up from its name; PEAK_TFLOPS=... overrides).
# Target: MFU >= 45%.
#
#   bash bench/train_gpu.sh            # STEPS=30 MICRO_BATCH=8 by default
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-30}
MICRO_BATCH=${MICRO_BATCH:-8}
WORK=$(mktemp -d -t bench-train-gpu-XXXX)

cat > "$WORK/config.yaml" <<YAML
data:
  corpus: cwe
  vocab_size: 32000
  block_size: 2048
model:
  hidden_size: 2048
  num_layers: 22
  num_heads: 32
  num_kv_heads: 4
  intermediate_size: 5632
  max_position_embeddings: 2048
train:
  max_steps: ${STEPS}
  micro_batch_size: ${MICRO_BATCH}
  dtype: bf16
  warmup_steps: 5
  log_every: 5
  checkpoint_every: ${STEPS}
  nproc_per_node: 1
  peak_tflops: ${PEAK_TFLOPS:-null}
deepspeed:
  zero_stage: 2
YAML

python - "$WORK" <<'PY'
import json, statistics, sys
from pathlib import Path

from steps.config import load_config, write_config
from steps.prepare.pipeline import run_prepare
from steps.runtime.launch import run_torchrun

work = Path(sys.argv[1])
config = load_config(work / "config.yaml")
run_prepare(config.data, work / "prepared")
args = ["--config", str(write_config(config, work / "config.json")), "--out", str(work / "train")]
args += ["--dataset", str(work / "prepared" / "dataset"), "--tokenizer", str(work / "prepared" / "tokenizer")]
run_torchrun("steps.train", args, nproc_per_node=1)
records = [json.loads(line) for line in (work / "train" / "metrics.jsonl").read_text().splitlines()]
steady = records[1:]  # the first window holds compilation and allocator warm-up
summary = json.loads((work / "train" / "train_summary.json").read_text())
mfu = [r["mfu"] for r in steady if r["mfu"] is not None]
print(json.dumps({
    "benchmark": "train_gpu",
    "parameters": summary["parameters"],
    "sequence": config.data.block_size,
    "micro_batch": config.train.micro_batch_size,
    "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in steady), 1),
    "tflops_per_device": round(statistics.median(r["tflops"] for r in steady), 1),
    "peak_tflops": summary["peak_tflops"],
    "mfu": round(statistics.median(mfu), 4) if mfu else None,
    "memory_gib": round(max(r["memory_gib"] for r in records), 1),
    "target_mfu": 0.45,
}))
PY
