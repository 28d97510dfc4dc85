"""One campaign run, as executed in a worker process (local pool or Dask worker).

`execute_run` takes the run's lock (never two processes on one run, even when a killed campaign's Dask tasks
still go), logs the attempt, builds the start and the bond reference, and calls openmlff.md.run_simulation in
the run's directory (resuming, or returning a finished run's summary). Any exception goes to error.json with its
traceback and is returned as a failed outcome, so one bad run does not stop the others. `execute_batch` does the
same for a replica batch (openmlff.campaign.batches) through openmlff.md.run_replicas, which takes every
member's lock and the batch's.

This module imports OpenMM and torch only inside execute_run and execute_batch, after OPENMM_CPU_THREADS is set,
so the CPU platform of each worker uses as many threads as the run is given.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import traceback
from pathlib import Path

import numpy as np

from ..core.atomic_io import atomic_write_json
from ..core.errors import InputError, describe_os_error
from .batches import BatchSpec
from .spec import DatasetFrames, RunSpec
from .state import (
    ERROR_FILE, FAILED, FINISHED_COLLAPSED, FINISHED_STABLE, INTERRUPTED, RUNNING, append_attempt, finished_state,
)


def _set_cpu_threads(run: RunSpec, torch_threads: int | None) -> None:
    """OPENMM_CPU_THREADS for this process: set before OpenMM is imported."""
    threads = run.md.get("torch_threads") or torch_threads
    if threads is not None:
        os.environ.setdefault("OPENMM_CPU_THREADS", str(int(threads)))


def execute_run(run: RunSpec, run_dir: str, torch_threads: int | None = 1) -> dict:
    """Run (or resume) one campaign run in `run_dir`; returns {'run_id', 'state', 'summary' | 'error'}, never raises."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _set_cpu_threads(run, torch_threads)
    from ..md.rundir import RunBusyError, RunDirectory  # imports OpenMM: after OPENMM_CPU_THREADS is set

    run_files = RunDirectory(run_dir)
    try:
        lock = run_files.lock().acquire()
    except RunBusyError as exc:  # another process (an orphan of a killed campaign, a second campaign) runs it
        return {"run_id": run.run_id, "state": RUNNING, "error": str(exc)}
    try:
        if finished_state(run_dir, run.steps) is not None:
            return {"run_id": run.run_id, "state": finished_state(run_dir), "summary": run_files.read_summary()}
        try:
            (run_dir / ERROR_FILE).unlink(missing_ok=True)
            append_attempt(run_dir, {"event": "start", "run_id": run.run_id,
                                     "new_run": not run_files.run_json.is_file(),
                                     "resume_from_step": run_files.checkpoint_step()})
            from ..md.runner import run_simulation

            z, positions, topology, reference = start_inputs(run)
            summary = run_simulation(run.model_path, z, positions, run_dir, run.simulation_config(torch_threads),
                                     topology=topology, reference_positions_angstrom=reference, progress=False,
                                     trust=run.trust_settings())
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, none stops the campaign
            if machine_fault(exc):
                return _interrupted([run], [run_dir], exc)[0]
            error = record_failure(run_dir, run.run_id, exc, traceback.format_exc())
            append_attempt(run_dir, {"event": "failed", "error": error["message"][:500]})
            return {"run_id": run.run_id, "state": FAILED, "error": f"{error['error_type']}: {error['message']}"}
        return _finished(run, run_dir, summary)
    finally:
        lock.release()


