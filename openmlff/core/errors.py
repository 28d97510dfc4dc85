"""The one base of user-facing errors (docs/architecture.md "Errors, threads and locks").

A user error (a bad file, a field with the wrong value, a run directory another process holds) is an
OpenMLFFError whose message names the file or field and what was expected; the CLI prints it as one
line. OSError from the file system is printed the same way, worded with the path. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class OpenMLFFError(Exception):
    """A user-facing error: the message alone (one line, naming the file or field) tells what to fix."""


class InputError(OpenMLFFError, ValueError):
    """A value, option or file content given to openmlff is not what was expected."""


class StateError(OpenMLFFError, RuntimeError):
    """What is on disk does not allow the operation (a run held by another process, another run's inputs)."""


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system error: 'PATH: what went wrong' (ENOSPC: 'no space left on device')."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    if exc.filename2 is not None:
        where = f"{exc.filename} -> {exc.filename2}"
    return f"{where}: {reason}" if where is not None else reason
