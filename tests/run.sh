#!/usr/bin/env bash
# The test command: install if needed (openmlff's environment, and the backends' own: protocols/backend_envs.sh),
# then run the whole test suite on the CPU.
# `bash tests/run.sh --fast` runs the everyday tier, under 3 minutes here: every test but those marked slow (the
# fault matrix's cells beyond its sample, the backends' trainings, DFT, the longest MD, kill and campaign tests);
# CI runs everything. Other arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/protocols/setup_env.sh"
# the environments that serve MACE and TorchMD-Net models (tests/test_backends.py); made once
bash "$ROOT/protocols/backend_envs.sh" mace torchmdnet
export OPENMLFF_REQUIRE_BACKENDS=1  # a missing backend environment fails the backend tests, never skips them
cd "$ROOT"
if [ "${1:-}" = "--fast" ]; then
    shift
    exec python -m pytest tests -q -m "not slow" "$@"
fi
exec python -m pytest tests -q "$@"
