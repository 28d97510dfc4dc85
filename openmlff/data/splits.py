"""Train / validation / test splits of a dataset's frames: seeded, disjoint, saved as JSON.

A Split is plain data (three sorted index arrays and the seed that drew them), so it can travel
inside a model checkpoint (`to_dict`) or beside it (`save`), and the same frames can be found again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from .dataset import Dataset
from ..core.atomic_io import atomic_write_stream

_SET_NAMES = ("train", "val", "test")


@dataclass
class Split:
    """Frame indices of the training, validation and test sets (disjoint, sorted), and the seed.

    n_frames, when known, is the size of the dataset the split was drawn for; indices must lie below it.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    n_frames: int | None = None

    def __post_init__(self) -> None:
        for name in _SET_NAMES:
            arr = np.asarray(getattr(self, name))
            if arr.size and (arr.dtype.kind not in "iu" or arr.ndim != 1):
                raise InputError(f"split set '{name}' must be a 1-D array of integer frame indices, "
                                 f"got dtype {arr.dtype} and shape {arr.shape}")
            setattr(self, name, np.sort(arr.astype(np.int64).reshape(-1)))
        self.seed = int(self.seed)
        everything = np.concatenate([self.train, self.val, self.test])
        if everything.size and everything.min() < 0:
            raise InputError(f"split holds a negative frame index ({int(everything.min())})")
        if self.n_frames is not None:
            self.n_frames = int(self.n_frames)
            if everything.size and everything.max() >= self.n_frames:
                raise InputError(f"split holds frame index {int(everything.max())} but the dataset has "
                                 f"{self.n_frames} frames")
        if np.unique(everything).size != everything.size:
            raise InputError("split sets 'train', 'val' and 'test' must be disjoint and hold no index twice")

    @property
    def sizes(self) -> dict[str, int]:
        return {name: int(getattr(self, name).size) for name in _SET_NAMES}

    def subsets(self, ds: Dataset) -> tuple[Dataset, Dataset, Dataset]:
        """The training, validation and test Datasets of `ds`; ValueError if the split was drawn for another size."""
        if self.n_frames is not None and self.n_frames != ds.n_frames:
            raise InputError(f"split was drawn for {self.n_frames} frames but dataset {ds.name!r} has {ds.n_frames}")
        return ds.subset(self.train), ds.subset(self.val), ds.subset(self.test)

    def to_dict(self) -> dict:
        """JSON-friendly dict (plain ints), e.g. to store inside a model checkpoint."""
        out = {name: getattr(self, name).tolist() for name in _SET_NAMES}
        out.update(seed=self.seed, n_frames=self.n_frames)
        return out

    @classmethod
    def from_dict(cls, doc: dict) -> "Split":
        """Inverse of to_dict; ValueError naming the missing keys."""
        missing = [k for k in (*_SET_NAMES, "seed") if k not in doc]
        if missing:
            raise InputError(f"split dict lacks keys {missing}; expected train, val, test, seed (and n_frames)")
        return cls(**{name: np.asarray(doc[name], dtype=np.int64) for name in _SET_NAMES},
                   seed=doc["seed"], n_frames=doc.get("n_frames"))

    def nested_train(self, n_train: int, seed: int) -> "Split":
        """This split with n_train of its training frames, drawn by a permutation seeded by `seed`: the same seed
        gives nested sets (a smaller n_train takes a subset of a larger one's); validation and test stay as they are,
        so models trained on different amounts of data are judged on the same frames (learning curves, studies)."""
        if not 1 <= n_train <= self.train.size:
            raise InputError(f"n_train must be between 1 and the split's {self.train.size} training frames, "
                             f"got {n_train}")
        kept = np.random.default_rng(seed).permutation(self.train)[:n_train]
        return Split(train=kept, val=self.val, test=self.test, seed=self.seed, n_frames=self.n_frames)

    def save(self, path) -> Path:
        """Write the split as JSON (atomically)."""
        text = json.dumps(self.to_dict(), indent=1)
        return atomic_write_stream(path, lambda fh: fh.write(text + "\n"), text=True)

    @classmethod
    def load(cls, path) -> "Split":
        """Read a split written by save(); ValueError naming the file if it is not one."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise InputError(f"{path}: not a split file: {exc}") from None


def make_split(n_frames: int, n_train: int | None = None, n_val: int | None = None, n_test: int | None = None,
               *, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Draw disjoint train/val/test frame indices with a seeded numpy Generator permutation.

    Sizes given explicitly are used as they are; a size left None is floor(fraction * n_frames),
    except that when the fractions sum to 1 an unspecified test set takes every frame the others
    leave (so make_split(1200, 1000, 50) gives 150 test frames and no frame is lost to rounding).
    The same arguments always give the same split. ValueError if the sizes exceed n_frames.
    """
    if int(n_frames) != n_frames or n_frames < 1:
        raise InputError(f"n_frames must be a positive integer, got {n_frames!r}")
    n_frames = int(n_frames)
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 or f > 1 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise InputError(f"fractions must be three numbers in [0, 1] summing to at most 1, got {fractions}")
    given = dict(zip(_SET_NAMES, (n_train, n_val, n_test)))
    for name, size in given.items():
        if size is not None and (int(size) != size or size < 0):
            raise InputError(f"n_{name} must be a non-negative integer, got {size!r}")
    sizes, origin = {}, {}
    for name, fraction in zip(_SET_NAMES, fractions):
        if given[name] is not None:
            sizes[name], origin[name] = int(given[name]), "given"
        else:
            sizes[name], origin[name] = int(np.floor(fraction * n_frames + 1e-9)), f"fraction {fraction:g}"
    if given["test"] is None and abs(sum(fractions) - 1.0) <= 1e-9:
        sizes["test"], origin["test"] = n_frames - sizes["train"] - sizes["val"], "the remaining frames"
    if sizes["test"] < 0 or sum(sizes.values()) > n_frames:
        shown = [k for k in _SET_NAMES if origin[k] != "the remaining frames"]
        parts = ", ".join(f"n_{k}={sizes[k]} ({origin[k]})" for k in shown)
        raise InputError(f"split sizes {parts} need more than the {n_frames} frames available")
    order = np.random.default_rng(seed).permutation(n_frames)
    a, b, c = sizes["train"], sizes["val"], sizes["test"]
    return Split(train=order[:a], val=order[a:a + b], test=order[a + b:a + b + c], seed=seed, n_frames=n_frames)


