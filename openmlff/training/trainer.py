"""Training of an EnergyModel on a Dataset: energy + force loss, Adam, warm-up and reduce-on-plateau
learning rate, EMA of weights, early stopping, a wall-clock budget, a CSV log, a progress bar and
a checkpoint (written atomically at every epoch) from which an interrupted training resumes.
An epoch that diverges (validation loss not finite or `divergence_factor` times the best) sends the run back
to its best epoch with half the learning rate, so that an unattended run never goes on from, or ends with,
blown-up weights.

The checkpoint `model.ckpt` holds everything needed to resume or export: configuration, split,
energy statistics, raw/EMA/best weights, optimiser and scheduler state, history and elapsed time.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..core import units
from ..core.atomic_io import atomic_write_text
from ..data.dataset import Dataset
from ..data.splits import Split, make_split
from ..core.errors import StateError
from ..models import build_model, fit_element_energies
from ..models.energy_model import EnergyModel
from ..core.resume import ResumeMismatchError, check_resumable
from ..core.threads import set_threads
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, read_checkpoint, read_split, write_checkpoint
from .config import ADDED_FIELDS, ARCHITECTURE_DEFAULTS, TrainingConfig
from ..models.neighbors import neighbor_pairs
from .ema import ExponentialMovingAverage
from .losses import LossWeights, TrainingLoss
from .start import TrainingStart

LOG_NAME = "training_log.csv"


@dataclass
class TrainingResult:
    checkpoint: Path
    epochs: int
    steps: int
    elapsed_s: float
    best_epoch: int
    best_val_force_mae_kcal_per_mol_per_A: float
    best_val_energy_mae_kcal_per_mol: float
    stop_reason: str


class TrainingError(StateError):
    """Training cannot start or resume (e.g. the checkpoint belongs to other data or settings)."""


class TrainingResumeError(ResumeMismatchError, TrainingError):
    """The checkpoint in the output folder was trained with other settings; the message names each one."""


def train(dataset: Dataset, out_dir, config: TrainingConfig | None = None, progress: bool = True,
          start: TrainingStart | None = None) -> TrainingResult:
    """Train (or resume training of) a model on `dataset`; writes out_dir/model.ckpt and out_dir/training_log.csv.

    start: begin from a trained model (fine-tuning, continued training; openmlff.training.start)
    instead of random weights; its model settings and split replace those of `config`.
    """
    config = config or TrainingConfig()
    if start is not None:
        config = start.config(config)
    if not dataset.has_labels:
        raise TrainingError(f"{dataset.source}: the dataset has no energies and forces to train on")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_threads(config.torch_threads, atoms_per_call=config.batch_size * int(dataset.z.size))
    ckpt_path = out_dir / CHECKPOINT_NAME
    state = _load_or_start(dataset, ckpt_path, config, start)
    config = TrainingConfig.from_dict(state["config"])  # a resumed run's settings (see _load_or_start)
    if state["status"] == "finished":
        return _result(ckpt_path, state)
    return _Loop(dataset, out_dir, config, state, progress).run()


def train_committee(dataset: Dataset, out_dir, members: int, config: TrainingConfig | None = None,
                    progress: bool = True, workers: int = 1) -> list[TrainingResult]:
    """Train `members` models in out_dir/member_<k>: seeds seed + k (initial weights and batch order) and one
    split (split_seed, default seed), so they differ only by chance; `workers` at a time (train_side_by_side);
    each resumes."""
    config = config or TrainingConfig()
    if members < 2:
        raise TrainingError(f"a committee needs at least 2 members, got {members}")
    split_seed = config.seed if config.split_seed is None else config.split_seed
    jobs = [(dataset, Path(out_dir) / f"member_{k}", replace(config, seed=config.seed + k, split_seed=split_seed), None)
            for k in range(members)]
    return train_side_by_side(jobs, workers, progress=progress)


def train_side_by_side(jobs, workers: int = 1, progress: bool = True) -> list[TrainingResult]:
    """Run train(dataset, out_dir, config, start=start) for each (dataset, out_dir, config, start) of `jobs`.

    workers 1: one after another in this process. More: that many spawned processes of one torch thread
    each (the jobs' torch_threads is set to 1 so that the pool, not OpenMP, uses the cores; it is a
    resumable setting), without progress bars; results in the order of `jobs`.
    """
    if workers < 1:
        raise TrainingError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(jobs) == 1:
        return [train(d, o, c, progress=progress, start=s) for d, o, c, s in jobs]
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn"),
                             initializer=_init_training_worker, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(train, d, o, replace(c, torch_threads=1), False, s) for d, o, c, s in jobs]
        return [f.result() for f in futures]


def _init_training_worker(parent_pid: int) -> None:
    from ..core.processes import die_with_parent

    die_with_parent(parent_pid)
    set_threads(1)


def load_checkpoint(path, weights: str = "best") -> tuple[EnergyModel, dict]:
    """The EnergyModel stored in a checkpoint (weights 'best', 'ema' or 'raw') and the checkpoint dict (read safely)."""
    checkpoint = read_checkpoint(path)
    return checkpoint.potential(weights), checkpoint.state


# ----------------------------------------------------------------------------------------------

def _load_or_start(dataset: Dataset, ckpt_path: Path, config: TrainingConfig, start: TrainingStart | None) -> dict:
    fingerprint = dataset.fingerprint()
    if ckpt_path.exists():
        ckpt = dict(read_checkpoint(ckpt_path).state)
        if ckpt.get("data_fingerprint") != fingerprint:
            raise TrainingError(
                f"{ckpt_path}: the checkpoint was trained on other data (fingerprint {ckpt.get('data_fingerprint', '?')[:12]}, "
                f"this dataset {fingerprint[:12]} from {dataset.source}); use another output folder")
        new = config.to_dict()
        # a field newer than the checkpoint reads as the value that reproduces it (ADDED_FIELDS), else None;
        # left at its default, such a field resumes as the checkpoint ran (a new default does not block a resume)
        old = {k: ckpt["config"].get(k, ADDED_FIELDS.get(k)) for k in new}
        defaults = TrainingConfig().to_dict()
        for k in ADDED_FIELDS:
            if k not in ckpt["config"] and new[k] == defaults[k]:
                new[k] = old[k]
        for k in ARCHITECTURE_DEFAULTS[config.architecture]:  # left to the architecture: as the run started
            if new[k] is None:
                new[k] = old[k]
        origin = {"origin": None if start is None else start.origin}
        check_resumable({**old, "origin": ckpt.get("origin")}, {**new, **origin}, where=str(ckpt_path),
                        may_change=TrainingConfig.RESUMABLE_CHANGES, job="training run", error=TrainingResumeError)
        if ckpt["status"] == "finished" and _more_budget(ckpt, config):
            ckpt["status"] = "running"  # the user asked for more time or epochs: go on
        ckpt["config"] = new
        return ckpt

    if start is not None:
        if start.split.n_frames != dataset.n_frames:
            raise TrainingError(f"{dataset.source}: {dataset.n_frames} frames, but the run starting from "
                                f"{start.parent.path} has a split of {start.split.n_frames}")
        begin = start.initial_state()
    else:
        split_seed = config.seed if config.split_seed is None else config.split_seed
        if config.split is not None:
            split = kept_split(config.split, dataset, config.n_train, split_seed)
        else:
            n_train, n_val, n_test = resolve_split_sizes(dataset.n_frames, config)
            split = make_split(dataset.n_frames, n_train=n_train, n_val=n_val, n_test=n_test, seed=split_seed)
        train_idx = split.train
        element_energy = fit_element_energies(dataset.z, dataset.E[train_idx])
        begin = {
            "architecture": config.architecture, "hyperparameters": config.resolved_hyperparameters(),
            "split": split.to_dict(), "atomic_numbers": dataset.z.tolist(),
            "element_energy_ev": np.asarray(element_energy, dtype=np.float64).tolist(),
            "scale_ev": float(np.sqrt(np.mean(dataset.F[train_idx] ** 2))),
            "model_state": None, "ema_state": None, "best_state": None, "sample_weights": None, "origin": None,
        }
    return {
        "format": CHECKPOINT_FORMAT,
        "status": "new",
        "config": config.resolved().to_dict(),
        **begin,
        "data_fingerprint": fingerprint,
        "data_provenance": dict(dataset.provenance, name=dataset.name),
        "units": {"energy": "eV", "length": "Å", "forces": "eV/Å"},
        "versions": {"openmlff": __version__, "torch": str(torch.__version__)},
        "epoch": 0, "step": 0, "elapsed_s": 0.0, "history": [],
        "best_epoch": 0, "best_val_loss": math.inf, "epochs_since_best": 0,
        "optimizer_state": None, "scheduler_state": None, "stop_reason": None,
    }


def kept_split(path, dataset: Dataset, n_train: int | None, seed: int) -> Split:
    """TrainingConfig.split: the split in `path` (a .json or a checkpoint) with n_train of its training frames
    (Split.nested_train; all of them when None); TrainingError if it was drawn for other data."""
    split, fingerprint = read_split(path)
    if split.n_frames is not None and split.n_frames != dataset.n_frames:
        raise TrainingError(f"{path}: field 'split': drawn for {split.n_frames} frames, but {dataset.source} has "
                            f"{dataset.n_frames}")
    if fingerprint is not None and fingerprint != dataset.fingerprint():
        raise TrainingError(f"{path}: field 'data_fingerprint': the checkpoint was trained on other data than "
                            f"{dataset.source}")
    return split if n_train is None else split.nested_train(n_train, seed)


def resolve_split_sizes(n_frames: int, config: TrainingConfig) -> tuple[int, int, int]:
    """(n_train, n_val, n_test): given sizes as they are; by default 50 validation and 200 test frames
    for large sets (fewer for small ones), and every other frame for training."""
    n_val = config.n_val if config.n_val is not None else max(1, min(50, n_frames // 10))
    n_test = config.n_test if config.n_test is not None else min(200, n_frames // 5)
    n_train = config.n_train if config.n_train is not None else n_frames - n_val - n_test
    if n_train < 1 or n_train + n_val + n_test > n_frames:
        raise TrainingError(f"cannot split {n_frames} frames into {n_train} training, {n_val} validation "
                            f"and {n_test} test frames")
    return n_train, n_val, n_test


def _more_budget(ckpt: dict, config: TrainingConfig) -> bool:
    reason = ckpt.get("stop_reason")
    if reason == "time budget reached":
        return config.time_budget_s is None or config.time_budget_s > ckpt["elapsed_s"] + 1.0
    if reason == "max epochs reached":
        return config.max_epochs > ckpt["epoch"]
    return False


def _result(ckpt_path: Path, state: dict) -> TrainingResult:
    best = next((h for h in state["history"] if h["epoch"] == state["best_epoch"]), {})
    return TrainingResult(
        checkpoint=ckpt_path, epochs=state["epoch"], steps=state["step"], elapsed_s=state["elapsed_s"],
        best_epoch=state["best_epoch"],
        best_val_force_mae_kcal_per_mol_per_A=best.get("val_force_mae_kcal_per_mol_per_A", math.nan),
        best_val_energy_mae_kcal_per_mol=best.get("val_energy_mae_kcal_per_mol", math.nan),
        stop_reason=state["stop_reason"] or "")


class _Loop:
    """The epoch loop; holds the tensors of the dataset and the optimisation state."""

    def __init__(self, dataset: Dataset, out_dir: Path, config: TrainingConfig, state: dict, progress: bool):
        self.cfg = config
        self.state = state
        self.out_dir = out_dir
        self.progress = progress
        self.dtype = getattr(torch, config.dtype)
        self.split = Split.from_dict(state["split"])
        self.loss = TrainingLoss(config.loss, LossWeights(config.energy_weight, config.force_weight), dataset.z,
                                 dict(config.loss_options))
        self.z = torch.as_tensor(dataset.z, dtype=torch.long)
        self.R = torch.as_tensor(dataset.R, dtype=self.dtype)
        self.E = torch.as_tensor(dataset.E, dtype=torch.float64)
        self.F = torch.as_tensor(dataset.F, dtype=self.dtype)

        torch.manual_seed(config.seed)
        self.model = build_model(state["architecture"], state["hyperparameters"], saved=True).to(self.dtype)
        self.model.set_energy_statistics(state["element_energy_ev"], state["scale_ev"])
        self.ema = ExponentialMovingAverage(self.model, config.ema_decay, config.ema_warmup)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience_epochs,
            min_lr=config.min_learning_rate)
        if state["model_state"] is not None:  # a resumed run, or one starting from a parent's weights
            self.model.load_state_dict(state["model_state"])
            self.ema.load_state_dict(state["ema_state"])
        if state["optimizer_state"] is not None:
            self.optimizer.load_state_dict(state["optimizer_state"])
            self.plateau.load_state_dict(state["scheduler_state"])
        self.step = compiled_step(self.model, self.loss) if config.compile else None
        self.started = time.perf_counter()
        self.elapsed_before = float(state["elapsed_s"])
        # what a diverged epoch goes back to, kept in the checkpoint so a resumed run rolls back as an uninterrupted one
        if state.get("anchor") is None and config.divergence_factor is not None:
            state["anchor"] = self.optimisation_state()

    def optimisation_state(self) -> dict:
        """Copies of the weights, EMA, optimiser and scheduler states (the size of the checkpoint's own)."""
        return copy.deepcopy({"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                              "optimizer": self.optimizer.state_dict(), "plateau": self.plateau.state_dict()})

    def diverged(self, val_loss: float) -> bool:
        factor, best = self.cfg.divergence_factor, self.state["best_val_loss"]
        if factor is None:
            return False
        return not math.isfinite(val_loss) or (math.isfinite(best) and val_loss > factor * best)

    def roll_back(self) -> float:
        """Back to the state after the best epoch (not merely the last accepted one, which may already be on its
        way up), at half the learning rate of the diverged epoch (so halvings add up; the warm-up's target too);
        the next epoch draws a new batch order. Returns the new learning rate."""
        lr = 0.5 * self.optimizer.param_groups[0]["lr"]
        anchor = copy.deepcopy(self.state["anchor"])  # Adam would otherwise step the anchor's own moment tensors
        self.model.load_state_dict(anchor["model"])
        self.ema.load_state_dict(anchor["ema"])
        self.optimizer.load_state_dict(anchor["optimizer"])
        self.plateau.load_state_dict(anchor["plateau"])
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def budget_left(self) -> bool:
        return self.cfg.time_budget_s is None or self.elapsed() < self.cfg.time_budget_s

    def run(self) -> TrainingResult:
        st, cfg = self.state, self.cfg
        st["status"] = "running"
        bar = tqdm(total=cfg.max_epochs if cfg.time_budget_s is None else None, initial=st["epoch"],
                   disable=not self.progress, desc=f"training {st['architecture']}", unit="epoch", dynamic_ncols=True)
        stop_reason = None
        while stop_reason is None:
            if st["epoch"] >= cfg.max_epochs:
                stop_reason = "max epochs reached"
                break
            if not self.budget_left():
                stop_reason = "time budget reached"
                break
            train_loss, train_fmae, complete = self.train_epoch()
            st["epoch"] += 1
            val = self.validate()
            rolled_back = self.diverged(val["val_loss"])
            if rolled_back:
                before = self.optimizer.param_groups[0]["lr"]
                after = self.roll_back()
                st.setdefault("rollbacks", []).append({"epoch": st["epoch"], "step": st["step"],
                                                       "val_loss": val["val_loss"], "learning_rate": after})
                tqdm.write(f"training {st['architecture']}: epoch {st['epoch']} diverged (validation loss "
                           f"{val['val_loss']:.3g}, best {st['best_val_loss']:.3g}); weights, EMA and optimiser "
                           f"back to those of the best epoch, {st['best_epoch']}; learning rate {before:.2e} -> "
                           f"{after:.2e}", file=sys.stderr)
            improved = not rolled_back and val["val_loss"] < st["best_val_loss"]
            if improved:
                st["best_val_loss"] = val["val_loss"]
                st["best_epoch"] = st["epoch"]
                st["best_state"] = {k: v.clone() for k, v in self.ema.state_dict().items()}
                st["epochs_since_best"] = 0
            else:
                st["epochs_since_best"] += 1
            if st["step"] >= cfg.warmup_steps and not rolled_back:
                self.plateau.step(val["val_loss"])
            lr = self.optimizer.param_groups[0]["lr"]
            st["history"].append({
                "epoch": st["epoch"], "step": st["step"], "elapsed_s": round(self.elapsed(), 3), "learning_rate": lr,
                "train_loss": train_loss, "train_force_mae_kcal_per_mol_per_A": train_fmae,
                "epoch_complete": complete, **val, "best": improved, "rolled_back": rolled_back})
            bar.update(1)
            bar.set_postfix_str(
                f"val F MAE {val['val_force_mae_kcal_per_mol_per_A']:.3f} kcal/mol/Å, "
                f"E MAE {val['val_energy_mae_kcal_per_mol']:.3f} kcal/mol, lr {lr:.1e}, "
                f"{self.elapsed():.0f}/{cfg.time_budget_s or float('inf'):.0f} s")
            if st["epochs_since_best"] >= cfg.early_stopping_patience_epochs:
                stop_reason = "early stopping: no improvement in validation loss"
            elif lr <= cfg.min_learning_rate * (1 + 1e-9) and st["step"] >= cfg.warmup_steps:
                stop_reason = "learning rate reached its minimum"
            if improved and cfg.divergence_factor is not None:
                st["anchor"] = self.optimisation_state()
            self.save(status="running")
        bar.close()
        st["stop_reason"] = stop_reason
        self.save(status="finished")
        return _result(self.out_dir / CHECKPOINT_NAME, st)

    def train_epoch(self) -> tuple[float, float, bool]:
        """One pass over the training frames in a seeded order; stops early if the budget runs out."""
        st, cfg = self.state, self.cfg
        self.model.train()
        order = epoch_order(self.split.train, st.get("sample_weights"), cfg.seed, st["epoch"])
        total_loss, total_fmae, n_seen = 0.0, 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            if not self.budget_left():
                break
            idx = order[start:start + cfg.batch_size]
            self.set_learning_rate()
            z, pos, batch, n = self.batch(idx)
            f_ref = self.F[idx].reshape(-1, 3)
            if self.step is None:
                energy, forces = self.model.energy_and_forces(z, pos, batch, n, create_graph=True)
                loss = self.loss(energy, self.E[idx], forces, f_ref)
            else:
                loss, forces = self.step(z, pos, batch, n, self.pairs(pos, batch), self.E[idx], f_ref)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.ema.update(self.model, st["step"])
            st["step"] += 1
            total_loss += float(loss.detach()) * n
            total_fmae += float((forces.detach() - f_ref).abs().mean()) * n
            n_seen += n
        complete = n_seen == len(order)
        scale = units.force_from_ev_per_angstrom(units.REPORT_FORCE_UNIT)
        return total_loss / max(n_seen, 1), total_fmae / max(n_seen, 1) * scale, complete

    def set_learning_rate(self) -> None:
        """Linear warm-up from 0 to the learning rate over `warmup_steps`; afterwards the plateau scheduler rules."""
        if self.state["step"] < self.cfg.warmup_steps:
            target = self.cfg.learning_rate * 0.5 ** len(self.state.get("rollbacks", []))  # each rollback halves it
            lr = target * (self.state["step"] + 1) / self.cfg.warmup_steps
            for g in self.optimizer.param_groups:
                g["lr"] = lr

    def pairs(self, pos: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """The batch's neighbour pairs (2, n_pairs), found outside the compiled step (models.neighbors.find_pairs)."""
        network = self.model.network
        i, j, _ = neighbor_pairs(pos.detach(), batch, network.cutoff_angstrom, network.neighbor_method)
        return torch.stack([i, j])

    def batch(self, idx: torch.Tensor):
        n = len(idx)
        n_atoms = self.z.numel()
        return (self.z.repeat(n), self.R[idx].reshape(-1, 3),
                torch.arange(n).repeat_interleave(n_atoms), n)

    def validate(self) -> dict:
        """Loss and MAEs of the EMA weights on the validation frames (energies kcal/mol, forces kcal/mol/Å)."""
        model = self.ema.shadow
        model.eval()
        idx_all = torch.as_tensor(self.split.val)
        if len(idx_all) == 0:  # no validation frames: judge on the training frames
            idx_all = torch.as_tensor(self.split.train)
        loss_sum, e_abs, f_abs, n_f = 0.0, 0.0, 0.0, 0
        for start in range(0, len(idx_all), 64):
            idx = idx_all[start:start + 64]
            z, pos, batch, n = self.batch(idx)
            energy, forces = model.energy_and_forces(z, pos, batch, n)
            f_ref = self.F[idx].reshape(-1, 3)
            loss_sum += float(self.loss(energy.detach(), self.E[idx], forces.detach(), f_ref)) * n
            e_abs += float((energy.detach() - self.E[idx]).abs().sum())
            f_abs += float((forces.detach() - f_ref).abs().sum())
            n_f += f_ref.numel()
        n_mol = len(idx_all)
        return {
            "val_loss": loss_sum / n_mol,
            "val_energy_mae_kcal_per_mol": e_abs / n_mol * units.ev_to(units.REPORT_ENERGY_UNIT),
            "val_force_mae_kcal_per_mol_per_A": f_abs / n_f * units.force_from_ev_per_angstrom(units.REPORT_FORCE_UNIT),
        }

    def save(self, status: str) -> None:
        st = self.state
        st["status"] = status
        st["elapsed_s"] = self.elapsed()
        st["model_state"] = self.model.state_dict()
        st["ema_state"] = self.ema.state_dict()
        st["optimizer_state"] = self.optimizer.state_dict()
        st["scheduler_state"] = self.plateau.state_dict()
        if st["best_state"] is None:
            st["best_state"] = {k: v.clone() for k, v in self.ema.state_dict().items()}
        write_checkpoint(self.out_dir / CHECKPOINT_NAME, st)
        atomic_write_text(self.out_dir / LOG_NAME, history_csv(st["history"]))


def compiled_step(model: EnergyModel, loss_fn):
    """The training loss compiled by Inductor: (z, pos, batch, n, pairs, E_ref, F_ref) -> (loss, forces).

    torch.compile refuses the double backward of autograd.grad(create_graph=True), so the forces come from
    torch.func.grad inside the traced function, which dynamo must trace whole: the neighbour pairs are found
    outside (their count is data-dependent). Only the pair count is dynamic (it changes every batch); the atom
    count is static, so a smaller last batch compiles once more: with a dynamic atom count, autograd inside
    dynamo fails ("Expected IntList but got GenericList", torch 2.12).
    """
    def step(z, pos, batch, n: int, pairs, e_ref, f_ref):
        def total(p):
            energy = model(z, p, batch, n, None, pairs)
            return energy.sum(), energy

        grad, energy = torch.func.grad(total, has_aux=True)(pos)
        forces = -grad
        return loss_fn(energy, e_ref, forces, f_ref), forces

    from ..potentials.compiled import Pinned, cache_dir, use_cache

    use_cache(cache_dir())
    compiled = Pinned(torch.compile(step, dynamic=False))

    def call(z, pos, batch, n: int, pairs, e_ref, f_ref):
        torch._dynamo.mark_dynamic(pairs, 1)
        return compiled(z, pos, batch, n, pairs, e_ref, f_ref)

    return call


def epoch_order(train_frames, sample_weights, seed: int, epoch: int) -> torch.Tensor:
    """The training frames of one epoch, seeded by (seed, epoch): a permutation of them, or with
    sample weights as many draws with replacement, frame k drawn with probability w_k / sum(w)."""
    frames = torch.as_tensor(np.asarray(train_frames, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if sample_weights is None:
        return frames[torch.randperm(len(frames), generator=generator)]
    weights = torch.as_tensor(np.asarray(sample_weights, dtype=np.float64))
    return frames[torch.multinomial(weights, len(frames), replacement=True, generator=generator)]


def history_csv(history: list[dict]) -> str:
    """The training history as CSV text (one row per epoch, units in the column names)."""
    if not history:
        return ""
    buf = io.StringIO()
    columns = list(dict.fromkeys(k for row in history for k in row))  # rows of older versions lack newer columns
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()
