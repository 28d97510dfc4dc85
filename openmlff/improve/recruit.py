"""Recruiting data: pick N labelled frames the model has not seen, where its fine-grained metrics say it is weak.

The pool is any labelled file of the same molecule (atoms in the same order), e.g. the training data file
itself (its unused frames). Frames the model has seen are left out: those whose positions equal (to 1e-6 Å)
a frame of the parent's split (training, validation and test: held-out frames stay held out) in its recorded
training data. The model (exported, as MD runs it) is evaluated on the remaining candidates; the per-frame
score is one of the frame metrics (force_mae by default, kcal/mol/Å). Strategies:

  frames    the N candidates with the largest score.
  clusters  k-means conformation clusters of the candidates (metrics.conformations; k by silhouette, or
            n_clusters); a frame is bad when its force MAE exceeds the candidates' global force MAE (the
            ratio-of-bad-points rule). N is shared among clusters in proportion to their bad frames (largest
            remainders), and drawn at random (seeded) within a cluster, bad frames first: weak regions,
            covered broadly rather than by their worst outliers only.
  random    N candidates drawn uniformly (seeded): the control.

The chosen frames are written as an openmlff dataset whose provenance records the pool, the pool indices, the
strategy and the scores, for `openmlff train --continue-from CKPT --add-data FILE`. Labels are the pool's
own, so no level of theory is mixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.dataset import Dataset
from ..core.config import check, setting
from ..core.errors import InputError
from ..metrics.conformations import cluster_conformations
from ..metrics.metric_sets import FRAME_METRICS
from ..training.checkpoint import TrainingCheckpoint, read_checkpoint
from ..training.start import parent_record
from .model_errors import checkpoint_errors

RECRUIT_STRATEGIES = ("clusters", "frames", "random")
#: Positions closer than this (Å, every coordinate) count as the same frame.
SAME_FRAME_TOLERANCE_ANGSTROM = 1e-6


@dataclass(frozen=True)
class RecruitResult:
    """The recruited frames (`dataset`, provenance filled), their pool indices and a JSON-ready record."""

    dataset: Dataset
    pool_indices: np.ndarray
    record: dict


def seen_frames(parent: TrainingCheckpoint, pool: Dataset) -> tuple[np.ndarray, str]:
    """(boolean mask of pool frames the parent has seen, how that was decided)."""
    from ..data import load_dataset

    source = parent.data_source
    if pool.fingerprint() == parent.data_fingerprint:
        reference, how = pool, "the pool is the parent's training data: its split's frames are left out"
    elif source is not None and source.is_file():
        reference = load_dataset(source)
        if reference.fingerprint() != parent.data_fingerprint:
            raise InputError(f"{source}: the parent's training data file has changed since it was trained; "
                             "cannot tell which pool frames it has seen")
        how = f"frames equal to one of the parent's split in {source} are left out"
    else:
        raise InputError(f"{parent.path}: its training data file ({source or 'not recorded'}) is not found, so the "
                         "pool frames it has seen cannot be told apart")
    split = parent.split
    used = np.concatenate([split.train, split.val, split.test])
    keys = {_frame_key(r) for r in reference.R[used]}
    return np.array([_frame_key(r) in keys for r in pool.R], dtype=bool), how


def _frame_key(positions: np.ndarray) -> bytes:
    return np.round(np.asarray(positions) / SAME_FRAME_TOLERANCE_ANGSTROM).astype(np.int64).tobytes()


@dataclass
class RecruitConfig:
    """What `recruit` picks: how many frames, by which strategy and per-frame error. The fields are
    `openmlff recruit`'s options."""

    count: int = setting(1, "frames to recruit")
    strategy: str = setting("random", "clusters: from conformation clusters with many bad frames; frames: the largest "
                                      "errors; random: uniformly (the control)")
    score: str = setting("force_mae", "per-frame error the strategies rank by")
    n_clusters: int | None = setting(None, "conformation clusters (default: silhouette rule)")
    seed: int = setting(0, "seed of the random draws")

    def __post_init__(self) -> None:
        check(self, self.strategy in RECRUIT_STRATEGIES, "strategy",
              f"must be one of {list(RECRUIT_STRATEGIES)}, got {self.strategy!r}")
        check(self, self.score in FRAME_METRICS, "score", f"must be one of {list(FRAME_METRICS)}, got {self.score!r}")


