"""A committee's force uncertainty against its force error: does the spread of the members rank the error?

For a committee file (openmlff.model_file.writer.export_committee) on labelled frames: per atom and frame the
members' force spread sigma_fi = sqrt(mean_k |F_fik - mean_k F_fik|^2) and the committee mean's
error norm |dF_fi| = |F_fi - F_fi^ref|, both in the force unit (kcal/mol/Å by default). Reported:

  per frame      mean and max sigma, against the frame's force MAE and max error: Spearman rho
                 (scipy.stats.spearmanr); a good uncertainty has rho near 1
  per atom       mean sigma over frames beside the mean error norm
  calibration    the (frame, atom) pairs in n_bins quantile bins of sigma: per bin the RMS sigma and the
                 RMS error norm; a calibrated committee lies on y = x (members that agree more than they
                 are right lie above it: overconfident)
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..core import units
from ..data.dataset import Dataset
from ..core.errors import InputError
from ..model_file.reader import load_exported
from ..core.atomic_io import jsonable
from .force_metrics import DEFAULT_FORCE_UNIT
from .evaluation import predict_batches

DEFAULT_BINS = 10


def committee_spread(model_path, positions_angstrom, batch_size: int = 32, force_unit: str = DEFAULT_FORCE_UNIT):
    """(n_frames, n_atoms) members' force spread of a committee file at positions in Å, in `force_unit`."""
    import torch

    module, meta = load_exported(model_path)
    if not meta.get("committee"):
        raise InputError(f"{model_path}: not a committee (export one with `openmlff export --committee CKPT ...`)")
    R = np.asarray(positions_angstrom, dtype=np.float64)
    factor = units.force_from_ev_per_angstrom(force_unit) / (units.EV_IN_KJ_PER_MOL * units.NM_IN_ANGSTROM)
    out = []
    for start in range(0, len(R), batch_size):
        pos = torch.as_tensor(R[start:start + batch_size] / units.NM_IN_ANGSTROM)
        out.append(module.frame_uncertainties(pos).numpy() * factor)
    return np.concatenate(out)


def uncertainty_report(model_path, dataset: Dataset, batch_size: int = 32, force_unit: str = DEFAULT_FORCE_UNIT,
                       n_bins: int = DEFAULT_BINS) -> dict:
    """The JSON-ready uncertainty section of the module docstring for a committee on `dataset`'s frames."""
    if not dataset.has_labels:
        raise InputError(f"{dataset.source}: the dataset has no forces to compare the uncertainty with")
    sigma = committee_spread(model_path, dataset.R, batch_size, force_unit)
    factor = units.force_from_ev_per_angstrom(force_unit)
    d_f = (np.concatenate([f for _, _, f in predict_batches(model_path, dataset, batch_size)]) - dataset.F) * factor
    error = np.linalg.norm(d_f, axis=-1)
    frame_mae = np.abs(d_f).mean(axis=(1, 2))
    return jsonable({
        "units": {"uncertainty": force_unit, "error": force_unit},
        "definition": "sigma_fi = sqrt(mean_k |F_fik - mean_k F_fik|^2), the spread of the committee members' forces; "
                      "error = |F_fi - F_fi^ref| of the committee mean",
        "frames": {"mean_uncertainty": sigma.mean(1), "max_uncertainty": sigma.max(1), "force_mae": frame_mae,
                   "max_error": error.max(1)},
        "atoms": {"mean_uncertainty": sigma.mean(0), "mean_error": error.mean(0)},
        "spearman": {"frame_mean_uncertainty_vs_force_mae": _rho(sigma.mean(1), frame_mae),
                     "frame_max_uncertainty_vs_max_error": _rho(sigma.max(1), error.max(1)),
                     "atom_uncertainty_vs_error": _rho(sigma.ravel(), error.ravel())},
        "calibration": calibration_curve(sigma.ravel(), error.ravel(), n_bins),
    })


def calibration_curve(sigma, error, n_bins: int = DEFAULT_BINS) -> dict:
    """Quantile bins of sigma: per bin the count, RMS sigma and RMS error (the module docstring)."""
    sigma, error = np.asarray(sigma, dtype=np.float64), np.asarray(error, dtype=np.float64)
    if sigma.shape != error.shape or sigma.size < n_bins:
        raise InputError(f"calibration needs as many uncertainties as errors, at least {n_bins}")
    edges = np.quantile(sigma, np.linspace(0, 1, n_bins + 1))
    which = np.clip(np.searchsorted(edges, sigma, side="right") - 1, 0, n_bins - 1)
    rms = lambda v: float(np.sqrt(np.mean(v ** 2))) if v.size else float("nan")  # noqa: E731
    return {"bins": n_bins, "count": [int((which == b).sum()) for b in range(n_bins)],
            "rms_uncertainty": [rms(sigma[which == b]) for b in range(n_bins)],
            "rms_error": [rms(error[which == b]) for b in range(n_bins)]}


def _rho(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)
