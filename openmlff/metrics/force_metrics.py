"""Force and energy error metrics of a model against reference data (after Wang et al., JCP 159, 035101, 2023).

Inputs are in openmlff's internal units: forces (n_frames, n_atoms, 3) in eV/Å, energies
(n_frames,) in eV, atomic numbers z (n_atoms,). Outputs are in `force_unit` (default kcal/mol/Å,
the unit of the MD17 literature) and `energy_unit` (default kcal/mol); every returned metrics
dict carries a `units` entry naming them.

Definitions (each metric is computed in one place, `_reduce_errors`). With the error vector
dF_fi = F_pred_fi - F_ref_fi of atom i in frame f, its components dF_fia (a = x, y, z), the mass
m_i of atom i in dalton, and a set of frames Φ and atoms A (N = 3 |Φ| |A| components):

    force_mae  = (1/N) Σ_{f∈Φ, i∈A, a} |dF_fia|
    force_rmse = sqrt( (1/N) Σ_{f∈Φ, i∈A, a} dF_fia² )
    force_max  = max_{f∈Φ, i∈A} |dF_fi|                      (largest per-atom error norm)
    fnm_mae    = (1/N) Σ_{f∈Φ, i∈A, a} |dF_fia| / m_i         (FNM: force error normalised by mass,
    fnm_rmse   = sqrt( (1/N) Σ_{f∈Φ, i∈A, a} (dF_fia / m_i)² )  an acceleration error that weighs
    fnm_max    = max_{f∈Φ, i∈A} |dF_fi| / m_i                  light hydrogens up; unit (force_unit)/Da)
    energy_mae = (1/|Φ|) Σ_f |E_pred_f - E_ref_f|,   energy_rmse = sqrt( (1/|Φ|) Σ_f (E_pred_f - E_ref_f)² )
    energy_mae_offset_removed = (1/|Φ|) Σ_f |e_f - mean(e)|, e_f = E_pred_f - E_ref_f (arbitrary energy zeros)

The four scopes only choose Φ and A: global (all frames, all atoms), element-wise (all frames,
the atoms of one element), atom-wise (all frames, one atom) and per-frame (one frame, all atoms).

All of them are computed from running sums by `ForceErrorAccumulator`, so a model can be
evaluated on any number of frames batch by batch in bounded memory; the plain functions
(`global_force_metrics`, ...) are one-batch shortcuts through it.
"""

from __future__ import annotations

import numpy as np

from ..core import elements, units
from ..core.atomic_io import jsonable
from ..core.errors import InputError

FORCE_KEYS = ("force_mae", "force_rmse", "force_max")
FNM_KEYS = ("fnm_mae", "fnm_rmse", "fnm_max")
DEFAULT_FORCE_UNIT = units.REPORT_FORCE_UNIT  # "kcal/mol/Å"
DEFAULT_ENERGY_UNIT = units.REPORT_ENERGY_UNIT  # "kcal/mol"


def metric_units(force_unit: str = DEFAULT_FORCE_UNIT, energy_unit: str = DEFAULT_ENERGY_UNIT) -> dict:
    """Canonical unit names of the metric families: force, FNM ((force)/Da) and energy."""
    energy, sep, length = force_unit.rpartition("/")
    if not sep:
        raise InputError(f"force unit {force_unit!r} must be written ENERGY/LENGTH, e.g. 'kcal/mol/Å'")
    force = f"{units.canonical_energy_unit(energy)}/{units.canonical_length_unit(length)}"
    return {"force": force, "fnm": f"({force})/Da", "energy": units.canonical_energy_unit(energy_unit)}


def _reduce_errors(abs_sum, sq_sum, max_norm, inv_mass, n_frames) -> dict:
    """The six force metrics (internal units, eV/Å and (eV/Å)/Da) of the formulas in the module docstring.

    abs_sum, sq_sum, max_norm, inv_mass have shape (..., n_atoms_in_scope): per atom, the sum of
    |dF_fia| and of dF_fia² over the scope's frames and a, the largest |dF_fi| over those frames,
    and 1/m_i. n_frames is |Φ|. The last axis is reduced: the result has shape (...).
    """
    n_components = 3.0 * n_frames * abs_sum.shape[-1]
    return {
        "force_mae": abs_sum.sum(-1) / n_components,
        "force_rmse": np.sqrt(sq_sum.sum(-1) / n_components),
        "force_max": max_norm.max(-1),
        "fnm_mae": (abs_sum * inv_mass).sum(-1) / n_components,
        "fnm_rmse": np.sqrt((sq_sum * inv_mass**2).sum(-1) / n_components),
        "fnm_max": (max_norm * inv_mass).max(-1),
    }


