#!/usr/bin/env bash
# On a GPU machine without network (Python 3.12, torch with CUDA, Triton, e3nn): install the wheels that
# protocols/gpu_wheels.sh downloaded into .whl/ (offline, into /tmp/site), then run benchmarks/gpu_check.py on
# this checkout and write gpu_check.json (and its log) into $OUT, or into the current folder without $OUT.
#     bash protocols/gpu_check.sh [--budget-s 420]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${OUT:-$PWD}"
ls "$ROOT"/.whl/*.whl >/dev/null 2>&1 || { echo "$ROOT/.whl: no wheels; run protocols/gpu_wheels.sh first" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$ROOT"/.whl/*.whl
export PYTHONPATH="/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OPENMLFF_CACHE_DIR="${OPENMLFF_CACHE_DIR:-/tmp/openmlff-cache}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 "$ROOT/benchmarks/gpu_check.py" --out "$DEST/gpu_check.json" "$@" 2>&1 | tee "$DEST/gpu_check.log"
