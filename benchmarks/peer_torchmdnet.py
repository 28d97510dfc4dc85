"""TorchMD-Net's side of benchmarks/peers.py: train its ET with its own Lightning module, keep the weights at
wall-clock marks, evaluate them, and script one for OpenMM. Runs in the peers' virtual environment
(`.venv-peers`, made by peers.py), never imports openmlff.

    python peer_torchmdnet.py train    WORK --marks 60 150 300 --seed 0
    python peer_torchmdnet.py evaluate WORK            -> WORK/torchmdnet/curve.json
    python peer_torchmdnet.py md       WORK            -> WORK/torchmdnet/md.json

WORK holds what peers.py wrote: data/{coords,embed,energy,forces}.npy (Å, kcal/mol, kcal/mol/Å: the
units of rMD17 and of TorchMD-Net's own MD17 loader), data/splits.npz (idx_train, idx_val, idx_test)
and settings.json (the pair's shared settings).

The recipe is TorchMD-Net's examples/ET-MD17.yaml (standardize, neighbour embedding, expnorm RBF, EMA of
the energy loss 0.05, AdamW, warm-up then reduce-on-plateau) with the sizes and optimiser settings that
peers.py gives both sides. Its training loop is TorchMD-Net's (torchmdnet.module.LNNP under
lightning.Trainer); the only addition is a callback that copies the weights at each mark and stops after
the last. The clock starts at the first training step and counts validation, like openmlff's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peer_driver import MarkSnapshots, evaluate_marks, main as driver_main  # noqa: E402


def _args(work: Path, settings: dict, seed: int):
    """TorchMD-Net's own argument parser with ET-MD17.yaml's recipe and the pair's shared settings."""
    from torchmdnet.scripts.train import get_argparse

    data = work / "data"
    log_dir = work / "torchmdnet"
    recipe = {  # examples/ET-MD17.yaml
        "activation": "silu", "aggr": "add", "attn_activation": "silu", "cutoff_lower": 0.0,
        "derivative": True, "distance_influence": "both", "ema_alpha_y": 0.05, "ema_alpha_neg_dy": 1.0,
        "lr_min": 1.0e-7, "max_num_neighbors": 32, "max_z": 100, "model": "equivariant-transformer",
        "neighbor_embedding": True, "output_model": "Scalar", "precision": 32, "prior_model": None,
        "rbf_type": "expnorm", "reduce_op": "add", "standardize": True, "trainable_rbf": False, "weight_decay": 0.0,
    }
    shared = {
        "embedding_dimension": settings["hidden_channels"], "num_layers": settings["num_layers"],
        "num_heads": settings["num_heads"], "num_rbf": settings["num_rbf"],
        "cutoff_upper": settings["cutoff_angstrom"], "batch_size": settings["batch_size"],
        "inference_batch_size": 64, "lr": settings["learning_rate"], "lr_warmup_steps": settings["warmup_steps"],
        "lr_factor": settings["lr_factor"], "lr_patience": settings["lr_patience_epochs"],
        "y_weight": settings["energy_weight"], "neg_dy_weight": settings["force_weight"],
        "early_stopping_patience": 10_000, "num_epochs": 100_000,
    }
    files = {
        "dataset": "Custom", "coord_files": str(data / "coords.npy"), "embed_files": str(data / "embed.npy"),
        "energy_files": str(data / "energy.npy"), "force_files": str(data / "forces.npy"),
        "splits": str(data / "splits.npz"), "log_dir": str(log_dir), "seed": seed, "num_workers": 0,
        "ngpus": 1, "save_interval": 1, "test_interval": -1,
    }
    args = get_argparse().parse_args([])
    for key, value in {**recipe, **shared, **files}.items():
        if not hasattr(args, key):
            raise SystemExit(f"torchmd-net has no option {key!r}: another version than 3.1?")
        setattr(args, key, value)
    return args


def _model_and_data(work: Path, seed: int):
    from torchmdnet.data import DataModule
    from torchmdnet.models.model import create_prior_models

    settings = json.loads((work / "settings.json").read_text())
    args = _args(work, settings, seed)
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    data = DataModule(args)
    data.prepare_data()
    data.setup("fit")
    prior_models = create_prior_models(vars(args), data.dataset)
    args.prior_args = [p.get_init_args() for p in prior_models]
    return args, data, prior_models


