"""Generate a labelled dataset the way MD17 was made: reference-method Langevin MD at a temperature.

Velocities start from a seeded Maxwell-Boltzmann distribution; ASE's Langevin integrator
(ase.md.langevin.Langevin) drives the reference method (wrapped as an ASE calculator); after
`equilibration_steps` a frame is kept every `stride_steps`. The MD already computed energy and
forces at each kept frame, and those are its labels. MD17 used 0.5 fs steps and kept every step;
the default here keeps every 10th step (5 fs) so that 2000 frames span 10 ps instead of 1 ps.

A run with an output path checkpoints atomically every `checkpoint_every_frames` frames
(positions, momenta, the random generator's state, the frames so far) to `OUT.checkpoint.npz`;
started again with the same settings it continues from there and gives the same frames as an
uninterrupted run. The checkpoint is removed once the dataset is written.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.atomic_io import atomic_write
from ..core.config import check_finite, setting
from ..core.errors import InputError, StateError
from ..core.resume import check_resumable
from ..core.units import FS_IN_PS
from . import ReferenceCalculator, ReferenceMethodError, get_reference_method, package_versions
from ..data.dataset import Dataset

CHECKPOINT_SUFFIX = ".checkpoint.npz"
#: Settings that must match for a checkpoint to be resumed (n_frames may grow, checkpointing may change).
_RESUME_KEYS = ("method", "temperature_K", "stride_steps", "equilibration_steps", "timestep_fs",
                "friction_per_fs", "seed")


class SamplingError(StateError):
    """Reference MD could not go on (the reference method failed at some step)."""


@dataclass
class SamplingConfig:
    """Settings of reference-MD sampling; times in fs, temperature in K, friction in 1/fs. The fields are
    `openmlff data generate`'s options (older short forms kept as aliases)."""

    method: str = setting("gfn2-xtb", "reference method (gfn2-xtb, gfn1-xtb, dft, dft:FUNCTIONAL/BASIS, "
                                      "ase:MODULE:CLASS)")
    temperature_K: float = setting(500.0, "Langevin temperature in K", aliases=("--temperature",))
    n_frames: int = setting(1000, "frames to keep", aliases=("--frames",))
    stride_steps: int = setting(10, "MD steps between kept frames", aliases=("--stride",))
    equilibration_steps: int = setting(2000, "MD steps discarded first", aliases=("--equilibration",))
    timestep_fs: float = setting(0.5, "timestep in fs", aliases=("--timestep",))
    friction_per_fs: float = setting(0.01, "Langevin friction in 1/fs")
    seed: int = setting(0, "seed of the initial velocities and the Langevin noise")
    checkpoint_every_frames: int = setting(100, "kept frames between checkpoints (a killed run resumes from the last)")

    def validate(self) -> "SamplingConfig":
        check_finite(self)
        for name in ("n_frames", "stride_steps", "checkpoint_every_frames"):
            if getattr(self, name) < 1:
                raise InputError(f"sampling setting {name} must be >= 1, got {getattr(self, name)}")
        if self.equilibration_steps < 0:
            raise InputError(f"equilibration_steps must be >= 0, got {self.equilibration_steps}")
        for name in ("temperature_K", "timestep_fs", "friction_per_fs"):
            if not getattr(self, name) > 0:
                raise InputError(f"sampling setting {name} must be > 0, got {getattr(self, name)}")
        return self

    @property
    def total_steps(self) -> int:
        return self.equilibration_steps + self.n_frames * self.stride_steps


