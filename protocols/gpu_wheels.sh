#!/usr/bin/env bash
# Downloads (here, where pip reaches the index) the Python 3.12 wheels that the GPU machines lack for openmlff's CUDA
# paths: openmm 8.6.1, its CUDA 13 platform, openmm-torch 1.10 for CUDA 13 (torch >= 2.10, < 2.13), mdtraj and ase;
# about 32 MB in .whl/ (git-ignored), under the 64 MiB that travels with the code. Their other needs (numpy,
# scipy, matplotlib, torch, e3nn, ...) are on those machines already. Then, on the GPU machine:
#     bash protocols/gpu_check.sh        (installs them offline and runs benchmarks/gpu_check.py)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$ROOT/.whl"
platforms=()
for tag in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
           manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$tag")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d "$ROOT/.whl" openmm==8.6.1 OpenMM-CUDA-13==8.6.1 acellera-openmmtorch-cu13==1.10 mdtraj==1.11.2 ase==3.29.0
du -sh "$ROOT/.whl"
