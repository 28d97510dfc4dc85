"""Trust in a run: a committee's force spread at every report, and an alarm before the model is off its data.

A committee file (openmlff.model_file.writer.export_committee), or two or more models (what
potentials.get_potential takes, each evaluated on its own), is evaluated at each reported step on the run's
positions, whatever model drives the run: the members' force spread per atom,
sigma_i = sqrt(mean_k |F_ik - mean_k F_ik|^2), in kcal/mol/Å. Its largest value over the atoms goes to state.csv
(`max_force_uncertainty_kcal_per_mol_per_A`), the summary keeps the run's maximum. A report whose largest sigma
exceeds the threshold is untrusted: the summary records `first_untrusted_time_ps`, the frame is kept in
`untrusted_frames.npz` (positions Å, steps, times ps, sigma per atom), and with `stop_when_untrusted` the run
ends there, before it collapses, as `stopped_untrusted` (not a collapse: `stable` stays true).

The trust state is saved with each checkpoint and cut back to its step on resume, so a resumed run reports what
an uninterrupted one does. run.json records the settings under "trust" (absent for runs without a committee).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.atomic_io import atomic_write_stream
from ..core.config import check_finite
from ..core.errors import InputError
from ..model_file.reader import check_model_atoms, file_sha256, load_exported
from ..potentials.model_ref import ModelRef
from ..core.units import EV_IN_KJ_PER_MOL, FS_IN_PS, NM_IN_ANGSTROM, ev_to
from .reporters import ScheduledReporter, StepRecord
from .rundir import UNTRUSTED_FRAMES_FILE, RunDirectory

#: kJ/mol/nm -> kcal/mol/Å
_KJ_NM_TO_KCAL_A = ev_to("kcal/mol") / EV_IN_KJ_PER_MOL / NM_IN_ANGSTROM


class UntrustedStop(Exception):
    """Raised by the TrustReporter to end a run at its first untrusted report (stop_when_untrusted)."""

    def __init__(self, step: int) -> None:
        super().__init__(f"untrusted at step {step}")
        self.step = step


@dataclass(frozen=True)
class TrustSettings:
    """The committee evaluated at each report, and what an untrusted report does."""

    #: A committee file (Path), or a tuple of two or more models (ModelRef.to_value forms: paths, names, tables).
    committee: Path | tuple
    threshold_kcal_per_mol_per_A: float | None = None
    stop_when_untrusted: bool = False

    def __post_init__(self) -> None:
        check_finite(self)
        if isinstance(self.committee, (list, tuple)):
            if len(self.committee) < 2:
                raise InputError(f"a committee of models needs two or more members, got {len(self.committee)}")
            object.__setattr__(self, "committee", tuple(self.committee))
        if self.threshold_kcal_per_mol_per_A is not None and not self.threshold_kcal_per_mol_per_A > 0:
            raise InputError(f"the untrusted threshold must be a positive force spread in kcal/mol/Å, "
                             f"got {self.threshold_kcal_per_mol_per_A}")
        if self.stop_when_untrusted and self.threshold_kcal_per_mol_per_A is None:
            raise InputError("stop_when_untrusted needs a threshold (kcal/mol/Å)")

    def members(self) -> list | None:
        """The committee's members as models (None for a committee file, which holds its members inside)."""
        return list(self.committee) if isinstance(self.committee, tuple) else None

    def record(self, atomic_numbers=None, positions_angstrom=None) -> dict:
        """run.json's "trust" entry: the committee by path and SHA-256, or its members with their identities."""
        settings = {"threshold_kcal_per_mol_per_A": self.threshold_kcal_per_mol_per_A,
                    "stop_when_untrusted": bool(self.stop_when_untrusted)}
        if self.members() is None:
            path = Path(self.committee).resolve()
            return {"committee": str(path), "committee_sha256": file_sha256(path), **settings}
        from ..potentials import get_potential
        from ..potentials.base import json_sha256

        members = [get_potential(m) for m in self.members()]
        identities = [m.identity_sha256(atomic_numbers, positions_angstrom) for m in members]
        return {"committee": [ModelRef.from_value(m).to_value() for m in self.members()],
                "committee_sha256": json_sha256(identities), **settings}


