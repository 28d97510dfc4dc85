"""MACE's own prediction, run by .venv-mace's interpreter (tests/test_backends.py): energies (eV) and forces (eV/Å)
of the frames of an extended-XYZ file from mace.calculators.MACECalculator, saved as an npz.

usage: python mace_predict.py MODEL FRAMES.extxyz OUT.npz"""

import sys

import ase.io
import numpy as np
import torch
from mace.calculators import MACECalculator

torch.set_num_threads(1)
model, frames, out = sys.argv[1:4]
calculator = MACECalculator(model_paths=model, device="cpu", default_dtype="float64")
energies, forces = [], []
for atoms in ase.io.read(frames, index=":"):
    atoms.calc = calculator
    energies.append(atoms.get_potential_energy())
    forces.append(atoms.get_forces())
np.savez(out, energies=np.array(energies), forces=np.array(forces))
