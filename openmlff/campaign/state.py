"""The campaign directory and the state of its runs, read from disk.

    DIR/campaign.json       the normalised spec, its SHA-256, its history, the executor sessions
    DIR/.lock, .lock.holder held by the `campaign run` working in DIR (openmlff.core.locks: flock via filelock)
    DIR/runs/<run_id>/      an ordinary MD run directory (openmlff.md.runner), plus
        .lock, .lock.holder held by the process running it (openmlff.md.rundir)
        attempts.jsonl      one line when an attempt starts and one when it ends (host, pid, the
                            checkpoint step it resumed from, outcome)
        error.json          the error and traceback of an attempt that failed
    DIR/batches.json        runs that share one OpenMM Context (openmlff.campaign.batches), planned once
    DIR/batches/<batch_id>/ such a batch's directory (openmlff.md.replicas: its checkpoint for all its runs)

The state of a run is derived from those files alone, so a killed executor leaves nothing stale:
  pending              no run.json yet
  running              a process holds the run's lock (flock: exact on one host, and across hosts
                       where the shared file system supports it)
  interrupted          run.json but no summary.json (or a stable summary shorter than md.steps, after
                       md.steps was raised), and nobody running it: the next `campaign run` resumes it
  finished-stable      summary.json, stable for all of md.steps
  finished-collapsed   summary.json with a collapse
  failed               error.json: retried only by `campaign run --retry-failed`

A spec given again for an existing directory must equal the recorded one up to additions
(spec.GROWABLE_FIELDS); anything else is refused, naming the field.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import statistics
from pathlib import Path

from ..core.atomic_io import atomic_write_json
from ..core.errors import InputError
from ..core.locks import BusyError, FolderLock, is_locked
from ..core.resume import ResumeMismatchError
from ..core.units import FS_IN_NS, SECONDS_PER_DAY, SECONDS_PER_HOUR, SECONDS_PER_MINUTE
from .spec import GROWABLE_FIELDS, CampaignSpec, CampaignSpecError, spec_changes
from ..core.versions import utc_now

CAMPAIGN_FILE = "campaign.json"
CAMPAIGN_FORMAT = "openmlff-campaign/1"
RUNS_FOLDER = "runs"
ERROR_FILE = "error.json"
ATTEMPTS_FILE = "attempts.jsonl"

PENDING, RUNNING, INTERRUPTED = "pending", "running", "interrupted"
FINISHED_STABLE, FINISHED_COLLAPSED, FAILED = "finished-stable", "finished-collapsed", "failed"
RUN_STATES = (PENDING, RUNNING, INTERRUPTED, FINISHED_STABLE, FINISHED_COLLAPSED, FAILED)
FINISHED_STATES = (FINISHED_STABLE, FINISHED_COLLAPSED)


class CampaignBusyError(BusyError):
    """Another `campaign run` holds the campaign directory."""


class CampaignChangeError(ResumeMismatchError, CampaignSpecError):
    """A spec changes a recorded campaign beyond additions: the one resume error type, worded for campaigns."""


# --- the directory ------------------------------------------------------------------------------------

class CampaignDirectory:
    """A campaign's folder: campaign.json, the lock and runs/<run_id>/."""

    def __init__(self, directory) -> None:
        self.directory = Path(directory).expanduser().resolve()

    @property
    def campaign_json(self) -> Path:
        return self.directory / CAMPAIGN_FILE

    def run_dir(self, run_id: str) -> Path:
        return self.directory / RUNS_FOLDER / run_id

    def exists(self) -> bool:
        return self.campaign_json.is_file()

    def read(self) -> dict:
        if not self.exists():
            raise FileNotFoundError(f"{self.directory}: not a campaign directory (no {CAMPAIGN_FILE})")
        try:
            document = json.loads(self.campaign_json.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError(f"{self.campaign_json}: not UTF-8 text (byte {exc.start}); expected the campaign "
                             "record `campaign run` writes") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{self.campaign_json}: not valid JSON ({exc}); expected the campaign record "
                             "`campaign run` writes") from None
        if not isinstance(document, dict) or document.get("format", CAMPAIGN_FORMAT) != CAMPAIGN_FORMAT \
                or "spec" not in document:
            raise InputError(f"{self.campaign_json}: not an openmlff campaign record (expected format "
                             f"{CAMPAIGN_FORMAT} with its spec)")
        return document

    def spec(self) -> CampaignSpec:
        """The spec in force, as recorded in campaign.json."""
        return CampaignSpec.from_dict(self.read()["spec"], source=str(self.campaign_json))

    def lock(self) -> FolderLock:
        """Take the campaign lock (held by one `campaign run` at a time); CampaignBusyError names the holder."""
        return FolderLock(self.directory, "campaign directory (`openmlff campaign run`)", CampaignBusyError).acquire()

    def adopt(self, spec: CampaignSpec) -> CampaignSpec:
        """Record `spec` for this directory: a new campaign, the same one, or the recorded one plus additions
        (CampaignSpecError naming every changed field when `spec` changes more than GROWABLE_FIELDS allow)."""
        now = utc_now()
        entry = {"spec_sha256": spec.sha256(), "spec_file": spec.source, "at": now}
        if not self.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.campaign_json, {
                "format": CAMPAIGN_FORMAT, "name": spec.name, "created": now, "spec_sha256": spec.sha256(),
                "spec_file": spec.source, "spec": spec.to_dict(), "history": [entry], "sessions": []})
            return spec
        document = self.read()
        if document["spec_sha256"] == spec.sha256():
            return spec
        recorded = CampaignSpec.from_dict(document["spec"], source=str(self.campaign_json))
        changes = spec_changes(recorded, spec)
        if changes:
            raise CampaignChangeError(
                f"{spec.source or 'the spec'}: changes the campaign recorded in {self.campaign_json}: "
                f"{'; '.join(changes)}. An existing campaign takes only additions (to {', '.join(GROWABLE_FIELDS)}: "
                "new entries, or a larger number); use another output directory for a different campaign")
        document.update(spec=spec.to_dict(), spec_sha256=spec.sha256(), spec_file=spec.source)
        document["history"].append(entry)
        atomic_write_json(self.campaign_json, document)
        return spec

    def record_session(self, session: dict) -> None:
        """Append an executor session (when, where, which executor, how many workers) to campaign.json."""
        document = self.read()
        document.setdefault("sessions", []).append({"started": utc_now(), "host": socket.gethostname(),
                                                    "pid": os.getpid(), **session})
        atomic_write_json(self.campaign_json, document)


