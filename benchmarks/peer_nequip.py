"""nequip 0.19.1's side of benchmarks/peers.py (pair `nequip`): train its NequIP with its own `nequip-train`,
keep the weights at wall-clock marks, evaluate them, and time the last in OpenMM through openmm-ml's
documented NequIP path. Runs in the peers' virtual environment (`.venv-peers`, made by peers.py), never
imports openmlff.

    python peer_nequip.py train    WORK --marks 60 150 300 --seed 0
    python peer_nequip.py evaluate WORK            -> WORK/nequip/curve.json
    python peer_nequip.py md       WORK            -> WORK/nequip/md.json

WORK holds what peers.py wrote: data/{coords,embed,energy,forces}.npy (Å, kcal/mol, kcal/mol/Å),
data/splits.npz (idx_train, idx_val, idx_test) and settings.json (the pair's shared settings). The
frames go to extended-XYZ files that nequip's ASEDataModule reads (nequip works in the data's units).

The recipe is nequip's configs/tutorial.yaml (EMALightningModule with EMA decay 0.999 and its warm-up,
per-atom energy loss, Adam at lr 0.01, reduce-on-plateau factor 0.6 / patience 5 / threshold 0.2,
data-derived avg_num_neighbors, per-type force-RMS scales and per-atom energy shifts, no ZBL, eager mode
on the CPU) with the model size, cutoff, batch size and loss weights peers.py gives both sides. Its
training loop is nequip's (`nequip-train`, hydra, lightning.Trainer); the only addition is the callback
below that saves a checkpoint at each mark and stops after the last. The clock starts at the first
training step and counts validation, like openmlff's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peer_driver import MarkSnapshots, evaluate_marks, main as driver_main  # noqa: E402
SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O"}


class Snapshots(MarkSnapshots):
    """A nequip checkpoint (EMA weights included) at each mark; the config names it `peer_nequip.Snapshots`."""

    name = "nequip"

    def on_train_start(self, trainer, pl_module):
        torch.set_num_threads(1)

    def save(self, trainer, pl_module, path_stem):
        trainer.save_checkpoint(f"{path_stem}.ckpt")


def _write_xyz(work: Path) -> dict[str, Path]:
    """The split's frames as extended XYZ (energy in kcal/mol, forces in kcal/mol/Å, positions in Å)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    d = work / "data"
    pos, z = np.load(d / "coords.npy"), np.load(d / "embed.npy")
    energy, forces = np.load(d / "energy.npy").reshape(-1), np.load(d / "forces.npy")
    splits = np.load(d / "splits.npz")
    paths = {}
    for part in ("train", "val", "test"):
        frames = []
        for i in splits[f"idx_{part}"]:
            atoms = Atoms(numbers=z, positions=pos[i], pbc=False)
            atoms.calc = SinglePointCalculator(atoms, energy=float(energy[i]), forces=forces[i])
            frames.append(atoms)
        paths[part] = d / f"{part}.xyz"
        write(paths[part], frames, format="extxyz")
    return paths


def _config(work: Path, settings: dict, marks: list[float], seed: int, paths: dict[str, Path]) -> dict:
    """nequip's tutorial.yaml recipe with the pair's shared settings (see the module docstring)."""
    z = np.load(work / "data" / "embed.npy")
    symbols = sorted({SYMBOLS[int(a)] for a in z})
    out = work / "nequip"
    loader = {"_target_": "torch.utils.data.DataLoader", "num_workers": 0}
    return {
        "run": ["train"],
        "cutoff_radius": settings["cutoff_angstrom"],
        "chemical_symbols": symbols,
        "model_type_names": "${chemical_symbols}",
        "monitored_metric": "val0_epoch/weighted_sum",
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule", "seed": seed,
            "train_file_path": str(paths["train"]), "val_file_path": str(paths["val"]),
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                 "model_type_names": "${model_type_names}",
                 "chemical_species_to_atom_type_map": {s: s for s in symbols}},
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": "${cutoff_radius}"},
            ],
            "train_dataloader": {**loader, "batch_size": settings["batch_size"], "shuffle": True},
            "val_dataloader": {**loader, "batch_size": 50},
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager",
                              "dataloader_kwargs": {"batch_size": 50}, "type_names": "${model_type_names}"},
        },
        "trainer": {
            "_target_": "lightning.Trainer", "accelerator": "cpu", "devices": 1, "max_epochs": 100_000,
            "check_val_every_n_epoch": 1, "log_every_n_steps": 20, "enable_checkpointing": False,
            "enable_progress_bar": False, "num_sanity_val_steps": 0,
            "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(out), "name": "",
                       "version": ""},
            "callbacks": [{"_target_": "peer_nequip.Snapshots", "marks": marks, "out_dir": str(out)}],
        },
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "ema_decay": 0.999,
            "loss": {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True,
                     "coeffs": {"total_energy": settings["energy_weight"], "forces": settings["force_weight"]}},
            "val_metrics": {"_target_": "nequip.train.EnergyForceMetrics",
                            "coeffs": {"total_energy_mae": 1.0, "forces_mae": 1.0}},
            "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01},
            "lr_scheduler": {
                "scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "factor": 0.6,
                              "patience": 5, "threshold": 0.2, "min_lr": 1.0e-6},
                "monitor": "${monitored_metric}", "interval": "epoch", "frequency": 1},
            "model": {
                "_target_": "nequip.model.NequIPGNNModel", "seed": seed, "model_dtype": "float32",
                "type_names": "${model_type_names}", "r_max": "${cutoff_radius}",
                "num_bessels": settings["num_bessel"], "bessel_trainable": settings["trainable_bessel"],
                "polynomial_cutoff_p": settings["polynomial_p"], "num_layers": settings["num_layers"],
                "l_max": settings["l_max"], "parity": settings["parity"], "num_features": settings["num_features"],
                "radial_mlp_depth": settings["radial_mlp_layers"], "radial_mlp_width": settings["radial_mlp_width"],
                "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                "per_type_energy_scales": "${training_data_stats:per_type_forces_rms}",
                "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
            },
        },
        "global_options": {"allow_tf32": False},
    }