def train(work: Path, marks: list[float], seed: int) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger
    from torchmdnet.module import LNNP

    torch.set_num_threads(1)
    pl.seed_everything(seed, workers=True)
    args, data, prior_models = _model_and_data(work, seed)
    module = LNNP(args, prior_model=prior_models, mean=data.mean, std=data.std)
    out = Path(args.log_dir)
    (out / "stats.json").write_text(json.dumps({"mean": float(data.mean), "std": float(data.std)}))

    class Snapshots(MarkSnapshots):
        name = "torchmdnet"

        def save(self, trainer, pl_module, path_stem):
            torch.save({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()},
                       f"{path_stem}.pt")
            trainer.save_checkpoint(f"{path_stem}.ckpt")  # TorchMD-Net's own format: load_model, openmm-ml, ASE

    trainer = pl.Trainer(max_epochs=args.num_epochs, accelerator="cpu", devices=1, callbacks=[Snapshots(marks, out)],
                         logger=[CSVLogger(str(out), name="", version="")], precision=args.precision,
                         inference_mode=False, num_sanity_val_steps=0, enable_checkpointing=False,
                         enable_progress_bar=False)
    trainer.fit(module, data)


def _load(work: Path, weights: Path, seed: int, derivative: bool):
    from torchmdnet.models.model import create_model

    args, data, prior_models = _model_and_data(work, seed)
    args = argparse.Namespace(**{**vars(args), "derivative": derivative})
    model = create_model(vars(args), prior_models, data.mean, data.std)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def evaluate(work: Path, seed: int) -> None:
    """Energy and force MAEs (kcal/mol, kcal/mol/Å) of every kept set of weights on the validation and test frames."""
    torch.set_num_threads(1)
    pos, z = np.load(work / "data" / "coords.npy"), np.load(work / "data" / "embed.npy")

    def predictor(weights: Path):
        model = _load(work, weights, seed, derivative=True)

        def predict(idx):
            e, f = [], []
            for start in range(0, len(idx), 64):
                chunk = idx[start:start + 64]
                n = len(chunk)
                y, neg_dy = model(torch.as_tensor(np.tile(z, n), dtype=torch.long),
                                  torch.as_tensor(pos[chunk].reshape(-1, 3), dtype=torch.float32),
                                  batch=torch.arange(n).repeat_interleave(len(z)))
                e.append(y.detach().numpy().reshape(-1))
                f.append(neg_dy.detach().numpy().reshape(n, -1, 3))
            return np.concatenate(e), np.concatenate(f)

        return predict

    evaluate_marks(work, "torchmdnet", ".pt", predictor)


class _OpenMMModule(torch.nn.Module):
    """TorchMD-Net's model the way its documentation attaches it to OpenMM through openmm-torch: positions in nm
    -> energy in kJ/mol (the model works in Å and kcal/mol here)."""

    def __init__(self, model, z):
        super().__init__()
        self.model = model
        self.register_buffer("z", torch.as_tensor(z, dtype=torch.long))

    def forward(self, positions):
        y, _ = self.model(self.z, positions.to(torch.float32) * 10.0)
        return y.sum().to(torch.float64) * 4.184  # kcal/mol -> kJ/mol


def md(work: Path, seed: int, steps: int) -> None:
    """Script the last kept weights for openmm-torch and time MD (TorchForce) and the bare forward + backward."""
    from peer_timing import floor_ms, md_ms_per_step

    torch.set_num_threads(1)
    out = work / "torchmdnet"
    last = json.loads((out / "marks.json").read_text())[-1]
    model = _load(work, out / f"weights_{last['mark_s']:g}s.pt", seed, derivative=False)
    z = np.load(work / "data" / "embed.npy")
    start = np.load(work / "data" / "coords.npy")[0]
    path = out / "model_openmm.pt"
    torch.jit.script(_OpenMMModule(model, z)).save(str(path))
    result = {"model": str(path), "path": "scripted model -> openmmtorch.TorchForce",
              "md_ms_per_step": md_ms_per_step(str(path), z, start, steps=steps),
              "floor_ms": floor_ms(str(path), start), "torch": torch.__version__}
    (out / "md.json").write_text(json.dumps(result, indent=1))
    print(f"[torchmdnet] MD {result['md_ms_per_step']:.2f} ms/step, floor {result['floor_ms']:.2f} ms", flush=True)


def main(argv=None) -> int:
    return driver_main(__doc__, train, evaluate, md, argv)


if __name__ == "__main__":
    raise SystemExit(main())
