#!/usr/bin/env bash
# The main job: install if needed, then run the aspirin quick start (train ET, export, metrics, MD at 500 K).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/protocols/setup_env.sh"
cd "$ROOT"
exec python protocols/quickstart_aspirin.py "$@"
