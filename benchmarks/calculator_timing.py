"""Milliseconds per energy-and-forces call of an ASE calculator, in whatever environment runs this file (it imports
nothing from openmlff): benchmarks/served_models.py runs it in a backend's own environment to time the model where it
lives, beside the same model served to openmlff over ASE's socket.

usage: python calculator_timing.py MODULE:CLASS OPTIONS_JSON FRAMES.extxyz N_CALLS  -> one JSON line on stdout"""

import importlib
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import ase.io  # noqa: E402
import numpy as np  # noqa: E402

try:
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass

target, options, frames_file, n_calls = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
module, _, name = target.partition(":")
atoms = ase.io.read(frames_file, index=0)
atoms.calc = getattr(importlib.import_module(module), name)(**options)
rng = np.random.default_rng(0)
start = atoms.positions.copy()
atoms.get_forces()  # first call: model load and warm-up, not timed
t0 = time.perf_counter()
for _ in range(n_calls):
    atoms.positions = start + rng.normal(0.0, 0.01, start.shape)
    atoms.get_potential_energy()
    atoms.get_forces()
print(json.dumps({"ms_per_call": (time.perf_counter() - t0) / n_calls * 1e3}))
