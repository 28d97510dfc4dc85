"""TorchMD-Net's own prediction, run by .venv-torchmdnet's interpreter (tests/test_backends.py): the model call of
torchmdnet.models.model.load_model(CKPT, derivative=True) on frames of an npz (z, R in Å), energies (eV) and
forces (eV/Å, the units it was trained in) saved as an npz.

usage: python torchmdnet_predict.py CKPT FRAMES.npz OUT.npz"""

import sys

import numpy as np
import torch
from torchmdnet.models.model import load_model

torch.set_num_threads(1)
checkpoint, frames, out = sys.argv[1:4]
data = np.load(frames)
model = load_model(checkpoint, derivative=True)
z = torch.as_tensor(data["z"], dtype=torch.long)
energies, forces = [], []
for positions in data["R"]:
    energy, force = model(z, torch.as_tensor(positions, dtype=torch.float64), torch.zeros_like(z))
    energies.append(float(energy.detach().reshape(-1)[0]))
    forces.append(force.detach().numpy())
np.savez(out, energies=np.array(energies), forces=np.array(forces))
