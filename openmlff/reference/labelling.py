"""Batch labelling: energies and forces of many conformations with a reference method.

Frames are cut into chunks that worker processes compute in parallel (one thread each, so
`n_workers` matches the cores used). Each finished chunk is written atomically to
`out_dir/chunk_00000.npz`, ... next to `manifest.json`, which records what is being labelled.
A killed run started again with the same input and directory skips the finished chunks, so it
loses at most the chunks that were in flight. A frame the method cannot compute is recorded
as failed, with the error class and message, and the other frames go on.

Workers build their own method from its name ('gfn2-xtb', 'ase:module:Class'): live
calculators are not sent between processes unless a ReferenceMethod object is passed.
Workers are spawned (not forked, which is unsafe once OpenMP has started threads), so a script
that calls label_conformations with n_workers > 1 needs the usual `if __name__ == "__main__":`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..core.atomic_io import atomic_write, atomic_write_json
from ..core.config import check, setting
from ..data.dataset import Dataset
from ..core.errors import InputError, StateError
from ..core.locks import FolderLock
from ..core.processes import die_with_parent
from ..core.resume import check_resumable
from .base import ReferenceMethod, ReferenceMethodError, get_reference_method

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "openmlff-labelling-1"
#: Manifest fields that must agree for a directory to be resumed.
_RESUME_KEYS = ("format", "method", "n_frames", "n_atoms", "chunk_size", "charge", "multiplicity",
                "input_sha256")


def chunk_path(out_dir: Path, chunk_index: int) -> Path:
    """File of chunk `chunk_index` in a labelling directory."""
    return Path(out_dir) / f"chunk_{chunk_index:05d}.npz"


@dataclass
class FailedFrame:
    """A conformation the reference method could not label: input index, error class, message."""

    index: int
    error: str
    message: str


@dataclass
class LabellingResult:
    """Outcome of label_conformations.

    dataset: the successfully labelled frames (None if every frame failed);
    frame_indices: for each dataset frame, its index in the input; failures: the frames that failed;
    chunks_computed / chunks_reused: chunks computed in this call / found finished on disk.
    """

    dataset: Dataset | None
    frame_indices: np.ndarray
    failures: list[FailedFrame]
    out_dir: Path
    chunks_computed: int = 0
    chunks_reused: int = 0
    manifest: dict = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    @property
    def n_labelled(self) -> int:
        return int(self.frame_indices.size)


@dataclass
class LabellingConfig:
    """How frames are labelled (`openmlff data label`'s options): the molecule's charge and multiplicity, and the
    chunks (a killed run loses at most one) shared out to worker processes."""

    charge: int = setting(0, "net charge in e")
    multiplicity: int = setting(1, "spin multiplicity")
    chunk_size: int = setting(50, "frames per chunk (a killed run loses at most one)")
    n_workers: int = setting(2, "processes (1: in this process)", aliases=("--workers",))

    def __post_init__(self) -> None:
        check(self, self.chunk_size >= 1, "chunk_size", f"must be >= 1, got {self.chunk_size}")
        check(self, self.n_workers >= 1, "n_workers", f"must be >= 1, got {self.n_workers}")
        check(self, self.multiplicity >= 1, "multiplicity", f"must be >= 1, got {self.multiplicity}")


def label_conformations(method: str | ReferenceMethod, atomic_numbers, positions, out_dir,
                        config: LabellingConfig | None = None, *, progress: bool = True, name: str = "labelled",
                        **settings) -> LabellingResult:
    """Label conformations (n_frames, n_atoms, 3) in Å with `method`; results in eV and eV/Å.

    method: a registry name ('gfn2-xtb', 'gfn1-xtb', 'ase:module:Class') or a picklable
    ReferenceMethod. Chunks of config.chunk_size frames go to config.n_workers processes (1 = in this
    process) and land in `out_dir`; finished chunks of an earlier call with the same input are
    reused. `settings` (LabellingConfig's fields) override `config`. Returns the labelled frames as a Dataset
    plus the failed frames with their reasons.
    """
    cfg = LabellingConfig(**settings) if config is None else replace(config, **settings)
    chunk_size, n_workers, charge, multiplicity = cfg.chunk_size, cfg.n_workers, cfg.charge, cfg.multiplicity
    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    R = np.asarray(positions, dtype=np.float64)
    if R.ndim == 2:
        R = R[None]
    if R.ndim != 3 or R.shape[1:] != (z.size, 3):
        raise InputError(f"positions have shape {R.shape}, expected (n_frames, {z.size}, 3) for {z.size} atoms")
    method_obj = get_reference_method(method)
    method_spec = method if isinstance(method, str) else method_obj
    if n_workers > 1 and not isinstance(method_spec, str):
        _check_picklable(method_obj)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": MANIFEST_FORMAT, "method": method_obj.name, "level_of_theory": method_obj.level_of_theory,
        "n_frames": int(R.shape[0]), "n_atoms": int(z.size), "chunk_size": int(chunk_size),
        "charge": int(charge), "multiplicity": int(multiplicity), "input_sha256": _input_sha256(z, R),
        "n_chunks": -(-R.shape[0] // chunk_size), "units": {"positions": "Å", "energy": "eV", "forces": "eV/Å"},
    }
    with FolderLock(out_dir, "labelling folder (`openmlff data label`)"):  # one labeller per folder
        _write_or_check_manifest(out_dir, manifest)

        chunks = [np.arange(start, min(start + chunk_size, R.shape[0])) for start in range(0, R.shape[0], chunk_size)]
        done = {c for c, idx in enumerate(chunks) if _finished_chunk(out_dir, c, idx) is not None}
        pending = [c for c in range(len(chunks)) if c not in done]

        from tqdm.auto import tqdm

        bar = tqdm(total=R.shape[0], initial=sum(chunks[c].size for c in done), unit="frame",
                   desc=f"labelling with {method_obj.name}", disable=not progress)
        try:
            jobs = ((c, (method_spec, z, R[chunks[c]], chunks[c], int(charge), int(multiplicity))) for c in pending)
            if n_workers <= 1 or len(pending) <= 1:
                for c, args in jobs:
                    _write_chunk(out_dir, c, _label_chunk(*args))
                    bar.update(chunks[c].size)
            else:
                _run_pool(jobs, min(n_workers, len(pending)), out_dir, chunks, bar)
        finally:
            bar.close()
        return _assemble(out_dir, z, R, chunks, manifest, method_obj, name,
                         computed=len(pending), reused=len(done))


def _run_pool(jobs, n_workers: int, out_dir: Path, chunks, bar) -> None:
    """Compute chunks in spawned single-threaded workers, writing each as soon as it is done."""
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(_label_chunk, *args): c for c, args in jobs}
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in finished:
                c = futures.pop(fut)
                _write_chunk(out_dir, c, fut.result())
                bar.update(chunks[c].size)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(parent_pid: int) -> None:
    """One thread per worker: the pool, not OpenMP inside each worker, uses the cores; dies with its parent."""
    die_with_parent(parent_pid)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ.setdefault("OMP_STACKSIZE", "64M")  # tblite's recommendation for its OpenMP threads
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


_WORKER_METHODS: dict[str, ReferenceMethod] = {}


def _label_chunk(method_spec, z, positions, indices, charge, multiplicity) -> dict:
    """Label one chunk; frames that fail keep NaN labels and their error class and message."""
    if isinstance(method_spec, str):
        method = _WORKER_METHODS.get(method_spec)
        if method is None:
            method = _WORKER_METHODS[method_spec] = get_reference_method(method_spec)
    else:
        method = method_spec
    n = len(indices)
    energies = np.full(n, np.nan)
    forces = np.full((n, z.size, 3), np.nan)
    ok = np.zeros(n, dtype=bool)
    errors = [""] * n
    messages = [""] * n
    for k in range(n):
        try:
            energies[k], forces[k] = method.compute(z, positions[k], charge, multiplicity)
            ok[k] = True
        except ReferenceMethodError as exc:
            errors[k], messages[k] = type(exc).__name__, str(exc)
    return {"indices": np.asarray(indices, dtype=np.int64), "E": energies, "F": forces, "ok": ok,
            "errors": np.array(errors, dtype=str), "messages": np.array(messages, dtype=str)}


def _write_chunk(out_dir: Path, chunk_index: int, arrays: dict) -> None:
    """Write a chunk file atomically (a killed run leaves the whole chunk or none of it)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file handle: np.savez would append '.npz' to a name
            np.savez(fh, **arrays)
    atomic_write(chunk_path(out_dir, chunk_index), write)


def _finished_chunk(out_dir: Path, chunk_index: int, expected_indices: np.ndarray) -> dict | None:
    """The arrays of a finished chunk on disk, or None if it is missing or not the expected chunk."""
    path = chunk_path(out_dir, chunk_index)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError):
        return None
    if not np.array_equal(arrays.get("indices"), expected_indices):
        return None
    return arrays


def _assemble(out_dir, z, R, chunks, manifest, method, name, computed, reused) -> LabellingResult:
    """Read every chunk back and build the Dataset of labelled frames and the list of failures."""
    indices, energies, forces, failures = [], [], [], []
    for c, expected in enumerate(chunks):
        arrays = _finished_chunk(out_dir, c, expected)
        if arrays is None:
            raise StateError(f"{chunk_path(out_dir, c)}: chunk missing or unreadable after labelling")
        ok = arrays["ok"]
        indices.append(arrays["indices"][ok])
        energies.append(arrays["E"][ok])
        forces.append(arrays["F"][ok])
        for k in np.flatnonzero(~ok):
            failures.append(FailedFrame(int(arrays["indices"][k]), str(arrays["errors"][k]), str(arrays["messages"][k])))
    frame_indices = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    dataset = None
    if frame_indices.size:
        provenance = {
            **method.provenance(),
            "source_file": str(out_dir), "generated_by": "openmlff.reference.label_conformations",
            "charge": manifest["charge"], "multiplicity": manifest["multiplicity"],
            "frames_requested": manifest["n_frames"], "frames_failed": len(failures),
            "failed_frames": [asdict(f) for f in failures],
            "original_units": manifest["units"],
        }
        dataset = Dataset(z=z.copy(), R=R[frame_indices], E=np.concatenate(energies), F=np.concatenate(forces),
                          name=name, provenance=provenance).validate(str(out_dir))
    return LabellingResult(dataset=dataset, frame_indices=frame_indices, failures=failures, out_dir=out_dir,
                           chunks_computed=computed, chunks_reused=reused, manifest=manifest)


def _input_sha256(z: np.ndarray, R: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(z).tobytes())
    h.update(np.ascontiguousarray(R).tobytes())
    return h.hexdigest()


def _write_or_check_manifest(out_dir: Path, manifest: dict) -> None:
    """Create the manifest, or check that an existing one describes the same labelling job."""
    path = out_dir / MANIFEST_NAME
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: unreadable labelling manifest ({exc}); delete the directory or choose another") from None
        check_resumable({key: old.get(key) for key in _RESUME_KEYS}, {key: manifest[key] for key in _RESUME_KEYS},
                        where=str(path), job="labelling job")
        return
    atomic_write_json(path, manifest)


def _check_picklable(method: ReferenceMethod) -> None:
    try:
        pickle.dumps(method)
    except Exception as exc:  # any pickling failure means the object cannot reach a worker
        raise InputError(
            f"{method!r} cannot be sent to worker processes ({type(exc).__name__}: {exc}); pass its "
            "registry name (e.g. 'ase:module.path:ClassName') or use n_workers=1") from None
