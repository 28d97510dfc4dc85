"""What a user names as a model, and the user's consent to run the code it takes.

A `ModelRef` is the one typed home of "the model" as the command line, a campaign spec or the Python API
name it: a name (`amber14`, `gfn2-xtb`, a model file path, `openmm-ml:NAME`, `ase:MODULE:CLASS`) and its
options (`--model-option KEY=VALUE`, or the other keys of a campaign spec's `[models.LABEL]` table).
`potentials.get_potential` turns it into a Potential.

Consent: "no file that openmlff reads runs code" holds for openmlff's own model files, TorchScript files
(torch.jit.load runs no Python) and the named classical and quantum methods. Two kinds of model break it:
`ase:MODULE:CLASS` imports any module, and the openmm-ml backends (nequip, mace, torchmdnet, ...) unpickle
or unpackage the files they load. Those need the user's explicit consent: `--allow-model-code` on the
command line, which sets OPENMLFF_ALLOW_MODEL_CODE=1 for the worker processes, or `allow_code=True` in
Python. A spec naming such a model without that consent is refused before anything is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError

#: The potentials named by a word (potentials/classical.py, potentials/quantum.py): the one list of those names.
CLASSICAL_NAMES = ("amber14", "gaff-2.11")
QUANTUM_NAMES = ("gfn2-xtb", "gfn1-xtb", "dft")
#: How OpenMM calls an openmlff model file (potentials/exported.py): openmm-torch's TorchForce, openmm.PythonForce of the
#: TorchScript module, or PythonForce of the model compiled by Inductor on this machine (potentials/compiled.py).
BACKENDS = ("torchforce", "pythonforce", "compiled")
OPENMM_ML_PREFIX = "openmm-ml:"
ASE_PREFIX = "ase:"
#: The environment variable that carries `--allow-model-code` to worker processes.
CODE_CONSENT_ENV = "OPENMLFF_ALLOW_MODEL_CODE"
CONSENT_FLAG = "--allow-model-code"
#: openmm-ml names that mean pretrained weights openmm-ml fetches from the network when no modelPath is given.
_DOWNLOADED = ("ani1ccx", "ani2x", "aimnet", "aimnet2", "aimnet2-2025", "aimnet2-nse", "aimnet2-pd", "aimnet2-rxn")
_DOWNLOADED_PREFIXES = ("mace-", "aceff-", "fennix-bio1-", "orb-v3-")


@dataclass(frozen=True)
class ModelRef:
    """A model as named: `name` and its options (JSON values). `allow_code` is the consent of this process's user;
    it is never stored (a file cannot grant it)."""

    name: str
    options: dict = field(default_factory=dict)
    allow_code: bool | None = None
    #: Where a model of another code was trained: {"data": the training data file, "split": a split .json file
    #: (data.splits.Split.save's train/val/test frame indices)}; openmlff's own files record it inside.
    training: dict | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"a model must be named by a non-empty string, got {self.name!r}")
        object.__setattr__(self, "options", dict(self.options or {}))
        if self.training is not None and (not isinstance(self.training, dict) or set(self.training) - {"data", "split"}
                                          or "data" not in self.training):
            raise InputError(f"{self.name}: 'training' must be a table with 'data' (the training data file) and "
                             f"optionally 'split' (a split .json file), got {self.training!r}")

    @property
    def kind(self) -> str:
        """'openmm-ml', 'ase' or 'name-or-file' (a registered name or a model file, openmlff's or TorchScript)."""
        key = self.name.strip().lower()
        if key.startswith(OPENMM_ML_PREFIX):
            return "openmm-ml"
        if key.startswith(ASE_PREFIX):
            return "ase"
        return "name-or-file"

    def is_named(self) -> bool:
        """A classical force field or a reference method named by a word (not a file)."""
        return self.name.strip().lower() in CLASSICAL_NAMES + QUANTUM_NAMES

    def is_file(self) -> bool:
        """A model file (openmlff's, or another code's TorchScript)."""
        return self.kind == "name-or-file" and not self.is_named()

    @property
    def backend_name(self) -> str:
        """NAME of `openmm-ml:NAME`, MODULE:CLASS of `ase:MODULE:CLASS`, else the name."""
        name = self.name.strip()
        for prefix in (OPENMM_ML_PREFIX, ASE_PREFIX):
            if name.lower().startswith(prefix):
                return name[len(prefix):].strip()
        return name

    def runs_code(self) -> bool:
        """True when loading the model imports code the user named or unpickles a file (see the module docstring)."""
        return self.kind == "ase" or (self.kind == "openmm-ml" and self.backend_name.lower() != "openmlff")

    def check_consent(self, where: str = "") -> None:
        """InputError (one line) when the model runs code and the user has not consented."""
        if not self.runs_code() or self.consented():
            return
        what = (f"imports the Python module {self.backend_name.split(':')[0]!r}" if self.kind == "ase"
                else f"has openmm-ml's {self.backend_name!r} backend load (unpickle) its model file")
        where = f"{where}: " if where else ""
        raise InputError(f"{where}the model {self.name} {what}, which can run any code; if you trust it, pass "
                         f"{CONSENT_FLAG} (or set {CODE_CONSENT_ENV}=1)")

    def consented(self) -> bool:
        return bool(self.allow_code) if self.allow_code is not None else os.environ.get(CODE_CONSENT_ENV) == "1"

    def files(self) -> dict[str, str]:
        """{absolute path: SHA-256} of the files the options name (is_path_option keys; a folder: all its files),
        so that a changed file changes the model's identity. InputError naming the option for a missing one."""
        from ..model_file.reader import file_sha256

        out = {}
        for key, value in self.options.items():
            if not is_path_option(key):
                continue
            for item in value if isinstance(value, list) else [value]:
                path = Path(str(item)).expanduser().resolve()
                if path.is_dir():
                    out.update({str(f): file_sha256(f) for f in sorted(path.rglob("*")) if f.is_file()})
                elif path.is_file():
                    out[str(path)] = file_sha256(path)
                else:
                    raise InputError(f"{self.name}: option {key}: {path}: no such file")
        return out

    def to_value(self):
        """What a campaign spec or a record stores: the name alone, or {"potential": name, **options[, training]}."""
        if not self.options and self.training is None:
            return self.name
        return {"potential": self.name, **self.options, **({"training": self.training} if self.training else {})}

    @classmethod
    def from_value(cls, value, where: str = "model") -> "ModelRef":
        """From to_value's form (a string, or a table with `potential` and options); InputError naming `where`."""
        if isinstance(value, ModelRef):
            return value
        if isinstance(value, (str, os.PathLike)):
            return cls(os.fspath(value))
        if isinstance(value, dict):
            if not isinstance(value.get("potential"), str):
                raise InputError(f"{where}: a model table needs 'potential' (a model file, a name, 'openmm-ml:NAME' "
                                 "or 'ase:MODULE:CLASS'); the other keys are its options")
            return cls(value["potential"], {k: v for k, v in value.items() if k not in ("potential", "training")},
                       training=value.get("training"))
        raise InputError(f"{where}: expected a model (a string or a table with 'potential'), got {value!r}")

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + " " + " ".join(f"{k}={json.dumps(v)}" for k, v in self.options.items())


def parse_model_options(pairs, where: str = "--model-option") -> dict:
    """KEY=VALUE strings as options: VALUE read as JSON when it is JSON (numbers, true, lists, objects), else as a
    string. InputError naming `where` for a pair without '=' or a key given twice."""
    options: dict = {}
    for pair in pairs or []:
        key, sep, raw = str(pair).partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"{where}: expected KEY=VALUE, got {pair!r}")
        if key in options:
            raise InputError(f"{where}: {key!r} given twice")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def check_not_downloaded(name: str, options: dict) -> None:
    """InputError (one line) for an openmm-ml pretrained name whose weights would be downloaded at run time."""
    key = name.lower()
    pretrained = key in _DOWNLOADED or key.startswith(_DOWNLOADED_PREFIXES)
    if not pretrained or options.get("modelPath"):
        return
    takes_path = not key.startswith(("ani", "orb-"))
    where = ("download it where you have a network and name it: --model-option modelPath=FILE (or modelPath = "
             "\"FILE\" in a campaign spec's model table)") if takes_path else \
        "openmm-ml takes no local file for it: load the file you have through its ASE calculator (ase:MODULE:CLASS)"
    raise InputError(f"openmm-ml:{name} needs its pretrained weights from the network, and openmlff never downloads "
                     f"at run time; {where}")


def is_path_option(key: str) -> bool:
    """Options whose values are files: keys ending in path(s) or file(s) (modelPath, model_paths, model_file).
    A campaign spec resolves them against its folder; a model's identity hashes them."""
    return str(key).lower().endswith(("path", "paths", "file", "files"))
