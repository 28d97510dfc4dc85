"""Potentials by name: `get_potential('amber14')`, a model file, `openmm-ml:NAME`, `ase:MODULE:CLASS`; the names."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError
from . import classical, quantum
from .base import Potential
from .model_ref import ModelRef


def get_potential(model, allow_code: bool | None = None, **options) -> Potential:
    """The potential `model` names: a Potential (returned as is), a ModelRef, a campaign spec's model table
    ({"potential": ..., options}), or a string with `options`:

    - 'amber14', 'gaff-2.11' (classical), 'gfn2-xtb', 'gfn1-xtb', 'dft' (quantum), options to their constructors;
    - 'openmm-ml:NAME' (openmm-ml's MLPotential; potentials/openmmml.py), 'ase:MODULE:CLASS' (any ASE calculator;
      potentials/ase_model.py): these run code, and need consent (allow_code, or model_ref.CODE_CONSENT_ENV);
    - else a model file: openmlff's exported model (with its metadata), or another code's TorchScript file under
      openmm-torch's TorchForce contract (potentials/torchscript_file.py); ModelFileError naming it otherwise.
    """
    if isinstance(model, Potential):
        return model
    ref = ModelRef.from_value(model)
    if options or allow_code is not None:
        ref = ModelRef(ref.name, {**ref.options, **options}, ref.allow_code if allow_code is None else allow_code)
    if ref.kind == "openmm-ml" and ref.backend_name.lower() == "openmlff":
        if not ref.options.get("modelPath"):
            raise InputError(f"{ref.name} needs modelPath=<an exported openmlff model, .pt>")
        return _model_file(ModelRef(ref.options["modelPath"]))
    if ref.kind == "openmm-ml" and ref.backend_name.lower() == "ase":
        from .ase_model import from_openmm_ml_ase

        ref = from_openmm_ml_ase(ref)
    if ref.kind == "ase" or (ref.kind == "openmm-ml" and "python" in ref.options):  # an ASE calculator, or served
        from .ase_model import ASEPotential
        from .model_ref import check_not_downloaded

        if ref.kind == "openmm-ml":
            check_not_downloaded(ref.backend_name, ref.options)
        return ASEPotential(ref)
    if ref.kind == "openmm-ml":
        from .openmmml import OpenMMMLPotential

        return OpenMMMLPotential(ref)
    if ref.is_named():
        key = ref.name.strip().lower()
        return (classical if key in classical.NAMES else quantum).make(key, **ref.options)
    return _model_file(ref)


def _model_file(ref: ModelRef) -> Potential:
    """openmlff's exported model, or another code's TorchScript file (no openmlff.json inside)."""
    from ..model_file.reader import ModelFileError, load_model_file
    from .exported import ExportedModel

    if ref.options:
        raise InputError(f"options {sorted(ref.options)} apply to named potentials, openmm-ml:NAME and ase:MODULE:CLASS, "
                         f"not to the model file {ref.name}")
    path = Path(ref.name)
    if not path.exists():
        raise ModelFileError(f"{path.resolve()}: no such model file, and not a potential name "
                             f"({', '.join(potential_names())}, openmm-ml:NAME or ase:MODULE:CLASS)")
    module, metadata = load_model_file(path)  # read once, for either kind
    if metadata is not None:
        return ExportedModel(path, (module, metadata))
    from .torchscript_file import TorchScriptFile

    return TorchScriptFile(path, module)


def potential_names() -> list[str]:
    """Every name get_potential accepts besides a model file, openmm-ml:NAME and ase:MODULE:CLASS."""
    return sorted(classical.NAMES) + sorted(quantum.NAMES)
