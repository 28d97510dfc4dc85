#!/usr/bin/env bash
# The test command: install if needed, then run the whole test suite on the CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/protocols/setup_env.sh"
cd "$ROOT"
exec python -m pytest tests -q "$@"