def _convert(metrics: dict, force_factor: float) -> dict:
    """Force and FNM metrics multiplied by the eV/Å -> force_unit factor (FNM stays per dalton)."""
    return {key: metrics[key] * force_factor for key in FORCE_KEYS + FNM_KEYS}


def _as_frames(array, name: str, n_atoms: int) -> np.ndarray:
    """Forces as a float64 (n_frames, n_atoms, 3) array; a single (n_atoms, 3) frame is accepted."""
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (n_atoms, 3):
        raise InputError(f"{name} has shape {np.shape(array)}, expected (n_frames, {n_atoms}, 3) "
                         f"in eV/Å to match the {n_atoms} atomic numbers in z")
    _check_finite(arr, name)
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        raise InputError(f"{name} has {int(bad.sum())} non-finite values (first at index {first} of this batch)")


class ForceErrorAccumulator:
    """Running sums of force and energy errors over batches of frames of one molecule.

    Memory is bounded: per atom it keeps the sums of |dF| and dF² and the largest |dF|, plus the
    energy error sums and the per-frame metrics (a handful of floats per frame). Metrics are kept
    in eV/Å internally and converted when asked for, so one accumulator can report in any unit.

    >>> acc = ForceErrorAccumulator(z)
    >>> for batch in batches:
    ...     acc.add(model_forces(batch), batch.F, E_pred=model_energies(batch), E_ref=batch.E)
    >>> acc.result()   # JSON-ready dict: global metrics, "elements", "atoms", "frames", "units"
    """

    def __init__(self, z) -> None:
        self.z = np.asarray(z, dtype=np.int64).reshape(-1)
        if self.z.size == 0:
            raise InputError("z (atomic numbers) is empty; expected one atomic number per atom")
        self._inv_mass = 1.0 / elements.masses(self.z)  # 1/Da; raises on unknown atomic numbers
        n_atoms = self.z.size
        self._abs_sum = np.zeros(n_atoms)  # Σ_f Σ_a |dF_fia|, eV/Å
        self._sq_sum = np.zeros(n_atoms)  # Σ_f Σ_a dF_fia², (eV/Å)²
        self._max_norm = np.zeros(n_atoms)  # max_f |dF_fi|, eV/Å
        self._n_frames = 0
        self._has_energies: bool | None = None  # fixed by the first batch
        self._energy_abs_sum = 0.0
        self._energy_sq_sum = 0.0
        self._frame_chunks: list[dict[str, np.ndarray]] = []  # per-frame metrics, internal units

    @property
    def n_atoms(self) -> int:
        return int(self.z.size)

    @property
    def n_frames(self) -> int:
        """Frames added so far."""
        return self._n_frames

    def add(self, F_pred, F_ref, E_pred=None, E_ref=None) -> None:
        """Add a batch: forces (n_frames, n_atoms, 3) in eV/Å, optional energies (n_frames,) in eV.

        Either every batch has energies (both E_pred and E_ref) or none has.
        """
        F_pred = _as_frames(F_pred, "F_pred", self.n_atoms)
        F_ref = _as_frames(F_ref, "F_ref", self.n_atoms)
        if F_pred.shape != F_ref.shape:
            raise InputError(f"F_pred has {F_pred.shape[0]} frames but F_ref has {F_ref.shape[0]}; expected the same frames")
        n = F_pred.shape[0]
        energy_error = self._energy_error(E_pred, E_ref, n)

        error = F_pred - F_ref
        abs_sum = np.abs(error).sum(-1)  # (n, n_atoms)
        sq_sum = (error**2).sum(-1)
        norm = np.sqrt(sq_sum)
        self._abs_sum += abs_sum.sum(0)
        self._sq_sum += sq_sum.sum(0)
        np.maximum(self._max_norm, norm.max(0), out=self._max_norm)
        self._n_frames += n

        chunk = _reduce_errors(abs_sum, sq_sum, norm, self._inv_mass, 1)  # one frame at a time
        if energy_error is not None:
            self._energy_abs_sum += float(np.abs(energy_error).sum())
            self._energy_sq_sum += float((energy_error**2).sum())
            chunk["energy_error"] = energy_error
        self._frame_chunks.append(chunk)

    def _energy_error(self, E_pred, E_ref, n_frames: int) -> np.ndarray | None:
        """E_pred - E_ref in eV for a batch, None without energies; checks the batches agree."""
        has = E_pred is not None
        if has != (E_ref is not None):
            raise InputError(f"{'E_ref' if has else 'E_pred'} is missing: give both E_pred and E_ref (eV) or neither")
        if self._has_energies is None:
            self._has_energies = has
        elif has != self._has_energies:
            raise InputError("energies must be given for every batch or for none; "
                             f"earlier batches had {'' if self._has_energies else 'no '}energies, this one has "
                             f"{'' if has else 'none'}")
        if not has:
            return None
        out = []
        for name, values in (("E_pred", E_pred), ("E_ref", E_ref)):
            arr = np.asarray(values, dtype=np.float64).reshape(-1)
            if arr.size != n_frames:
                raise InputError(f"{name} has {arr.size} values, expected one energy (eV) per frame ({n_frames})")
            _check_finite(arr, name)
            out.append(arr)
        return out[0] - out[1]

    def _require_frames(self) -> None:
        if self._n_frames == 0:
            raise InputError("no frames were added to the ForceErrorAccumulator; call add() first")

    def global_metrics(self, force_unit: str = DEFAULT_FORCE_UNIT, energy_unit: str = DEFAULT_ENERGY_UNIT) -> dict:
        """Global metrics (all frames, all atoms): force_*, fnm_*, energy_mae/rmse (None without energies)."""
        self._require_frames()
        unit_names = metric_units(force_unit, energy_unit)
        reduced = _reduce_errors(self._abs_sum, self._sq_sum, self._max_norm, self._inv_mass, self._n_frames)
        out = {key: float(value) for key, value in _convert(reduced, units.force_from_ev_per_angstrom(force_unit)).items()}
        out["energy_mae"] = out["energy_rmse"] = out["energy_mae_offset_removed"] = None
        if self._has_energies:
            factor = units.ev_to(energy_unit)
            out["energy_mae"] = self._energy_abs_sum / self._n_frames * factor
            out["energy_rmse"] = float(np.sqrt(self._energy_sq_sum / self._n_frames)) * factor
            # A classical force field's (or another level of theory's) energy zero is arbitrary: the MAE
            # after subtracting the mean signed error compares energy differences between frames.
            errors = np.concatenate([chunk["energy_error"] for chunk in self._frame_chunks])
            out["energy_mae_offset_removed"] = float(np.abs(errors - errors.mean()).mean()) * factor
        out.update(n_frames=self._n_frames, n_atoms=self.n_atoms, units=unit_names)
        return out

    def element_metrics(self, force_unit: str = DEFAULT_FORCE_UNIT) -> dict:
        """{symbol: {force_*, fnm_*, n_atoms, units}} over all frames, elements by atomic number."""
        self._require_frames()
        factor = units.force_from_ev_per_angstrom(force_unit)
        unit_names = {k: v for k, v in metric_units(force_unit).items() if k != "energy"}
        out = {}
        for z_value in np.unique(self.z):
            atoms = self.z == z_value
            reduced = _reduce_errors(self._abs_sum[atoms], self._sq_sum[atoms], self._max_norm[atoms],
                                     self._inv_mass[atoms], self._n_frames)
            entry = {key: float(value) for key, value in _convert(reduced, factor).items()}
            entry.update(n_atoms=int(atoms.sum()), units=dict(unit_names))
            out[elements.symbol(int(z_value))] = entry
        return out

    def atom_metrics(self, force_unit: str = DEFAULT_FORCE_UNIT) -> dict:
        """Per-atom metrics over all frames: (n_atoms,) arrays of force_*, fnm_*, with index, z, element."""
        self._require_frames()
        column = (slice(None), None)  # each atom is its own scope: reduce over an axis of length 1
        reduced = _reduce_errors(self._abs_sum[column], self._sq_sum[column], self._max_norm[column],
                                 self._inv_mass[column], self._n_frames)
        out = {"index": np.arange(self.n_atoms), "z": self.z.copy(), "element": elements.symbols(self.z)}
        out.update(_convert(reduced, units.force_from_ev_per_angstrom(force_unit)), n_frames=self._n_frames,
                   units={k: v for k, v in metric_units(force_unit).items() if k != "energy"})
        return out

    def frame_metrics(self, force_unit: str = DEFAULT_FORCE_UNIT, energy_unit: str = DEFAULT_ENERGY_UNIT) -> dict:
        """Per-frame metrics in the order frames were added: (n_frames,) arrays of force_*, fnm_*,
        and energy_error = E_pred - E_ref (signed) when energies were given."""
        self._require_frames()
        joined = {key: np.concatenate([c[key] for c in self._frame_chunks]) for key in self._frame_chunks[0]}
        out = _convert(joined, units.force_from_ev_per_angstrom(force_unit))
        if "energy_error" in joined:
            out["energy_error"] = joined["energy_error"] * units.ev_to(energy_unit)
        out["units"] = metric_units(force_unit, energy_unit)
        return out

    def result(self, force_unit: str = DEFAULT_FORCE_UNIT, energy_unit: str = DEFAULT_ENERGY_UNIT,
               include_frames: bool = True) -> dict:
        """Everything, JSON-ready (plain floats, ints, lists): the global metrics at the top level
        (as `global_metrics`), plus "elements", "atoms" and, unless include_frames is False, "frames"."""
        out = self.global_metrics(force_unit, energy_unit)
        out.update(elements=self.element_metrics(force_unit), atoms=self.atom_metrics(force_unit))
        if include_frames:
            out["frames"] = self.frame_metrics(force_unit, energy_unit)
        return jsonable(out)


