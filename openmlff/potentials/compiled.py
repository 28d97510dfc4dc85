"""An openmlff model file compiled by Inductor (`torch.compile`) on this machine: the `compiled` backend.

The file a user shares stays a TorchScript graph and no code from it runs: openmlff rebuilds its own architecture
from the file's metadata, loads the file's weights into it, and Inductor compiles that into native code here.
Inductor keeps what it builds in the user's cache, $OPENMLFF_CACHE_DIR (default ~/.cache/openmlff), in a folder
keyed by the torch version, the Python version and the processor, so that a new torch or another processor
compiles anew; Inductor's own keys cover the graph (another architecture or size compiles anew; weights are
inputs, not code). A process compiles a model once (kept by file hash and shape); a new process on the same
machine reuses the cache, paying the trace but not the native build. Shapes are dynamic: the number of
neighbour pairs changes every MD step, and a static compile would recompile for each new count. Where torch sees a
GPU the compiled model runs there (Triton kernels; positions and forces cross from and to OpenMM's host arrays at
every step); $OPENMLFF_COMPILED_DEVICE chooses ("cpu", "cuda").
"""

from __future__ import annotations

import hashlib
import os
import platform
import stat
import sys
import time
from pathlib import Path

import torch

from ..core.errors import InputError
from ..model_file.reader import ModelFileError, file_sha256, load_exported
from .computation import TorchModelComputation

#: The environment variable naming the user's cache folder.
CACHE_ENV = "OPENMLFF_CACHE_DIR"
#: The dynamo settings the compiled models were validated with, pinned at every call (any call may retrace). Other
#: packages change them for the whole process: nequip's set_global_state (run when a nequip model loads) turns on
#: capture_dynamic_output_shape_ops and capture_scalar_outputs, and with those on, Inductor compiled openmlff's ViSNet
#: to forces off by up to a fifth of the largest force (torch 2.12.1; tests/test_compiled.py).
DYNAMO_SETTINGS = {"capture_dynamic_output_shape_ops": False, "capture_scalar_outputs": False}