# --- one run ----------------------------------------------------------------------------------------

def run_state(run_dir, steps: int | None = None) -> str:
    """The state of one run directory (see the module docstring); `steps`: the campaign's md.steps."""
    run_dir = Path(run_dir)
    finished = finished_state(run_dir, steps)
    if finished is not None:
        return finished
    if (run_dir / ERROR_FILE).is_file():
        return FAILED
    if is_locked(run_dir):
        return RUNNING
    if _run_files(run_dir).run_json.is_file():
        return INTERRUPTED
    return PENDING


def finished_state(run_dir, steps: int | None = None) -> str | None:
    """FINISHED_COLLAPSED or FINISHED_STABLE from a run's summary.json, None while it has more to do."""
    summary = _read_summary(run_dir)
    if summary is None:
        return None
    if summary.collapsed:
        return FINISHED_COLLAPSED
    if steps is None or summary.steps_completed >= steps or summary.stopped_untrusted:  # untrusted: ended early
        return FINISHED_STABLE
    return None


def read_attempts(run_dir) -> list[dict]:
    """The lines of a run's attempts.jsonl (a line cut by a kill is skipped)."""
    path = Path(run_dir) / ATTEMPTS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def append_attempt(run_dir, event: dict) -> None:
    """Append one event line to a run's attempts.jsonl (flushed and synced: it is the run's history)."""
    line = json.dumps({"at": utc_now(), "host": socket.gethostname(), "pid": os.getpid(), **event}) + "\n"
    with open(Path(run_dir) / ATTEMPTS_FILE, "a+b") as fh:
        if fh.tell() > 0:  # a line cut by a kill must not swallow this one
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = "\n" + line
        fh.write(line.encode())
        fh.flush()
        os.fsync(fh.fileno())


def _last_state_row(path: Path) -> dict | None:
    """The last complete row of a state.csv as {column: float}, reading only the file's tail."""
    try:
        with open(path, "rb") as fh:
            header = fh.readline()
            fh.seek(0, os.SEEK_END)
            start = max(len(header), fh.tell() - 4096)
            fh.seek(start)
            pieces = fh.read().decode(errors="replace").split("\n")
    except OSError:
        return None
    if len(pieces) < 2 or (len(pieces) == 2 and start > len(header)):
        return None  # no complete row (the last piece follows the last newline)
    try:
        names = next(csv.reader([header.decode()]))
        values = next(csv.reader([pieces[-2]]))
        return {n: float(v) for n, v in zip(names, values)}
    except (ValueError, StopIteration):
        return None


def _run_progress(run_dir: Path, state: str) -> dict:
    """Steps simulated, speed and fate of one run, from its summary or its state.csv tail."""
    info: dict = {"steps_simulated": 0, "ns_per_day": None, "collapse_time_ps": None, "collapse_reason": None,
                  "error": None}
    summary = _read_summary(run_dir)
    if summary is not None and state in FINISHED_STATES:
        info.update(steps_simulated=int(summary.steps_completed), ns_per_day=summary.ns_per_day,
                    collapse_time_ps=summary.collapse_time_ps, collapse_reason=summary.collapse_reason)
        return info
    row = _last_state_row(_run_files(run_dir).state_csv)
    if row is not None:
        info["steps_simulated"] = int(row.get("step", 0))
        speed = row.get("speed_ns_per_day")
        info["ns_per_day"] = speed if speed and speed > 0 else None
    if state == FAILED:
        try:
            error = json.loads((run_dir / ERROR_FILE).read_text()) or {}
        except (FileNotFoundError, json.JSONDecodeError):
            error = {}
        info["error"] = f"{error.get('error_type', 'Error')}: {error.get('message', '?')}"
    return info