def _accumulate(F_pred, F_ref, z, E_pred=None, E_ref=None) -> ForceErrorAccumulator:
    acc = ForceErrorAccumulator(z)
    acc.add(F_pred, F_ref, E_pred=E_pred, E_ref=E_ref)
    return acc


def global_force_metrics(F_pred, F_ref, z, *, E_pred=None, E_ref=None, force_unit: str = DEFAULT_FORCE_UNIT,
                         energy_unit: str = DEFAULT_ENERGY_UNIT) -> dict:
    """Global force_*, fnm_*, energy_* (None without energies), n_frames, n_atoms and units (module docstring) of
    forces (n_frames, n_atoms, 3) in eV/Å and energies (n_frames,) in eV."""
    return _accumulate(F_pred, F_ref, z, E_pred, E_ref).global_metrics(force_unit, energy_unit)


def element_force_metrics(F_pred, F_ref, z, *, force_unit: str = DEFAULT_FORCE_UNIT) -> dict:
    """{symbol: {force_mae, force_rmse, force_max, fnm_mae, fnm_rmse, fnm_max, n_atoms, units}}: the
    global formulas restricted to the atoms of each element."""
    return _accumulate(F_pred, F_ref, z).element_metrics(force_unit)


def atom_force_metrics(F_pred, F_ref, z, *, force_unit: str = DEFAULT_FORCE_UNIT) -> dict:
    """Per-atom (n_atoms,) arrays of force_* and fnm_* over all frames, with index, z, element and units."""
    return _accumulate(F_pred, F_ref, z).atom_metrics(force_unit)


def frame_force_metrics(F_pred, F_ref, z, *, E_pred=None, E_ref=None, force_unit: str = DEFAULT_FORCE_UNIT,
                        energy_unit: str = DEFAULT_ENERGY_UNIT) -> dict:
    """Per-frame (n_frames,) arrays of force_mae/rmse/max and fnm_mae/rmse/max over the frame's atoms,
    and energy_error = E_pred - E_ref when energies are given; plus units."""
    return _accumulate(F_pred, F_ref, z, E_pred, E_ref).frame_metrics(force_unit, energy_unit)