def execute_batch(batch: BatchSpec, batch_dir: str, run_dirs: list[str], torch_threads: int | None = 1) -> list[dict]:
    """Run (or resume) a batch of campaign runs in one Context (openmlff.md.run_replicas in `batch_dir`, each run in
    its run directory); one outcome per run as execute_run's, never raises. A failure is every member's."""
    runs, run_dirs = batch.runs, [Path(d) for d in run_dirs]
    _set_cpu_threads(runs[0], torch_threads)
    from ..core.locks import is_locked
    from ..md.rundir import RunBusyError, RunDirectory  # imports OpenMM: after OPENMM_CPU_THREADS is set

    def outcomes(state: str, **extra) -> list[dict]:
        return [{"run_id": run.run_id, "state": state, **extra} for run in runs]

    if any(is_locked(d) for d in run_dirs) or is_locked(Path(batch_dir)):
        return outcomes(RUNNING, error=f"{batch_dir}: another process runs this batch")
    if all(finished_state(d, run.steps) is not None for run, d in zip(runs, run_dirs)):
        return [{"run_id": run.run_id, "state": finished_state(d), "summary": RunDirectory(d).read_summary()}
                for run, d in zip(runs, run_dirs)]
    try:
        for run, d in zip(runs, run_dirs):
            d.mkdir(parents=True, exist_ok=True)
            (d / ERROR_FILE).unlink(missing_ok=True)
            append_attempt(d, {"event": "start", "run_id": run.run_id, "batch": batch.batch_id,
                               "new_run": not RunDirectory(d).run_json.is_file()})
        from ..md.replicas import run_replicas

        inputs = [start_inputs(run) for run in runs]
        z, _, topology, reference = inputs[0]
        for run, (z_k, _, _, reference_k) in zip(runs, inputs):
            if not np.array_equal(z_k, z) or not _same_array(reference_k, reference):
                raise InputError(f"batch {batch.batch_id}: run {run.run_id} is not the molecule (or bond reference) "
                                 f"of {runs[0].run_id}; batches.json may not join them")
        summaries = run_replicas(runs[0].model_path, z, np.stack([p for _, p, _, _ in inputs]), batch_dir,
                                 runs[0].simulation_config(torch_threads), seeds=[run.seed for run in runs],
                                 run_dirs=run_dirs, topology=topology, reference_positions_angstrom=reference,
                                 progress=False)
    except RunBusyError as exc:
        return outcomes(RUNNING, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, none stops the campaign
        if machine_fault(exc):
            return _interrupted(runs, run_dirs, exc)
        trace = traceback.format_exc()
        for run, d in zip(runs, run_dirs):
            error = record_failure(d, run.run_id, exc, trace)
            append_attempt(d, {"event": "failed", "batch": batch.batch_id, "error": error["message"][:500]})
        return outcomes(FAILED, error=f"{type(exc).__name__}: {exc}")
    return [_finished(run, d, summary, batch=batch.batch_id) for run, d, summary in zip(runs, run_dirs, summaries)]


def _finished(run: RunSpec, run_dir: Path, summary, **extra) -> dict:
    """The outcome of a run that ended (stable or collapsed), with its line in attempts.jsonl."""
    state = FINISHED_COLLAPSED if summary.collapsed else FINISHED_STABLE
    append_attempt(run_dir, {"event": "finished", **extra, "state": state, "steps_completed": summary.steps_completed,
                             "steps_this_session": summary.steps_this_session})
    return {"run_id": run.run_id, "state": state, "summary": summary}


#: OS errors of the machine, not of the run (a full disk, a spent quota): the run is left where its last checkpoint
#: is, as a killed run would be, and the same `campaign run` resumes it once there is room; nothing to retry by hand.
MACHINE_FAULTS = (errno.ENOSPC, errno.EDQUOT)


def machine_fault(exc: BaseException) -> bool:
    """Whether `exc` is a machine fault (MACHINE_FAULTS), not a fault of the run's inputs or code."""
    return isinstance(exc, OSError) and exc.errno in MACHINE_FAULTS


def _interrupted(runs, run_dirs, exc: OSError) -> list[dict]:
    """The outcomes of runs stopped by a machine fault: interrupted (resumable), the error naming the file."""
    message = describe_os_error(exc)
    for d in run_dirs:
        try:
            append_attempt(d, {"event": "interrupted", "error": message[:500]})
        except OSError:
            pass  # the same full disk: the attempt's start line stays the last, which reads as interrupted too
    return [{"run_id": run.run_id, "state": INTERRUPTED, "error": message} for run in runs]


def _same_array(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def record_failure(run_dir, run_id: str, exc: BaseException, trace: str) -> dict:
    """Write error.json (type, message, traceback, where) for a failed run; returns what was written."""
    error = {"run_id": run_id, "error_type": type(exc).__name__, "message": str(exc) or repr(exc),
             "traceback": trace, "host": socket.gethostname(), "pid": os.getpid()}
    atomic_write_json(Path(run_dir) / ERROR_FILE, error)
    return error


def start_inputs(run: RunSpec):
    """(atomic numbers, starting positions in Å, topology or None, reference frames in Å or None) of a run.

    Reference: the given frames, by default the starts' dataset (dataset starts) or the starting structure (also
    reference = "start"); at most openmlff.md.start.MAX_REFERENCE_FRAMES of them, evenly strided.
    """
    from ..md.start import reference_frames

    if run.frame is not None:
        dataset = load_frames_dataset(run.data)
        if not 0 <= run.frame < dataset.n_frames:
            raise InputError(f"{run.data.data}: frame {run.frame} does not exist (the dataset has "
                             f"{dataset.n_frames} frames, 0-based)")
        z, positions, topology = dataset.z, dataset.R[run.frame], None
        reference = dataset.R if run.reference is None else None
    else:
        from ..structures import load_structure

        structure = load_structure(run.structure)
        z, positions, topology = structure.atomic_numbers, structure.positions_angstrom, structure.topology
        reference = None
    if isinstance(run.reference, DatasetFrames):
        ref_data = load_frames_dataset(run.reference)
        if not np.array_equal(ref_data.z, z):
            raise InputError(f"{run.reference.data}: the reference data's atoms ({ref_data.n_atoms}) are not the "
                             f"start's atoms ({len(z)}) in the same order")
        frames = run.reference.frames
        reference = ref_data.R if frames is None else ref_data.R[np.asarray(frames, dtype=np.int64)]
    if reference is not None:
        reference = reference_frames(reference)
    return z, positions, topology, reference


def load_frames_dataset(frames: DatasetFrames):
    """The dataset of `frames` (cached per process while the file is unchanged: a Dask worker outlives a campaign
    call, and a data file may be fixed between two), checked against the split's data fingerprint."""
    stat = os.stat(frames.data)
    return _load_frames_dataset(frames, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load_frames_dataset(frames: DatasetFrames, mtime_ns: int, size: int):
    from ..data import load_dataset
    from ..data.splits import check_data_of_split

    dataset = load_dataset(frames.data, energy_unit=frames.energy_unit, length_unit=frames.length_unit)
    check_data_of_split(dataset, frames.checkpoint, frames.data_fingerprint)
    return dataset
