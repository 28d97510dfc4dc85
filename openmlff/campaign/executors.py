"""Running a campaign: one task per run still to do, in a local process pool or on a Dask cluster.

    run_campaign("campaign.toml")                                     # local pool sized to the machine
    run_campaign("campaign.toml", executor="dask")                    # a Dask LocalCluster on this machine
    run_campaign("campaign.toml", scheduler_address="tcp://head:8786")  # any running Dask cluster

Each task is `worker.execute_run`: it runs openmlff.md.run_simulation in runs/<run_id>/, so a
campaign that is killed and started again resumes every interrupted run from its checkpoint and
never repeats a finished one; a failure is written to that run's error.json and the others go on.
Finished and failed runs are not submitted again (failed ones only with retry_failed=True). Runs
that share one OpenMM Context (md.replicas_per_context; openmlff.campaign.batches plans them once,
in batches.json) are one task, `worker.execute_batch`, resumed the same way from the batch's checkpoint.

Local pool: concurrent.futures.ProcessPoolExecutor (spawned processes), usable cores //
torch_threads_per_run workers. Dask: `distributed.Client(scheduler_address)`; tasks are submitted
with pure=False and collected as they complete. Give each Dask worker process one thread
(threads_per_worker=1, or `--nthreads 1`): a run sets torch's thread count for its whole process.
The campaign directory must be on a file system every worker sees.

Clusters behind SLURM or PBS: dask-jobqueue (`pip install dask-jobqueue`) starts Dask workers as batch jobs.
Keep its cluster object alive in the Python process that runs the campaign and pass
scheduler_address=cluster.scheduler_address (docs/guide.md has a SLURMCluster example: 8 single-thread workers
per job), or start `dask scheduler` and `dask worker tcp://head:8786 --nworkers 8 --nthreads 1` inside batch
jobs yourself and run `openmlff campaign run campaign.toml --scheduler tcp://head:8786`. For GPUs, one worker
per GPU (`processes=1` per GPU job, CUDA_VISIBLE_DEVICES set by the batch system).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
import traceback
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.config import check, check_finite, setting
from ..core.errors import InputError, describe_os_error
from ..core.processes import die_with_parent
from ..core.threads import usable_cpus
from .spec import CampaignSpec, RunSpec
from .state import (
    CAMPAIGN_FILE, FAILED, INTERRUPTED, PENDING, RUN_STATES, RUNNING, CampaignDirectory, campaign_status,
    format_duration, run_state,
)
from .batches import BatchSpec, batch_dir, plan_tasks
from .worker import execute_batch, execute_run, machine_fault, record_failure

EXECUTORS = ("local", "dask")


@dataclass
class CampaignResult:
    """What one `run_campaign` call did: runs submitted, their outcomes by state, and the status after it."""

    directory: Path
    submitted: int
    outcomes: dict[str, int]
    status: dict
    #: why runs were left interrupted by a machine fault (worker.MACHINE_FAULTS: a full disk), one line per run
    stopped: list[str] = field(default_factory=list)


def default_workers(torch_threads_per_run: int = 1) -> int:
    """Runs at a time in the local pool: usable cores // torch threads per run (at least 1)."""
    return max(1, usable_cpus() // max(1, int(torch_threads_per_run)))


def campaign_directory(spec_or_dir, out=None) -> tuple[CampaignSpec | None, CampaignDirectory]:
    """(the spec given, or None for an existing campaign directory; the campaign directory: `out`, by default
    <the spec file's folder>/<spec name>)."""
    if isinstance(spec_or_dir, CampaignSpec):
        spec = spec_or_dir
    else:
        path = Path(spec_or_dir).expanduser()
        if path.is_dir():
            if not (path / CAMPAIGN_FILE).is_file():
                raise FileNotFoundError(f"{path}: a folder without {CAMPAIGN_FILE}; give a campaign spec file "
                                        "(.toml or .json) or an existing campaign directory")
            if out is not None and Path(out).expanduser().resolve() != path.resolve():
                raise InputError(f"{path} is a campaign directory; --out {out} would name another")
            return None, CampaignDirectory(path)
        spec = CampaignSpec.from_file(path)
    if out is None:
        if spec.source is None:
            raise InputError("a CampaignSpec that was not read from a file needs an output directory (out)")
        out = Path(spec.source).parent / spec.name
    return spec, CampaignDirectory(out)


@dataclass
class ExecutionConfig:
    """How a campaign is run (not what it runs: that is the spec). The fields are `openmlff campaign run`'s options;
    changing them between sessions is not a change of the campaign."""

    executor: str | None = setting(None, "local: a process pool on this machine (default); dask: a Dask cluster "
                                         "(default when a scheduler address is given)")
    scheduler_address: str | None = setting(None, "Dask scheduler address, e.g. tcp://head:8786",
                                            aliases=("--scheduler",))
    n_workers: int | None = setting(None, "runs at a time (default: cores // threads per run)", aliases=("--workers",))
    torch_threads_per_run: int = setting(1, "torch and OpenMM CPU threads per run unless md.torch_threads says "
                                            "otherwise", aliases=("--threads-per-run",))
    retry_failed: bool = setting(False, "run failed runs again (resuming them where possible)")
    status_interval_s: float = setting(60.0, "seconds between status lines", aliases=("--status-interval",))

    def __post_init__(self) -> None:
        check_finite(self)
        self.executor = self.executor or ("dask" if self.scheduler_address else "local")
        check(self, self.executor in EXECUTORS, "executor", f"must be one of {list(EXECUTORS)}, got {self.executor!r}")
        check(self, not self.scheduler_address or self.executor == "dask", "scheduler_address",
              "needs executor 'dask'")
        check(self, self.n_workers is None or self.n_workers >= 1, "n_workers",
              f"must be a positive integer, got {self.n_workers}")
        check(self, self.torch_threads_per_run >= 1, "torch_threads_per_run",
              f"must be a positive integer, got {self.torch_threads_per_run}")


def run_campaign(spec_or_dir, out=None, config: ExecutionConfig | None = None, *, progress: bool = True,
                 **settings) -> CampaignResult:
    """Run every run of a campaign that is not done yet; returns when all submitted runs have ended.

    spec_or_dir: a spec file, a CampaignSpec, or an existing campaign directory (its recorded spec).
    out: the campaign directory (see campaign_directory). config: how to run it (ExecutionConfig; 'dask' without a
    scheduler address starts a LocalCluster of n_workers processes); `settings` (its field names) override it.
    progress: a tqdm bar over runs and, every status_interval_s, a status line.
    """
    cfg = ExecutionConfig(**settings) if config is None else replace(config, **settings)
    from ..md.rundir import RunDirectory

    spec, where = campaign_directory(spec_or_dir, out)
    new = not where.exists()
    if new:
        spec.check_models()  # a new campaign with a bad model is refused before anything is written
    where.directory.mkdir(parents=True, exist_ok=True)
    lock = where.lock()
    try:
        spec = where.adopt(spec) if spec is not None else where.spec()
        if not new:  # (a new one was checked above: the models are loaded and probed once)
            spec.check_models()  # before any run starts (after the recorded spec has had its say on changes)
        wanted = (PENDING, INTERRUPTED, RUNNING) + ((FAILED,) if cfg.retry_failed else ())
        to_do = [run for run in spec.expand() if run_state(where.run_dir(run.run_id), spec.steps) in wanted]
        outcomes, stopped = {}, []
        if to_do:
            workers = cfg.n_workers or default_workers(cfg.torch_threads_per_run)
            backend = _DaskBackend(cfg.scheduler_address, workers, len(to_do)) if cfg.executor == "dask" else None
            try:
                tasks = plan_tasks(where.directory, spec, to_do, backend.workers if backend else workers,
                                   started_alone=lambda run: RunDirectory(where.run_dir(run.run_id)).run_json.is_file(),
                                   n_atoms=_atom_counter(), platform=_platform_name(spec))
                if backend is None:
                    backend = _LocalBackend(min(workers, len(tasks)))
                where.record_session({"executor": cfg.executor, "workers": backend.workers,
                                      "scheduler": backend.address,
                                      "runs_submitted": sum(len(_members(t)) for t in tasks),
                                      "batches": sum(isinstance(t, BatchSpec) for t in tasks),
                                      "runs_at_once": _runs_at_once(tasks, backend.workers),
                                      "torch_threads_per_run": cfg.torch_threads_per_run})
                outcomes = _collect(where, spec, tasks, backend, cfg.torch_threads_per_run, progress,
                                    cfg.status_interval_s, stopped)
            finally:
                if backend is not None:
                    backend.close()
    finally:
        lock.release()
    return CampaignResult(where.directory, sum(outcomes.values()), outcomes, campaign_status(where.directory), stopped)


def _collect(where: CampaignDirectory, spec: CampaignSpec, tasks: list, backend, threads: int,
             progress: bool, status_interval_s: float, stopped: list[str]) -> dict[str, int]:
    """Submit every task (a run, or a batch of runs), then take the runs' outcomes as tasks complete; a task that
    raised is recorded as failed for each of its runs. Runs a machine fault stopped add their error to `stopped`."""
    from tqdm.auto import tqdm

    done: queue.Queue = queue.Queue()
    futures = {}
    for task in tasks:
        if isinstance(task, BatchSpec):
            future = backend.submit(task.batch_id, execute_batch, task, str(batch_dir(where.directory, task.batch_id)),
                                    [str(where.run_dir(run.run_id)) for run in task.runs], threads)
        else:
            future = backend.submit(task.run_id, execute_run, task, str(where.run_dir(task.run_id)), threads)
        futures[future] = task
        future.add_done_callback(done.put)
    n_runs = sum(len(_members(t)) for t in tasks)
    n_batches = sum(isinstance(t, BatchSpec) for t in tasks)
    outcomes: Counter = Counter()
    say = tqdm.write if progress else (lambda _msg: None)
    say(f"[campaign {spec.name}] {n_runs} of {len(spec.expand())} runs to do"
        + (f" ({n_runs - len(tasks) + n_batches} of them in {n_batches} replica batches)" if n_batches else "")
        + f", {backend.workers} tasks at a time ({backend.description}); directory {where.directory}")
    next_status = time.monotonic() + status_interval_s
    with tqdm(total=n_runs, unit="run", desc=f"campaign {spec.name}", disable=not progress,
              dynamic_ncols=True) as bar:
        for _ in range(len(futures)):
            while True:
                try:
                    future = done.get(timeout=max(0.1, next_status - time.monotonic()))
                    break
                except queue.Empty:
                    if progress:
                        say(_status_line(where))
                    next_status = time.monotonic() + status_interval_s
            for outcome in _outcomes(future, futures[future], where):
                outcomes[outcome["state"]] += 1
                if outcome["state"] == FAILED:
                    say(f"[campaign {spec.name}] {outcome['run_id']} failed: {outcome['error'].splitlines()[0][:300]}")
                elif outcome["state"] == INTERRUPTED:
                    stopped.append(f"{outcome['run_id']}: {outcome['error']}")
                    say(f"[campaign {spec.name}] {outcome['run_id']} stopped (resumable): {outcome['error'][:300]}")
                bar.update(1)
            bar.set_postfix({state: n for state, n in sorted(outcomes.items())}, refresh=False)
            if progress and time.monotonic() >= next_status:
                say(_status_line(where))
                next_status = time.monotonic() + status_interval_s
    return {state: outcomes[state] for state in RUN_STATES if outcomes[state]}


def _members(task) -> tuple[RunSpec, ...]:
    return task.runs if isinstance(task, BatchSpec) else (task,)


def _outcomes(future, task, where: CampaignDirectory) -> list[dict]:
    """The task's outcomes (one per run); a task that raised (a worker that died, a cancelled task) is written to
    each of its runs' error.json."""
    try:
        result = future.result()
        return result if isinstance(result, list) else [result]
    except BaseException as exc:  # noqa: BLE001 - includes CancelledError; recorded, never re-raised
        trace = "".join(traceback.format_exception(exc))
        if machine_fault(exc):
            return [{"run_id": run.run_id, "state": INTERRUPTED, "error": describe_os_error(exc)}
                    for run in _members(task)]
        out = []
        for run in _members(task):
            record_failure(where.run_dir(run.run_id), run.run_id, exc, "the task did not return (its worker died or "
                           "it was cancelled); the run resumes from its checkpoint with --retry-failed\n" + trace)
            out.append({"run_id": run.run_id, "state": FAILED, "error": f"{type(exc).__name__}: {exc}"})
        return out


def _runs_at_once(tasks: list, workers: int) -> int:
    """Runs going at once while every worker has a task: the largest `workers` tasks' members."""
    sizes = sorted((len(_members(t)) for t in tasks), reverse=True)
    return sum(sizes[:workers])


def _platform_name(spec: CampaignSpec) -> str:
    """The OpenMM platform the runs will use: md.platform, or the one openmlff.md.select_platform picks here."""
    from ..md.platforms import PlatformError, select_platform

    try:
        return select_platform(spec.md.get("platform"))[0].getName()
    except PlatformError:  # not on this host (the workers may have it): the name as given
        return str(spec.md.get("platform"))


def _atom_counter():
    """run -> atoms of its molecule (the starts' dataset, or the structure), one load each; None when the start cannot
    be read or is periodic (the run then goes alone: replicas are molecules in vacuum; a worker records a
    start's error as it would for any run)."""
    from ..structures import load_structure
    from .worker import load_frames_dataset

    counts: dict = {}

    def atoms(run: RunSpec) -> int | None:
        source = run.data.data if run.data is not None else run.structure
        if source not in counts:
            try:
                if run.data is not None:
                    counts[source] = load_frames_dataset(run.data).n_atoms
                else:
                    structure = load_structure(run.structure)
                    periodic = structure.topology.getPeriodicBoxVectors() is not None
                    counts[source] = None if periodic else structure.n_atoms
            except (InputError, OSError):
                counts[source] = None
        return counts[source]

    return atoms


def _status_line(where: CampaignDirectory) -> str:
    status = campaign_status(where.directory)
    counts = ", ".join(f"{state} {n}" for state, n in status["counts"].items() if n)
    return (f"[campaign {status['campaign']} {time.strftime('%H:%M:%S')}] {counts}; "
            f"{100 * status['progress']:.1f}% of steps; time left {format_duration(status['estimated_time_left_s'])}")


class _LocalBackend:
    """A ProcessPoolExecutor of spawned processes (nothing inherited from a parent that loaded torch) that die
    with the campaign process (openmlff.core.processes), so a killed campaign leaves no run going on."""

    address = None
    description = "local process pool"

    def __init__(self, n_workers: int) -> None:
        self.workers = n_workers
        self.pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=die_with_parent, initargs=(os.getpid(),))

    def submit(self, name: str, function, *args):
        return self.pool.submit(function, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _DaskBackend:
    """A distributed.Client on a running scheduler, or on a LocalCluster of single-thread worker processes."""

    def __init__(self, address: str | None, n_workers: int, n_runs: int) -> None:
        from distributed import Client, LocalCluster

        self.cluster = None
        if address:
            self.client = Client(address)
        else:
            self.cluster = LocalCluster(n_workers=min(n_workers, n_runs), threads_per_worker=1, processes=True,
                                        dashboard_address=None)
            self.client = Client(self.cluster)
        self.address = self.client.scheduler.address
        self.workers = sum(self.client.nthreads().values()) or n_workers
        self.description = f"Dask scheduler {self.address}"

    def submit(self, name: str, function, *args):
        return self.client.submit(function, *args, pure=False, key=f"openmlff-{name}-{uuid.uuid4().hex[:8]}")

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
