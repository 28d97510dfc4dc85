"""What every command group of the CLI shares: the parser class, the model and unit options, reading data."""

from __future__ import annotations

import argparse

from ..core.errors import InputError

MODEL_HELP = ("an exported model file (.pt), another code's TorchScript file (openmm-torch's TorchForce contract), "
              "'openmm-ml:NAME' (nequip, mace, torchmdnet, ...) or 'ase:MODULE:CLASS' (any ASE calculator) with "
              "--model-option, a classical force field 'amber14' (ff14SB; peptides) or 'gaff-2.11' "
              "(GAFF 2.11 + AM1-BCC; small molecules; needs the [classical] extra), or a reference method "
              "'gfn2-xtb', 'gfn1-xtb', 'dft' (PySCF PBE/def2-SVP)")
THREADS_HELP = "torch threads (default: openmlff.core.threads' choice)"


class OneLineParser(argparse.ArgumentParser):
    """argparse with a usage error as one line (the usage is a --help away), exit status 2 as argparse's."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def threads_option(p: argparse.ArgumentParser) -> None:
    """--torch-threads (alias --threads), stored as `threads`."""
    p.add_argument("--torch-threads", "--threads", dest="threads", type=int, default=None, help=THREADS_HELP)


def model_arguments(p: argparse.ArgumentParser, options: bool = True) -> None:
    """--model-option KEY=VALUE (repeatable) and --allow-model-code (openmlff.potentials.model_ref)."""
    if options:
        p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an option of the model (repeatable): openmm-ml's (modelPath=FILE, ...) or the ASE "
                            "calculator's keyword arguments; VALUE is read as JSON when it is JSON")
    p.add_argument("--allow-model-code", action="store_true",
                   help="consent to models that run code: ase:MODULE:CLASS imports MODULE, openmm-ml backends "
                        "unpickle their model files (only for files you trust)")


def model_ref(args, name=None):
    """The ModelRef of --model/--model-option (None without a model), and --allow-model-code for the workers."""
    import os

    from ..potentials.model_ref import CODE_CONSENT_ENV, ModelRef, parse_model_options

    if getattr(args, "allow_model_code", False):
        os.environ[CODE_CONSENT_ENV] = "1"  # pool workers inherit the consent
    name = args.model if name is None else name
    options = parse_model_options(getattr(args, "model_option", []))
    if not name:
        if options:
            raise InputError("--model-option needs --model")
        return None
    return ModelRef(name, options)


def unit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--energy-unit-in-file", dest="file_energy_unit", default=None,
                   help="energy unit of the data file when it cannot be told (eV, kcal/mol, kJ/mol, Hartree)")
    p.add_argument("--length-unit-in-file", dest="file_length_unit", default=None,
                   help="length unit of the data file when it cannot be told (Å, nm, Bohr)")


def load(args, path):
    """The dataset at `path`, with the units of --energy-unit-in-file / --length-unit-in-file."""
    from ..data import load_dataset

    return load_dataset(path, energy_unit=args.file_energy_unit, length_unit=args.file_length_unit)