# --- the whole campaign -----------------------------------------------------------------------------

def campaign_status(directory) -> dict:
    """Counts by state, progress in steps, MD speed and estimated time left, and one row per run.

    steps_done counts a finished run in full (a collapsed one has nothing left to do), another by its state.csv.
    The time left assumes the runs still to do go at the median speed so far, as many at once as the last session
    ran (replica batches included); None until some speed was measured.
    """
    where = CampaignDirectory(directory)
    document = where.read()
    spec = where.spec()
    steps, timestep_fs = spec.steps, spec.timestep_fs
    rows = []
    for run in spec.expand():
        run_dir = where.run_dir(run.run_id)
        state = run_state(run_dir, steps)
        rows.append({"run_id": run.run_id, "model": run.model, "start": run.start, "temperature_K": run.temperature_K,
                     "seed": run.seed, "state": state, "steps_total": steps,
                     **_run_progress(run_dir, state)})
    counts = {state: sum(r["state"] == state for r in rows) for state in RUN_STATES}
    done = sum(steps if r["state"] in FINISHED_STATES else min(r["steps_simulated"], steps) for r in rows)
    total = steps * len(rows)
    speeds = [r["ns_per_day"] for r in rows if r["ns_per_day"]]
    ns_per_day = statistics.median(speeds) if speeds else None
    last_session = (document.get("sessions") or [{}])[-1]
    workers = int(last_session.get("workers") or 1)
    at_once_max = int(last_session.get("runs_at_once") or workers)  # replica batches: more
    to_do = [steps - min(r["steps_simulated"], steps) for r in rows if r["state"] in (PENDING, RUNNING, INTERRUPTED)]
    time_left = None
    if ns_per_day and to_do:
        steps_per_s = ns_per_day / (timestep_fs * FS_IN_NS) / SECONDS_PER_DAY
        at_once = min(at_once_max, len(to_do))
        time_left = max(sum(to_do) / (steps_per_s * at_once), max(to_do) / steps_per_s)
    elif not to_do:
        time_left = 0.0
    return {
        "campaign": spec.name, "directory": str(where.directory), "spec_sha256": document["spec_sha256"],
        "n_runs": len(rows), "counts": counts, "steps_per_run": steps, "timestep_fs": timestep_fs,
        "steps_done": int(done), "steps_total": int(total), "progress": done / total if total else 1.0,
        "ns_per_day_per_run": ns_per_day, "workers": workers, "runs_at_once": at_once_max,
        "estimated_time_left_s": time_left,
        "executor_active": is_locked(where.directory),
        "last_session": last_session or None, "runs": rows,
    }


def format_status(status: dict, runs: bool = True) -> str:
    """A printable report of campaign_status: counts, progress, speed, time left, and (runs=True) a table."""
    counts = " | ".join(f"{state} {n}" for state, n in status["counts"].items())
    speed = status["ns_per_day_per_run"]
    lines = [
        f"campaign {status['campaign']} ({status['directory']}): {status['n_runs']} runs, "
        f"{'an executor is working on it' if status['executor_active'] else 'no executor running'}",
        f"  {counts}",
        f"  progress {100 * status['progress']:.1f}% ({status['steps_done']}/{status['steps_total']} steps); "
        f"MD speed {'-' if speed is None else f'{speed:.3g} ns/day'} per run; "
        f"time left {format_duration(status['estimated_time_left_s'])} at {status['runs_at_once']} at once"
        + (f" ({status['workers']} workers, replica batches)" if status["runs_at_once"] != status["workers"] else ""),
    ]
    if runs and status["runs"]:
        width = max(len(r["run_id"]) for r in status["runs"])
        lines.append(f"  {'run':<{width}}  {'state':<18}  {'steps':>15}  fate")
        for r in status["runs"]:
            fate = ""
            if r["state"] == FINISHED_COLLAPSED:
                fate = f"collapsed at {r['collapse_time_ps']:.4g} ps ({r['collapse_reason']})"
            elif r["state"] == FAILED and r["error"]:
                fate = r["error"].splitlines()[0][:100]
            steps = f"{r['steps_simulated']}/{r['steps_total']}"
            lines.append(f"  {r['run_id']:<{width}}  {r['state']:<18}  {steps:>15}  {fate}".rstrip())
    return "\n".join(lines)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / SECONDS_PER_MINUTE:.0f} min"
    return f"{seconds / SECONDS_PER_HOUR:.1f} h"


def _run_files(run_dir):
    """The run's RunDirectory (imported here: openmlff.md loads OpenMM, which `campaign status` needs only now)."""
    from ..md.rundir import RunDirectory

    return RunDirectory(run_dir)


def _read_summary(run_dir):
    """The run's RunSummary, or None while it has none (or an unreadable one: a run cut while writing it)."""
    try:
        return _run_files(run_dir).read_summary()
    except InputError:
        return None
