#!/usr/bin/env bash
# The environments that serve models whose code cannot live beside openmlff (README, "Testing a model you trained
# elsewhere"): .venv-mace (mace-torch 0.3.16 pins e3nn 0.4.4; openmlff has 0.6.0) and .venv-torchmdnet (torchmd-net
# 3.1.0 asks setuptools >= 82, torch 2.12.1 < 82: installed without its pins, as benchmarks/peers.py does). Each
# holds torch 2.12.1, ASE and openmm-ml 1.8, so `ase:MODULE:CLASS` and `openmm-ml:NAME` models run there with
# --model-option python=.venv-mace/bin/python (openmlff.reference.served). About 5 GB each, a minute or two from the
# package index; made once, remade when this file changes. Usage: bash protocols/backend_envs.sh [mace] [torchmdnet]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${OPENMLFF_PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
COMMON="torch==2.12.1 ase==3.29.0 openmm==8.6.1 numpy<2.5"
declare -A PACKAGES=(
    [mace]="$COMMON mace-torch==0.3.16"
    [torchmdnet]="$COMMON lightning==2.6.6 torch_geometric==2.8.1 warp-lang==1.19.0 h5py tqdm pyyaml"
)
declare -A NO_DEPS=(
    [mace]="openmmml==1.8"
    [torchmdnet]="torchmd-net==3.1.0 openmmml==1.8"
)
for name in "${@:-mace torchmdnet}"; do
    for backend in $name; do
        VENV="$ROOT/.venv-$backend"
        STAMP="$VENV/.openmlff-backend"
        WANT="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
        if [ "$(cat "$STAMP" 2>/dev/null || true)" = "$WANT" ]; then
            continue
        fi
        echo "[backends] making $VENV: ${PACKAGES[$backend]} ${NO_DEPS[$backend]} (about 5 GB)"
        [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet ${PACKAGES[$backend]}
        "$VENV/bin/python" -m pip install --quiet --no-deps ${NO_DEPS[$backend]}
        echo "$WANT" > "$STAMP"
    done
done