def train(work: Path, marks: list[float], seed: int) -> None:
    """Write the frames and the config, then run `nequip-train` on them (its own CLI, in this venv)."""
    settings = json.loads((work / "settings.json").read_text())
    out = work / "nequip"
    out.mkdir(parents=True, exist_ok=True)
    config = _config(work, settings, marks, seed, _write_xyz(work))
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cli = Path(sys.executable).with_name("nequip-train")
    subprocess.run([str(cli), "-cp", str(out), "-cn", "config", f"hydra.run.dir={out / 'hydra'}"], check=True,
                   env=env, cwd=str(out))


def _calculator(ckpt: Path, work: Path):
    """nequip's ASE calculator on the model its checkpoint loads for inference (the EMA weights)."""
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.integrations.ase import NequIPCalculator
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.global_state import set_global_state

    set_global_state()
    settings = json.loads((work / "settings.json").read_text())
    config = yaml.safe_load((work / "nequip" / "config.yaml").read_text())
    model = load_saved_model(str(ckpt)).eval()
    symbols = config["chemical_symbols"]
    transforms = [ChemicalSpeciesToAtomTypeMapper(model_type_names=symbols,
                                                  chemical_species_to_atom_type_map={s: s for s in symbols}),
                  NeighborListTransform(r_max=settings["cutoff_angstrom"])]
    return NequIPCalculator(model, device="cpu", transforms=transforms)


def evaluate(work: Path, seed: int) -> None:
    """Energy and force MAEs (kcal/mol, kcal/mol/Å) of every kept checkpoint on the validation and test frames."""
    from ase import Atoms

    torch.set_num_threads(1)
    pos, z = np.load(work / "data" / "coords.npy"), np.load(work / "data" / "embed.npy")

    def predictor(ckpt: Path):
        calc = _calculator(ckpt, work)

        def predict(idx):
            e, f = [], []
            for i in idx:
                atoms = Atoms(numbers=z, positions=pos[i], pbc=False)
                atoms.calc = calc
                e.append(atoms.get_potential_energy())
                f.append(atoms.get_forces())
            return np.asarray(e), np.asarray(f)

        return predict

    evaluate_marks(work, "nequip", ".ckpt", predictor)


def md(work: Path, seed: int, steps: int) -> None:
    """Time the last checkpoint in OpenMM the way openmm-ml documents for NequIP (MLPotential('nequip', modelPath=
    checkpoint): a PythonForce calling the model with nequip's neighbour list each step), and the same call bare."""
    from functools import partial

    import openmm
    from openmm import app
    from openmmml import MLPotential
    from openmmml.models import nequippotential

    from peer_timing import best_ms, system_md_ms_per_step

    torch.set_num_threads(1)
    out = work / "nequip"
    last = json.loads((out / "marks.json").read_text())[-1]
    ckpt = out / f"weights_{last['mark_s']:g}s.ckpt"
    z = np.load(work / "data" / "embed.npy")
    start = np.load(work / "data" / "coords.npy")[0]
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for a in z:
        topology.addAtom(SYMBOLS[int(a)], app.Element.getByAtomicNumber(int(a)), residue)
    potential = MLPotential("nequip", modelPath=str(ckpt), lengthScale=0.1, energyScale=4.184)
    system = potential.createSystem(topology)
    ms = system_md_ms_per_step(system, start, steps=steps)

    # the floor: what the PythonForce's callback computes, without OpenMM around it
    calc = _calculator(ckpt, work)
    symbols = [SYMBOLS[int(a)] for a in z]
    type_of = {name: i for i, name in enumerate(calc.model.metadata["type_names"].split())}
    compute = partial(nequippotential._computeNequIP, model=calc.model,
                      atomTypes=torch.tensor([type_of[s] for s in symbols]), cutoff=float(calc.model.metadata["r_max"]),
                      lengthScale=0.1, energyScale=4.184, periodic=False, pbc=torch.zeros(3, dtype=torch.bool))

    class _State:  # the one method of openmm.State that _computeNequIP reads
        def getPositions(self, asNumpy=True):
            return (start * 0.1) * openmm.unit.nanometer

    state = _State()
    result = {"model": str(ckpt), "path": "openmm-ml 1.8 MLPotential('nequip') -> openmm.PythonForce",
              "md_ms_per_step": ms, "floor_ms": best_ms(lambda: compute(state)), "torch": torch.__version__}
    (out / "md.json").write_text(json.dumps(result, indent=1))
    print(f"[nequip] MD {result['md_ms_per_step']:.2f} ms/step, floor {result['floor_ms']:.2f} ms", flush=True)


def main(argv=None) -> int:
    return driver_main(__doc__, train, evaluate, md, argv)


if __name__ == "__main__":
    raise SystemExit(main())
