"""Worker processes that die with their parent (the local campaign pool, the labelling pool).

A ProcessPoolExecutor's workers outlive a parent killed with SIGKILL: they finish the task they hold,
and an orphan could finish a campaign run by itself while a restarted campaign races it. Each worker
therefore asks the kernel to kill it when its parent dies (Linux prctl PR_SET_PDEATHSIG) and, where
that is not available, watches its parent's PID from a daemon thread and exits when it changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
#: Seconds between the fallback watcher's looks at the parent PID.
WATCH_INTERVAL_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    """Call first in a worker process: end it (SIGKILL) as soon as the process `parent_pid` is gone, and quietly
    on Ctrl-C (SIGINT reaches the whole process group; the parent prints the one line): SIGINT raises SystemExit,
    which an idle worker exits with and a busy one hands back as its task's outcome, where Python's
    KeyboardInterrupt would print a traceback from every idle worker (multiprocessing's bootstrap)."""
    signal.signal(signal.SIGINT, _end_quietly)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="openmlff-parent-watch").start()


def _end_quietly(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_INTERVAL_S)
    os._exit(1)