class Pinned:
    """A compiled callable that runs (and traces) under DYNAMO_SETTINGS whatever the process set."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled

    def __call__(self, *args):
        with torch._dynamo.config.patch(DYNAMO_SETTINGS):
            return self.compiled(*args)


#: The device the compiled model runs on ("cpu", "cuda", "cuda:1"); default: a GPU when torch sees one.
DEVICE_ENV = "OPENMLFF_COMPILED_DEVICE"
_COMPILED: dict[tuple, Pinned] = {}  # (file sha256, form, device) -> compiled module, this process
_CALLED: set[tuple] = set()  # the keys whose first call (the compile) has finished


def processor_tag() -> str:
    """The processor as Inductor's native code depends on it: machine, model name and instruction-set flags."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "flags", "Features", "CPU implementer", "CPU part"):
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    text = platform.machine() + "|" + "|".join(f"{k}={v}" for k, v in sorted(info.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    """This machine's folder of compiled code in the user's cache, made private (0700) if new.

    InputError naming the folder if someone else owns it or others may write to it: native code is loaded from it.
    """
    base = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "openmlff"
    base = Path(base).expanduser()
    python = f"py{sys.version_info[0]}{sys.version_info[1]}"
    folder = base / "inductor" / f"torch-{torch.__version__}-{python}-{processor_tag()}"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (base, folder.parent, folder):
        st = path.stat()
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise InputError(f"{path}: the compiled-code cache must be owned by you and writable by no one else "
                             f"(native code is loaded from it); set ${CACHE_ENV} to a folder of your own")
    return folder


def use_cache(folder: Path) -> None:
    """Point Inductor (and Triton, on a GPU) at `folder`; they read these variables when they compile."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")


def rebuild(model_path) -> torch.nn.Module:
    """The model file as openmlff's own eager module (models.build_model + the file's weights), for compiling.

    ModelFileError naming the file for a committee file or one whose weights do not fit its stated architecture.
    """
    from ..models import build_model
    from ..models.energy_model import ExportedPotential

    scripted, metadata = load_exported(model_path)
    if "committee" in metadata or "hyperparameters" not in metadata:
        raise ModelFileError(f"{model_path}: the compiled backend takes one openmlff model (not a committee file); "
                             "use --backend torchforce for it")
    saved_dtype = torch.get_default_dtype()  # another package may have changed it (nequip sets float64)
    torch.set_default_dtype(torch.float32)  # what openmlff builds its models in
    try:
        model = ExportedPotential(build_model(metadata["architecture"], metadata["hyperparameters"], saved=True),
                                  metadata["atomic_numbers"])
    finally:
        torch.set_default_dtype(saved_dtype)
    stored = scripted.state_dict()  # TorchScript lists non-persistent buffers too (made from the hyperparameters)
    try:  # assign: the file's tensors as they are, dtypes included
        model.load_state_dict({name: stored[name] for name in model.state_dict()}, strict=True, assign=True)
    except (KeyError, RuntimeError) as exc:
        raise ModelFileError(f"{model_path}: its weights do not fit its metadata's architecture "
                             f"{metadata['architecture']!r} ({str(exc).splitlines()[0]})") from None
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


class _Frames(torch.nn.Module):
    """Frames of a molecule in one call: positions (n_frames, n_atoms, 3) nm -> energies (n_frames,) kJ/mol."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.model.energies(positions)


class _Replicas(_Frames):
    """N copies of a molecule in one call: positions (N * n_atoms, 3) nm -> the sum of their energies, kJ/mol."""

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.model.energies(positions.reshape(-1, self.model.n_atoms, 3)).sum()


#: What a compiled model's forward takes: one molecule (and a box), replica copies, or a batch of frames.
FORMS = {"molecule": None, "replicas": _Replicas, "frames": _Frames}


def compiled_model(model_path, form: str = "molecule", device: str = "cpu") -> Pinned:
    """The model file compiled by Inductor for `device`, once per process, as FORMS names:
    "molecule": forward(positions (n_atoms, 3) nm[, box nm]) -> kJ/mol; "replicas": forward((N * n_atoms, 3))
    -> the copies' summed energy; "frames": forward((n_frames, n_atoms, 3)) -> energies (n_frames,).
    Inductor compiles at the first call (forward) and the first gradient (backward): C++ on a CPU, Triton on a GPU.
    """
    key = (file_sha256(model_path), form, device)
    if key not in _COMPILED:
        use_cache(cache_dir())
        module = rebuild(model_path).to(device)
        wrapper = FORMS[form]
        _COMPILED[key] = Pinned(torch.compile(module if wrapper is None else wrapper(module), dynamic=True))
    return _COMPILED[key]


class CompiledModelComputation(TorchModelComputation):
    """PythonForce computation of the compiled model (TorchModelComputation's contract); its first call, where
    Inductor compiles, is timed and reported on stderr (`compile_s`)."""

    def __init__(self, model_path, atoms=None, periodic: bool = False, replicas: bool = False,
                 device: str | None = None) -> None:
        super().__init__(model_path, atoms, periodic)
        self.replicas = bool(replicas)
        self.device = device or os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
        self.compile_s: float | None = None

    def __getstate__(self) -> dict:
        return super().__getstate__() | {"replicas": self.replicas, "device": self.device}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_path"], state.get("atoms"), state.get("periodic", False),
                      state.get("replicas", False), state.get("device"))

    @property
    def model(self):
        if self._model is None:
            self._model = compiled_model(self.model_path, "replicas" if self.replicas else "molecule", self.device)
        return self._model

    def energy_and_forces(self, positions_nm, box_nm=None):
        if self.compile_s is not None:
            return super().energy_and_forces(positions_nm, box_nm)
        key = (file_sha256(self.model_path), "replicas" if self.replicas else "molecule", self.device)
        cold = key not in _CALLED  # a model this process compiled already runs at once
        if cold:
            print(f"compiling {self.model_path} with Inductor (cache {cache_dir()}): about a minute the first time "
                  "on this machine, seconds after", file=sys.stderr, flush=True)
        start = time.perf_counter()
        out = super().energy_and_forces(positions_nm, box_nm)
        self.compile_s = time.perf_counter() - start
        if cold:
            _CALLED.add(key)
            print(f"compiled {self.model_path} in {self.compile_s:.1f} s", file=sys.stderr, flush=True)
        return out
