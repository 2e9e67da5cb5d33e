#!/usr/bin/env bash
# Set up (with test dependencies) and run the test suite. Fails when no test ran (pytest exit 5).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev || exit 1
# One torch/OpenMP thread per process unless the caller says otherwise: several tests run
# subprocesses side by side (DDP ranks, kill-and-resume), and oversubscribed OpenMP threads
# stall at every barrier on a 2-core machine (a training step went from 8 s to 30 s).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "no tests ran: failing" >&2; exit 1; fi
exit "$rc"
