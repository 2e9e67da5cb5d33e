#!/usr/bin/env bash
# Set up (with test dependencies) and run the test suite. Fails when no test ran (pytest exit 5).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "no tests ran: failing" >&2; exit 1; fi
exit "$rc"
