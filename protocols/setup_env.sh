#!/usr/bin/env bash
# Create ./.venv (Python 3.11) and install openmlff with its pinned CPU stack, once.
# Sourced by protocols/quickstart.sh and tests/run.sh; re-installs only when pyproject.toml changed.
# GPU nodes: OPENMLFF_EXTRA=cuda12 (or cuda13) installs the CUDA builds of OpenMM and openmm-torch instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${OPENMLFF_PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
EXTRA="${OPENMLFF_EXTRA:-cpu}"
VENV="$ROOT/.venv"
STAMP="$VENV/.openmlff-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$EXTRA"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $("$PY" --version)"
    "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    echo "[setup] installing openmlff[$EXTRA,classical,openmm-ml,nequip,test] and its pinned dependencies (torch 2.12.1, openmm 8.6.1, openmm-torch 1.10, AmberTools 26, nequip 0.19.1)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$EXTRA,classical,openmm-ml,nequip,test]"
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