def generate_dataset(structure, out=None, *, config: SamplingConfig | None = None, charge: int | None = None,
                     multiplicity: int | None = None, progress: bool = True,
                     on_frame: Callable[[int], None] | None = None, **settings) -> Dataset:
    """Reference Langevin MD from `structure` (name, file or Structure); returns the kept frames as a Dataset.

    `settings` are SamplingConfig fields (method, temperature_K, n_frames, stride_steps,
    equilibration_steps, timestep_fs, friction_per_fs, seed, checkpoint_every_frames) and
    override `config`. With `out` the dataset is written there (openmlff npz via
    openmlff.data.writers.save_dataset) and the run checkpoints and resumes beside it.
    charge/multiplicity default to the structure's. `on_frame(frames_done)` is called after
    each kept frame (after any checkpoint of that frame).
    """
    from ..structures import Structure, load_structure

    cfg = replace(config or SamplingConfig(), **settings).validate()
    mol = structure if isinstance(structure, Structure) else load_structure(structure)
    charge = mol.charge if charge is None else int(charge)
    multiplicity = mol.multiplicity if multiplicity is None else int(multiplicity)
    method = get_reference_method(cfg.method)
    # Refuse an unsupported element or broken start before any MD (clear error, no half-made files).
    method.check_input(mol.atomic_numbers, mol.positions_angstrom, multiplicity)
    checkpoint = None
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        checkpoint = Path(str(out) + CHECKPOINT_SUFFIX)

    run = _LangevinRun(mol, method, cfg, charge, multiplicity)
    if checkpoint is not None and checkpoint.exists():
        run.restore(checkpoint)

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.total_steps, initial=run.step, unit="step", disable=not progress,
               desc=f"{mol.name} {method.name} {cfg.temperature_K:g} K")
    started = time.perf_counter()
    try:
        while len(run.frames_E) < cfg.n_frames:
            run.advance()
            bar.update(1)
            if run.at_kept_frame():
                run.keep_frame()
                bar.set_postfix(frames=len(run.frames_E))
                if checkpoint is not None and len(run.frames_E) % cfg.checkpoint_every_frames == 0:
                    run.save(checkpoint)
                if on_frame is not None:
                    on_frame(len(run.frames_E))
    finally:
        bar.close()
    dataset = run.dataset(wall_time_s=time.perf_counter() - started, out=out)
    if out is not None:
        from ..data.writers import save_dataset

        save_dataset(dataset, out)
        if checkpoint is not None and checkpoint.exists():
            checkpoint.unlink()
    return dataset


