"""DCD files as openmm.app.DCDFile writes them: the header's layout, reading frames, cutting at a frame.

Read directly with struct and numpy, without OpenMM (mdtraj's DCD reader prints to stdout from C on
every file it opens); md/trajectory.py writes them, and cuts them back at a checkpoint with truncate_dcd.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError


@dataclass(frozen=True)
class DCDLayout:
    """Byte layout of a DCD file as openmm.app.DCDFile writes it (CHARMM flavour, little-endian)."""

    n_frames: int  # the frame count in the header (NSET)
    n_atoms: int
    header_bytes: int
    frame_bytes: int


def read_dcd_layout(path) -> DCDLayout:
    """Header fields of a DCD file: frame count, atom count and the sizes needed to cut it at a frame (the header's
    frame count, bytes 8-11, is what openmm.app.DCDFile(append=True) goes by: it must match the file's length)."""
    with open(path, "rb") as fh:
        head = fh.read(100)
        if len(head) < 100 or struct.unpack("<i", head[:4])[0] != 84 or head[4:8] != b"CORD":
            raise InputError(f"{path}: not a DCD file written by OpenMM (bad header)")
        n_frames = struct.unpack("<i", head[8:12])[0]
        has_box = struct.unpack("<i", head[48:52])[0] != 0
        title_bytes = struct.unpack("<i", head[92:96])[0]
        fh.seek(104 + title_bytes)
        n_atoms = struct.unpack("<i", fh.read(4))[0]
    header_bytes = 104 + title_bytes + 8  # title block, its end marker, then the 4-byte atom count record
    frame_bytes = (56 if has_box else 0) + 3 * (4 * n_atoms + 8)
    return DCDLayout(n_frames=n_frames, n_atoms=n_atoms, header_bytes=header_bytes, frame_bytes=frame_bytes)


def truncate_dcd(path, n_frames: int) -> None:
    """Cut a DCD file to its first `n_frames` frames, fixing the header's frame count and last step
    (ValueError naming the file if it holds fewer complete frames)."""
    layout = read_dcd_layout(path)
    complete = (os.path.getsize(path) - layout.header_bytes) // layout.frame_bytes
    if complete < n_frames:
        raise InputError(f"{path}: holds {complete} complete frames, but the checkpoint says {n_frames} were written")
    with open(path, "r+b") as fh:
        fh.truncate(layout.header_bytes + n_frames * layout.frame_bytes)
        fh.seek(12)
        first_step, interval = struct.unpack("<ii", fh.read(8))
        fh.seek(8)
        fh.write(struct.pack("<i", n_frames))
        fh.seek(20)
        fh.write(struct.pack("<i", first_step + max(n_frames - 1, 0) * interval))
        fh.flush()
        os.fsync(fh.fileno())


def read_dcd_frames(path, start: int = 0, count: int | None = None) -> np.ndarray:
    """Positions in Å (n, n_atoms, 3) float32 of complete frames start.. of a DCD file written by OpenMM."""
    layout = read_dcd_layout(path)
    complete = (os.path.getsize(path) - layout.header_bytes) // layout.frame_bytes
    count = complete - start if count is None else min(count, complete - start)
    if count <= 0:
        return np.zeros((0, layout.n_atoms, 3), dtype=np.float32)
    box = layout.frame_bytes - 3 * (4 * layout.n_atoms + 8)
    raw = np.fromfile(path, dtype=np.uint8, count=count * layout.frame_bytes,
                      offset=layout.header_bytes + start * layout.frame_bytes)
    frames = raw.reshape(count, layout.frame_bytes)[:, box:].reshape(count, 3, 4 * layout.n_atoms + 8)
    xyz = frames[:, :, 4:-4].copy().view("<f4").reshape(count, 3, layout.n_atoms)
    return np.ascontiguousarray(xyz.transpose(0, 2, 1))