def recruit_frames(checkpoint, pool: Dataset, config: RecruitConfig, *, progress: bool = False) -> RecruitResult:
    """Choose config.count unseen pool frames by config.strategy (module docstring)."""
    count, strategy, score, seed, n_clusters = config.count, config.strategy, config.score, config.seed, config.n_clusters
    parent = read_checkpoint(checkpoint)
    if not pool.has_labels:
        raise InputError(f"{pool.source}: the pool has no energies and forces; recruiting uses existing labels")
    if list(pool.z) != list(parent.state["atomic_numbers"]):
        raise InputError(f"{pool.source}: field 'z' (atomic numbers): the pool's atoms differ from those of the model "
                         f"in {parent.path} ({pool.n_atoms} atoms, expected {len(parent.state['atomic_numbers'])} in "
                         "the same order)")
    seen, how = seen_frames(parent, pool)
    candidates = np.flatnonzero(~seen)
    if count < 1 or count > candidates.size:
        raise InputError(f"{pool.source}: cannot recruit {count} frames: the pool has {candidates.size} frames the "
                         f"model has not seen ({int(seen.sum())} seen of {pool.n_frames})")
    rng = np.random.default_rng(seed)
    record = {"strategy": strategy, "score": score, "count": int(count), "seed": int(seed),
              "parent": parent_record(parent), "pool": {"source_file": pool.source,
                                                        "fingerprint_sha256": pool.fingerprint(),
                                                        "frames": pool.n_frames, "unseen_frames": int(candidates.size),
                                                        "seen_rule": how}}
    if strategy == "random":
        chosen = np.sort(rng.choice(candidates, size=count, replace=False))
        scores = None
    else:
        errors = checkpoint_errors(parent, pool.subset(candidates), progress=progress)
        scores = np.asarray(errors["frames"][score], dtype=np.float64)
        record["candidates_global_force_mae"] = errors["force_mae"]
        record["unit"] = errors["units"]["force" if score.startswith("force") else "fnm"]
        if strategy == "frames":
            picked = np.argsort(-scores, kind="stable")[:count]
        else:
            bad = np.asarray(errors["frames"]["force_mae"]) > errors["force_mae"]
            picked, info = _by_clusters(pool.R[candidates], bad, count, rng, n_clusters, seed)
            record["clusters"] = info
        order = np.argsort(candidates[picked])
        chosen, scores = candidates[picked][order], scores[picked][order]
        record["scores"] = scores.tolist()
        record["candidates_score_mean"] = float(np.asarray(errors["frames"][score]).mean())
        record["recruited_score_mean"] = float(scores.mean())
    record["pool_indices"] = chosen.tolist()
    recruited = pool.subset(chosen)
    recruited.provenance = {**pool.provenance, "recruited": record}
    return RecruitResult(recruited, chosen, record)


def _by_clusters(R, bad, count, rng, n_clusters, seed) -> tuple[np.ndarray, dict]:
    """Candidate positions chosen by the 'clusters' strategy, and the clusters' sizes, bad counts and quotas."""
    labels, _, info = cluster_conformations(R, n_clusters=n_clusters, seed=seed)
    k = int(info["n_clusters"])
    sizes = np.bincount(labels, minlength=k)
    n_bad = np.bincount(labels, weights=bad.astype(float), minlength=k).astype(int)
    share = n_bad if n_bad.sum() else sizes
    quota = _largest_remainder(share, count, sizes)
    picked = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        first = rng.permutation(members[bad[members]])
        rest = rng.permutation(members[~bad[members]])
        picked.extend(np.concatenate([first, rest])[:quota[c]].tolist())
    return np.asarray(picked, dtype=np.int64), {"n_clusters": k, "rule": info["rule"], "sizes": sizes.tolist(),
                                                 "bad_frames": n_bad.tolist(), "quota": quota.tolist()}


def _largest_remainder(share, count: int, capacity) -> np.ndarray:
    """`count` split in proportion to `share` (largest remainders), no part above its `capacity`."""
    share = np.asarray(share, dtype=np.float64)
    capacity = np.asarray(capacity, dtype=np.int64)
    quota = np.zeros(share.size, dtype=np.int64)
    left = count
    while left > 0:
        open_ = quota < capacity
        weights = np.where(open_, share, 0.0)
        if weights.sum() == 0:
            weights = np.where(open_, capacity - quota, 0).astype(np.float64)
        exact = left * weights / weights.sum()
        add = np.minimum(np.floor(exact).astype(np.int64), capacity - quota)
        if add.sum() == 0:  # hand out one by one, largest remainder first
            add = np.zeros_like(quota)
            add[int(np.argmax(np.where(open_, exact - np.floor(exact) + weights * 1e-12, -1.0)))] = 1
        quota += add
        left = count - int(quota.sum())
    return quota
