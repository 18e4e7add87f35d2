#!/usr/bin/env bash
# The whole GPU check in one run, for one H100/H200 with no internet (issue 14):
#
#   python bench/gpu/fetch_wheels.py          # here, with the network: wheels into .gl/wheels (git-ignored)
#   bench/gpu/run.sh OUTDIR                   # there, with .gl/wheels carried: every part, then a table
#   bench/gpu/run.sh OUTDIR --dry-run         # anywhere: what it would run, the carried size; runs nothing
#   PARTS=2,3 bench/gpu/run.sh OUTDIR         # a subset (for a second call if one run cannot hold them all)
#   SMOKE=1 PARTS=2,3 bench/gpu/run.sh OUTDIR # parts 2 and 3 at a tiny size: checks the plumbing on a CPU
#   LIMIT_5=300 PARTS=5 bench/gpu/run.sh OUTDIR   # part N's time limit in seconds (LIMIT_1 … LIMIT_5)
#
# Parts, in order, each under its own time limit (seconds; the sum stays under ~9 minutes so that one
# 10-minute device call holds it), each writing one JSON into OUTDIR:
#   1 gpu_tests.json  pytest -m gpu tests/gpu: bf16 ZeRO-2/3 training + resume, conversion, engines on GPU
#   2 train.json      ~1.1B Llama, bf16, seq 2048, ZeRO-2, our entrypoint: tokens/s, TFLOP/s, MFU vs 790
#   3 inference.json  HF vs DeepSpeed-Inference (kernel injection) vs ZeRO-Inference, fp16, batch 1 and 16
#   4 offload.json    ZeRO-Inference with parameters on CPU under a GPU memory budget below the weights
#   5 convert.json    ~1B ZeRO-2/3 checkpoints: our conversion vs DeepSpeed's zero_to_fp32, peak host memory
# then OUTDIR/results.jsonl (one line per part, for bench/results/) and the table; OUTDIR/run.log has it all.
# Exit status: 0 when every part wrote its JSON, else 1 (the table says which did not).
set -uo pipefail
START=$PWD
cd "$(dirname "$0")/../.."

OUT="" DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { print } /^set /{ exit }' "$0"; exit 0 ;;
        -*) echo "run.sh: unknown option $arg" >&2; exit 2 ;;
        *) OUT="$arg" ;;
    esac
done
if [ -z "$OUT" ]; then
    echo "usage: bench/gpu/run.sh OUTDIR [--dry-run]" >&2
    exit 2
fi
case "$OUT" in /*) ;; *) OUT="$START/$OUT" ;; esac
WHEELS=${WHEELS:-.gl/wheels}
PARTS=${PARTS:-1,2,3,4,5}
PY=${PYTHON:-python3}

# part number, time limit (s), JSON name, command
PLAN=(
    "1|${LIMIT_1:-200}|gpu_tests.json|rm -f /tmp/gpu-tests.xml; $PY -m pytest -m gpu tests/gpu -q -rA -p no:cacheprovider --junitxml=/tmp/gpu-tests.xml; $PY bench/gpu/table.py tests /tmp/gpu-tests.xml $OUT/gpu_tests.json"
    "2|${LIMIT_2:-100}|train.json|$PY bench/gpu/train_throughput.py $OUT/train.json --steps ${TRAIN_STEPS:-30} --micro-batch ${MICRO_BATCH:-8} ${SMOKE:+--smoke}"
    "3|${LIMIT_3:-80}|inference.json|$PY bench/gpu/inference.py engines $OUT/inference.json --new-tokens 32 ${SMOKE:+--smoke}"
    "4|${LIMIT_4:-50}|offload.json|$PY bench/gpu/inference.py offload $OUT/offload.json --budget-gib 1.0 --new-tokens 16"
    "5|${LIMIT_5:-110}|convert.json|CUDA_VISIBLE_DEVICES= $PY bench/convert.py --hidden 2048 --layers ${CONVERT_LAYERS:-16} --vocab 32000 --shard 2GB | tail -n 1 > $OUT/convert.json"
)

if [ "$DRY" = 1 ]; then
    echo "run.sh --dry-run: nothing is run. Would install: $PY -m pip install --no-index --no-deps --target /tmp/site $WHEELS/*.whl"
    total=0
    for entry in "${PLAN[@]}"; do
        IFS='|' read -r part limit name command <<<"$entry"
        case ",$PARTS," in *",$part,"*) ;; *) continue ;; esac
        total=$((total + limit))
        echo "part $part (limit ${limit}s) -> $OUT/$name: $command"
    done
    echo "also, in the background from the start: DeepSpeed's InferenceBuilder op (kernel injection) JIT build"
    echo "time limits: ${total}s in all"
    $PY bench/gpu/fetch_wheels.py --size --dest "$WHEELS"
    exit $?
fi

mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
echo "== $(date -u +%FT%TZ) bench/gpu/run.sh on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"

# Offline install of the carried wheels next to the image's packages (not over them).
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl ||
        { echo "run.sh: installing $WHEELS failed"; exit 1; }
    export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "run.sh: no wheels in $WHEELS; using what this Python has (run bench/gpu/fetch_wheels.py where pip can reach an index)"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export USERNAME=${USERNAME:-tune-gpu} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# DeepSpeed's ops JIT-compile here: for this chip only, on every core.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PY -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null)}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
$PY -c 'import torch, transformers, deepspeed, datasets, pydantic; print("versions:", "torch", torch.__version__, "transformers", transformers.__version__, "deepspeed", deepspeed.__version__, "datasets", datasets.__version__, "pydantic", pydantic.__version__)'

# Kernel injection's op (DeepSpeed's transformer_inference) compiles once, into torch's extension cache; start it
# now on the CPUs so that parts 1 and 3 find it built (a concurrent load waits for this build, never repeats it).
BUILD=""
case ",$PARTS," in *,1,*|*,3,*)
    (timeout 400 $PY -c 'from deepspeed.accelerator import get_accelerator as a; a().create_op_builder("InferenceBuilder").load()' \
        >/tmp/ds-inference-op.log 2>&1; echo "exit $?" >>/tmp/ds-inference-op.log) &
    BUILD=$! ;;
esac

for entry in "${PLAN[@]}"; do
    IFS='|' read -r part limit name command <<<"$entry"
    case ",$PARTS," in *",$part,"*) ;; *) continue ;; esac
    echo "== part $part (limit ${limit}s): $command"
    rm -f "$OUT/$name"  # never report an earlier run's figures
    started=$(date +%s)
    timeout -k 10 "$limit" bash -c "$command"
    code=$?
    echo "== part $part: exit $code after $(($(date +%s) - started))s"
    if [ ! -s "$OUT/$name" ] || ! $PY -c "import json,sys; json.load(open(sys.argv[1]))" "$OUT/$name" 2>/dev/null; then
        reason="exit code $code"
        [ "$code" = 124 ] || [ "$code" = 137 ] && reason="stopped at its ${limit}s limit"
        echo "{\"error\": \"$reason; see run.log\"}" >"$OUT/$name"
    fi
done

if [ -n "$BUILD" ]; then
    wait "$BUILD"
    echo "== DeepSpeed inference op build (kernel injection):"; tail -n 5 /tmp/ds-inference-op.log
fi
echo "== results ($OUT/results.jsonl)"
$PY bench/gpu/table.py summary "$OUT" "$PARTS"
