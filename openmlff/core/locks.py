"""One writer per folder: an MD run directory, a campaign directory, a labelling folder.

The lock is an exclusive `flock` on FOLDER/.lock, taken through the `filelock` library. The kernel
drops it when its process dies, however it dies, so the lock of a killed process is taken over by
the next one with no clean-up. The holder's host, PID and start time are written beside it
(FOLDER/.lock.holder, removed on release) for the message that refuses a second writer. Within one process the lock is
re-entrant (a campaign worker holds its run's lock around run_simulation, which takes it again).

Where it holds: local file systems, NFSv4 and NFSv3 with the Linux client (flock becomes a POSIX
byte-range lock on the server), GPFS, BeeGFS, and Lustre mounted with `-o flock`. On a file system
without flock (Lustre with `noflock`, some FUSE mounts) filelock falls back to a soft lock file and
a lock left by a killed process must be deleted by hand (the error says which file).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import filelock

from .errors import StateError
from .versions import utc_now

LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.holder"
#: Seconds a writer waits for a lock before it is refused (longer than any probe holds it).
ACQUIRE_WAIT_S = 2.0


class BusyError(StateError):
    """Another process holds the folder's lock; the message names its host and PID."""


class FolderLock:
    """The one-writer lock of `folder` (see the module docstring); use as a context manager or acquire/release."""

    def __init__(self, folder, what: str = "folder", error: type[BusyError] = BusyError) -> None:
        self.folder = Path(folder)
        self.what = what
        self.error = error
        self.path = self.folder / LOCK_FILE
        self._lock: filelock.BaseFileLock | None = None

    def acquire(self) -> "FolderLock":
        """Take the lock at once or raise `error` naming the holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # a short wait, not none: is_locked() probes by taking the lock for a moment, and a writer starting
        # just then must not be refused; a real holder keeps it for the whole run
        lock = filelock.FileLock(self.path, timeout=ACQUIRE_WAIT_S, is_singleton=True)
        first = not lock.is_locked
        try:
            lock.acquire()
        except filelock.Timeout:
            raise self.error(f"{self.folder}: another process is writing this {self.what} ({describe_holder(self.folder)}); "
                             f"wait for it or stop it, then start again (its lock: {self.path})") from None
        self._lock = lock
        if first:
            holder = {"host": socket.gethostname(), "pid": os.getpid(),
                      "since": utc_now()}
            try:
                (self.folder / HOLDER_FILE).write_text(json.dumps(holder) + "\n")
            except OSError as exc:  # a full disk, say: name the file (Path.write_text's error does not)
                lock.release()
                self._lock = None
                raise OSError(exc.errno, exc.strerror or str(exc), str(self.folder / HOLDER_FILE)) from exc
        return self

    def release(self) -> None:
        if self._lock is not None:
            if self._lock.lock_counter == 1:  # the last hold: the holder record goes first, the flock after it
                (self.folder / HOLDER_FILE).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def describe_holder(folder) -> str:
    """'host H, PID P, since T' of the process that last took the folder's lock (as it wrote it)."""
    try:
        holder = json.loads((Path(folder) / HOLDER_FILE).read_text())
        return f"host {holder['host']}, PID {holder['pid']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "host and PID unknown"


def is_locked(folder) -> bool:
    """Whether another process (or another part of this one) holds the folder's lock; False when none exists."""
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return False
    probe = filelock.FileLock(path, timeout=0)
    try:
        probe.acquire()
    except filelock.Timeout:
        return True
    except PermissionError:  # a reader who may not write the folder (campaign status on a colleague's run)
        return _flock_held_read_only(path)
    probe.release()
    return False


def _flock_held_read_only(path: Path) -> bool:
    """Whether some process holds the flock on `path`, probed through a read-only descriptor."""
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the probe's own lock
    return False