class TrustReporter(ScheduledReporter):
    """At each report: the committee's largest force spread (into the record, for state.csv), the untrusted
    frames, and UntrustedStop when the run should end."""

    def __init__(self, settings: TrustSettings, atomic_numbers, interval_steps: int, timestep_fs: float) -> None:
        self.settings = settings
        self.interval_steps = int(interval_steps)
        self.timestep_fs = float(timestep_fs)
        self.atomic_numbers = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
        self.module, self.members = None, None
        if settings.members() is not None:
            from ..potentials import get_potential

            self.members = [get_potential(m) for m in settings.members()]
            for member in self.members:
                member.check_atoms(self.atomic_numbers, where="the run's molecule")
        else:
            self.module, meta = load_exported(settings.committee)
            if not meta.get("committee"):
                raise InputError(f"{settings.committee}: not a committee file (export one with `openmlff export "
                                 "--committee CKPT ...`, or name two or more models)")
            check_model_atoms(settings.committee, meta, atomic_numbers, structure_name="the run's molecule")
        self.steps: list[int] = []
        self.max_sigma: list[float] = []
        self.untrusted: list[tuple[int, np.ndarray, np.ndarray]] = []  # (step, positions Å, sigma per atom)
        self.stop_step: int | None = None

    def sigma(self, positions_nm: np.ndarray) -> np.ndarray:
        """(n_atoms,) members' force spread in kcal/mol/Å."""
        if self.members is not None:
            frame = np.asarray(positions_nm, dtype=np.float64)[None] * NM_IN_ANGSTROM
            forces = np.stack([m.energies_and_forces(self.atomic_numbers, frame)[1][0] for m in self.members])  # eV/Å
            spread = np.sqrt(((forces - forces.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0))
            return spread * ev_to("kcal/mol")
        pos = torch.as_tensor(np.asarray(positions_nm, dtype=np.float64))
        return self.module.uncertainty(pos).numpy() * _KJ_NM_TO_KCAL_A

    def annotate(self, record: StepRecord) -> None:
        """Set record.max_force_uncertainty (once per record) so that state.csv can write it."""
        if record.force_uncertainty_kcal_per_mol_per_A is None:
            record.force_uncertainty_kcal_per_mol_per_A = self.sigma(record.positions_nm)

    def write(self, record: StepRecord) -> None:
        self.annotate(record)
        sigma = record.force_uncertainty_kcal_per_mol_per_A
        if self.steps and record.step <= self.steps[-1]:
            return  # already seen (step 0 reported twice, or a replay)
        self.steps.append(int(record.step))
        self.max_sigma.append(float(sigma.max()))
        threshold = self.settings.threshold_kcal_per_mol_per_A
        if threshold is not None and sigma.max() > threshold:
            self.untrusted.append((int(record.step), record.positions_angstrom.copy(), sigma.copy()))
            if self.settings.stop_when_untrusted:
                self.stop_step = int(record.step)
                raise UntrustedStop(int(record.step))

    # -- persistence ------------------------------------------------------------------------------

    def save(self, run_dir: Path) -> None:
        """The trust state, atomically (with each checkpoint and at the end); untrusted frames beside it."""
        arrays = {"steps": np.asarray(self.steps, dtype=np.int64), "max_sigma": np.asarray(self.max_sigma)}
        atomic_write_stream(RunDirectory(run_dir).trust_state, lambda fh: np.savez(fh, **arrays))
        if self.untrusted:
            frames = {"steps": np.asarray([u[0] for u in self.untrusted], dtype=np.int64),
                      "time_ps": np.asarray([u[0] * self.timestep_fs * FS_IN_PS for u in self.untrusted]),
                      "positions_angstrom": np.stack([u[1] for u in self.untrusted]),
                      "force_uncertainty_kcal_per_mol_per_A": np.stack([u[2] for u in self.untrusted])}
            atomic_write_stream(RunDirectory(run_dir).untrusted_frames, lambda fh: np.savez(fh, **frames))

    def restore(self, run_dir: Path, up_to_step: int) -> None:
        """Read the saved state, keeping what happened at or before `up_to_step` (the checkpoint's)."""
        state_path, frames_path = RunDirectory(run_dir).trust_state, RunDirectory(run_dir).untrusted_frames
        if state_path.is_file():
            with np.load(state_path) as data:
                keep = data["steps"] <= up_to_step
                self.steps, self.max_sigma = data["steps"][keep].tolist(), data["max_sigma"][keep].tolist()
        if frames_path.is_file():
            with np.load(frames_path) as data:
                self.untrusted = [(int(s), p, u) for s, p, u in zip(data["steps"], data["positions_angstrom"],
                                                                    data["force_uncertainty_kcal_per_mol_per_A"])
                                  if s <= up_to_step]

    def summary(self) -> dict:
        """The summary's trust fields."""
        first = self.untrusted[0][0] if self.untrusted else None
        return {
            "max_force_uncertainty_kcal_per_mol_per_A": max(self.max_sigma) if self.max_sigma else None,
            "first_untrusted_time_ps": None if first is None else first * self.timestep_fs * FS_IN_PS,
            "stopped_untrusted": self.stop_step is not None,
            "untrusted_frames": None if not self.untrusted else {
                "file": UNTRUSTED_FRAMES_FILE, "n_frames": len(self.untrusted),
                "threshold_kcal_per_mol_per_A": self.settings.threshold_kcal_per_mol_per_A},
        }
