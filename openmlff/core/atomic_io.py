"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A process killed at any moment leaves either the old file or the new one, never half of one,
which is what lets every long job in openmlff resume from its last checkpoint.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def atomic_write(path, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path) on a temporary file beside `path`, fsync it, then os.replace it onto `path`.

    A crash or an exception leaves any existing file at `path` untouched and no temporary behind. An OSError
    (a full disk, say) names `path`, not the temporary: the user sees which file could not be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            _write_and_replace(path, tmp, write)
        except OSError as exc:
            if exc.filename is None or exc.filename == tmp:
                raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
            raise
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _write_and_replace(path: Path, tmp: str, write: Callable[[str], None]) -> None:
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file ordinary permissions
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def atomic_write_stream(path, write: Callable[[IO], None], *, text: bool = False) -> Path:
    """Like atomic_write, but write(fh) gets an open file (text mode, UTF-8, when text=True)."""
    def to_path(tmp: str) -> None:
        with open(tmp, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as fh:
            write(fh)
    return atomic_write(path, to_path)


def atomic_write_bytes(path, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return atomic_write(path, write)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, sort_keys: bool = False) -> Path:
    """Indented JSON (keys in insertion order unless sort_keys), numpy scalars/arrays and paths made plain."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=_plain) + "\n")


def atomic_torch_save(path, obj) -> Path:
    """torch.save into memory, then written as bytes: torch's own file writer reports a full disk as a
    RuntimeError ('unexpected pos'), Python's as OSError ENOSPC naming the file."""
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_torchscript_save(path, module, extra_files: dict | None = None) -> Path:
    """torch.jit.save of a scripted module, through memory for the same reason as atomic_torch_save."""
    import torch
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files=extra_files or {})
    return atomic_write_bytes(path, buffer.getvalue())


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse directory fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def jsonable(obj, finite: bool = False):
    """A copy of nested dicts/lists/tuples with numpy arrays and scalars made plain lists, floats and ints, paths
    strings; finite: NaN and inf made None too (strict JSON has no NaN). The one JSON sanitiser of openmlff."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v, finite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, finite) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return jsonable(obj.tolist(), finite)
    if isinstance(obj, Path):
        return str(obj)
    if finite and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _plain(o):
    """json.dumps' default: what jsonable makes plain, else TypeError."""
    plain = jsonable(o)
    if plain is o:
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")
    return plain