def select_frames(selection: str, n_frames: int, split: Split | None = None) -> np.ndarray | None:
    """Frame indices named by `selection`: 'all' (None: every frame), 'train'/'val'/'test' (a set of `split`),
    or a range 'START:STOP' (Python slice rules). InputError naming what is missing or malformed."""
    if selection == "all":
        return None
    if selection in _SET_NAMES:
        if split is None:
            raise InputError(f"--frames {selection} needs --checkpoint (the training checkpoint that holds the split)")
        indices = np.asarray(getattr(split, selection))
        if indices.size and indices.max() >= n_frames:
            raise InputError(f"--frames {selection}: the split names frame {int(indices.max())}, the data have "
                             f"{n_frames} frames; give the data the split was drawn for")
        if indices.size == 0:
            raise InputError(f"--frames {selection}: the split's {selection} set is empty")
        return indices
    if ":" in selection:
        start, _, stop = selection.partition(":")
        try:
            window = slice(int(start) if start else None, int(stop) if stop else None)
        except ValueError:
            raise InputError(f"--frames: expected all, train, val, test or START:STOP, got {selection!r}") from None
        indices = np.arange(n_frames)[window]
        if indices.size == 0:
            raise InputError(f"--frames {selection}: selects none of the {n_frames} frames (0-based, STOP excluded)")
        return indices
    raise InputError(f"--frames: expected all, train, val, test or START:STOP, got {selection!r}")


def check_data_of_split(dataset, split_source, split_fingerprint: str | None) -> None:
    """InputError unless `dataset` holds the numbers the split in `split_source` was drawn for (its fingerprint,
    when the split's file records one: a training checkpoint does, a split .json does not)."""
    if split_fingerprint is not None and dataset.fingerprint() != split_fingerprint:
        raise InputError(f"{dataset.source}: these are not the data the split in {split_source} was drawn for "
                         f"(dataset fingerprints differ: {dataset.fingerprint()[:12]}, the split's "
                         f"{str(split_fingerprint)[:12]})")
