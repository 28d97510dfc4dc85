"""Replica batches of a campaign: which runs share one OpenMM Context (md.replicas_per_context), planned once.

A batch is runs of one model, one temperature and one molecule (frames of the starts' dataset, or seeds of one
structure), run by openmlff.md.run_replicas in DIR/batches/<batch_id>/ while each run keeps its own
DIR/runs/<run_id>/: `campaign status`, `analyze` and `correlate` see ordinary runs.

The plan is written to DIR/batches.json when runs are first batched and is never changed: a batch's checkpoint
holds all its members, so it resumes with the same ones. A later session (other workers, a grown grid, another
replicas_per_context) batches only runs that are neither planned nor started alone.

Batch size: md.replicas_per_context = 1 runs every run alone; N > 1 makes batches of N; unset, AUTO_REPLICAS where
benchmarks/replicas.py measured batching faster (see `auto_replicas`), else 1. Either way a batch has at most
ceil(runs to plan / workers) members, so no worker idles for want of a task. Runs with a [trust] committee run
alone (the committee is evaluated per run by run_simulation).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..core.atomic_io import atomic_write_json
from ..core.errors import InputError
from .spec import CampaignSpec, RunSpec

BATCHES_FILE = "batches.json"
BATCHES_FOLDER = "batches"

#: Copies per Context where batching measured faster (benchmarks/replicas.py, untrained models of the default CPU
#: size, 1 thread, CPU platform, Intel Xeon, 2026-12-03): replica-steps/s at 8 copies against one lone Context on
#: aspirin (21 atoms) ET 1.19-1.43x, ViSNet 1.44x, NequIP 2.08x; run_replicas of 8 copies against 8 run_simulation
#: runs (ET, monitor, reports and set-up included) 1.25x.
AUTO_REPLICAS = 8
#: The largest molecule batching was measured faster for. Ac-Ala3-NHMe (42 atoms, ET) gained nothing (0.96-1.05x at
#: 2-8 copies) and chignolin (166) lost from 8 copies on (ET 0.64x, ViSNet 1.18x, NequIP 1.03x; at 32: 0.53-0.77x),
#: so unset replicas_per_context runs larger molecules alone.
AUTO_MAX_ATOMS = 21


@dataclass(frozen=True)
class BatchSpec:
    """Runs that share one Context: its id (its folder under DIR/batches/) and its members, in the plan's order."""

    batch_id: str
    runs: tuple[RunSpec, ...]


def auto_replicas(platform: str, backend: str, n_atoms: int) -> int:
    """Copies per Context when replicas_per_context is unset: AUTO_REPLICAS where measured faster, else 1 (measured
    only for the CPU platform with TorchForce: elsewhere, CUDA included, runs go alone until it is measured)."""
    if platform == "CPU" and backend == "torchforce" and n_atoms <= AUTO_MAX_ATOMS:
        return AUTO_REPLICAS
    return 1


def plan_tasks(directory: Path, spec: CampaignSpec, to_do: list[RunSpec], workers: int, started_alone,
               n_atoms, platform: str) -> list[RunSpec | BatchSpec]:
    """The tasks for `to_do`: the recorded batches with a member to do, then new batches, then runs alone.

    started_alone(run) tells whether a run already has files of its own (it then stays alone); n_atoms(run) the
    atoms of its molecule (None when its start cannot be read: it goes alone); platform: the OpenMM platform the
    runs will use. New batches are recorded in DIR/batches.json before this returns.
    """
    plan = read_plan(directory)
    planned = {run_id: batch_id for batch_id, members in plan.items() for run_id in members}
    by_id = {run.run_id: run for run in spec.expand()}
    for batch_id, members in plan.items():
        missing = [m for m in members if m not in by_id]
        if missing:
            raise InputError(f"{directory / BATCHES_FILE}: batch {batch_id} names run {missing[0]}, which the "
                             "campaign's spec does not have")
    wanted = {run.run_id for run in to_do}
    tasks: list[RunSpec | BatchSpec] = [BatchSpec(batch_id, tuple(by_id[m] for m in members))
                                        for batch_id, members in plan.items() if wanted & set(members)]
    free = [run for run in to_do if run.run_id not in planned]
    groups: dict[tuple, list[RunSpec]] = {}
    alone: list[RunSpec] = []
    for run in free:
        size = _size(spec, run, n_atoms, platform)
        if size > 1 and not started_alone(run):
            groups.setdefault(_group_key(run) + (size,), []).append(run)
        else:
            alone.append(run)
    new = {}
    cap = max(1, math.ceil(len(free) / max(1, workers)))
    for key, runs in groups.items():
        size = min(key[-1], cap)
        for first in range(0, len(runs), size):
            chunk = runs[first:first + size]
            if len(chunk) == 1:
                alone.append(chunk[0])
                continue
            batch_id = f"batch{len(plan) + len(new):04d}"
            new[batch_id] = [run.run_id for run in chunk]
            tasks.append(BatchSpec(batch_id, tuple(chunk)))
    if new:
        atomic_write_json(directory / BATCHES_FILE, {"batches": {**plan, **new}})
    return tasks + alone


def read_plan(directory: Path) -> dict[str, list[str]]:
    """batch id -> member run ids, from DIR/batches.json ({} without one)."""
    path = Path(directory) / BATCHES_FILE
    if not path.is_file():
        return {}
    try:
        batches = json.loads(path.read_text())["batches"]
        return {str(k): [str(m) for m in v] for k, v in batches.items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: expected {{\"batches\": {{batch id: [run ids]}}}} ({type(exc).__name__}: {exc})"
                         ) from None


def batch_dir(directory: Path, batch_id: str) -> Path:
    return Path(directory) / BATCHES_FOLDER / batch_id


def _size(spec: CampaignSpec, run: RunSpec, n_atoms, platform: str) -> int:
    if run.trust is not None or any(run.md.get(k) is not None for k in ("solvate_padding_nm", "pressure_bar")):
        return 1  # replicas are molecules in vacuum: committees, solvated and NPT runs go alone
    if not _batchable(run.model_path if isinstance(run.model_path, str) else ""):
        return 1  # only openmlff's exported models have the batched `energies` replicas call
    if spec.replicas_per_context is not None:
        return spec.replicas_per_context
    backend = run.md.get("backend", "torchforce")
    if auto_replicas(platform, backend, 0) == 1:  # not batched at any size: leave the start unread
        return 1
    atoms = n_atoms(run)
    return 1 if atoms is None else auto_replicas(platform, backend, atoms)


def _group_key(run: RunSpec) -> tuple:
    """Runs with the same key may share a Context: one model, temperature and molecule (one dataset, or one
    structure)."""
    molecule = ("data", run.data.data) if run.data is not None else ("structure", run.structure)
    return (run.model, run.temperature_K) + molecule


@functools.lru_cache(maxsize=64)
def _batchable(model: str) -> bool:
    """Whether `model` is a file with openmlff's metadata (a batched `energies`): models of other codes go alone."""
    from ..model_file.reader import ModelFileError, load_torchscript
    from ..potentials.model_ref import ModelRef

    if not model or not ModelRef(model).is_file() or not Path(model).is_file():
        return False
    try:
        return bool(load_torchscript(model)[1])
    except ModelFileError:
        return False