class _LangevinRun:
    """The state of one sampling run: ASE atoms + Langevin integrator, step count, frames kept so far."""

    def __init__(self, mol, method, cfg: SamplingConfig, charge: int, multiplicity: int):
        from ase import Atoms, units
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

        self.mol, self.method, self.cfg = mol, method, cfg
        self.charge, self.multiplicity = charge, multiplicity
        self.atoms = Atoms(numbers=mol.atomic_numbers, positions=mol.positions_angstrom)
        self.atoms.calc = ReferenceCalculator(method, charge=charge, multiplicity=multiplicity)
        self.rng = np.random.default_rng(cfg.seed)
        MaxwellBoltzmannDistribution(self.atoms, temperature_K=cfg.temperature_K, rng=self.rng)
        Stationary(self.atoms)
        ZeroRotation(self.atoms)
        # fixcm=False: ASE deprecates fixcm=True because it does not sample the NVT ensemble exactly.
        self.dynamics = Langevin(self.atoms, timestep=cfg.timestep_fs * units.fs, temperature_K=cfg.temperature_K,
                                 friction=cfg.friction_per_fs / units.fs, fixcm=False, rng=self.rng)
        self.step = 0
        self.frames_R: list[np.ndarray] = []
        self.frames_E: list[float] = []
        self.frames_F: list[np.ndarray] = []
        self.frames_T: list[float] = []
        self.resumed_from_step: int | None = None

    def advance(self) -> None:
        try:
            self.dynamics.step()
        except ReferenceMethodError as exc:
            raise SamplingError(f"reference MD of {self.mol.name} stopped at step {self.step + 1} "
                                f"({len(self.frames_E)} frames kept): {exc}") from exc
        self.step += 1

    def at_kept_frame(self) -> bool:
        after = self.step - self.cfg.equilibration_steps
        return after > 0 and after % self.cfg.stride_steps == 0

    def keep_frame(self) -> None:
        # The calculator cached energy and forces at these positions during the step: no new calculation.
        self.frames_E.append(float(self.atoms.get_potential_energy()))
        self.frames_F.append(np.array(self.atoms.get_forces(), dtype=np.float64))
        self.frames_R.append(self.atoms.get_positions())
        self.frames_T.append(float(self.atoms.get_temperature()))

    def identity(self) -> dict:
        """What a checkpoint must agree on to be resumed: settings and the starting structure."""
        h = hashlib.sha256()
        h.update(self.mol.atomic_numbers.tobytes())
        h.update(np.ascontiguousarray(self.mol.positions_angstrom).tobytes())
        return {**{k: getattr(self.cfg, k) for k in _RESUME_KEYS}, "structure_sha256": h.hexdigest(),
                "charge": self.charge, "multiplicity": self.multiplicity}

    def save(self, path: Path) -> None:
        n_atoms = self.mol.n_atoms
        arrays = {
            "identity": np.array(json.dumps(self.identity(), sort_keys=True)),
            "rng_state": np.array(json.dumps(self.rng.bit_generator.state)),
            "step": np.array(self.step, dtype=np.int64),
            "positions": self.atoms.get_positions(), "momenta": self.atoms.get_momenta(),
            "R": np.array(self.frames_R).reshape(-1, n_atoms, 3), "E": np.array(self.frames_E),
            "F": np.array(self.frames_F).reshape(-1, n_atoms, 3), "T": np.array(self.frames_T),
        }

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a handle: np.savez would append '.npz' to the temporary name
                np.savez(fh, **arrays)
        atomic_write(path, write)

    def restore(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as data:
            saved = json.loads(str(data["identity"]))
            now = self.identity()
            check_resumable({k: saved.get(k) for k in now}, now, where=str(path), job="sampling run")
            self.rng.bit_generator.state = json.loads(str(data["rng_state"]))
            self.atoms.set_positions(data["positions"])
            self.atoms.set_momenta(data["momenta"])
            self.step = int(data["step"])
            self.frames_R = list(data["R"])
            self.frames_E = [float(e) for e in data["E"]]
            self.frames_F = list(data["F"])
            self.frames_T = [float(t) for t in data["T"]]
        self.resumed_from_step = self.step
        # A larger n_frames than before may continue, a smaller one keeps the first frames.
        del self.frames_R[self.cfg.n_frames:], self.frames_E[self.cfg.n_frames:]
        del self.frames_F[self.cfg.n_frames:], self.frames_T[self.cfg.n_frames:]

    def dataset(self, wall_time_s: float, out) -> Dataset:
        cfg = self.cfg
        provenance = {
            **self.method.provenance(),
            "generated_by": "openmlff.reference.sampling.generate_dataset",
            "structure": self.mol.name, "structure_source": self.mol.source,
            "charge": self.charge, "multiplicity": self.multiplicity,
            "sampler": "ASE Langevin (ase.md.langevin.Langevin, fixcm=False), Maxwell-Boltzmann start",
            **asdict(cfg), "total_steps": self.step,
            "simulated_time_ps": self.step * cfg.timestep_fs * FS_IN_PS,
            "mean_kinetic_temperature_K": float(np.mean(self.frames_T[:cfg.n_frames])),
            "resumed_from_step": self.resumed_from_step,
            "wall_time_s_last_session": round(wall_time_s, 3),
            "package_versions": package_versions(("openmlff", "numpy", "ase", "tblite")),
            "original_units": {"positions": "Å", "energy": "eV", "forces": "eV/Å"},
        }
        provenance.pop("checkpoint_every_frames")
        if out is not None:
            provenance["source_file"] = str(out)
        return Dataset(z=self.mol.atomic_numbers.copy(), R=np.array(self.frames_R[:cfg.n_frames]),
                       E=np.array(self.frames_E[:cfg.n_frames]), F=np.array(self.frames_F[:cfg.n_frames]),
                       name=f"{self.mol.name}_{self.method.name}_{cfg.temperature_K:g}K",
                       provenance=provenance).validate("generate_dataset")
