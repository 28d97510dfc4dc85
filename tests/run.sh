#!/usr/bin/env bash
# The test command: install if needed, then run the whole test suite on the CPU.
# `bash tests/run.sh --fast` runs the everyday tier: every test but those marked slow (the fault matrix's
# cells beyond its sample, tests/test_fault_matrix.py); CI runs everything. Other arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/protocols/setup_env.sh"
cd "$ROOT"
if [ "${1:-}" = "--fast" ]; then
    shift
    exec python -m pytest tests -q -m "not slow" "$@"
fi
exec python -m pytest tests -q "$@"
