"""The `openmlff` command: thin argparse wrappers around the package's functions, a module per command group.

Forms scripts rely on (keep them): `data info PATH`, `train --data PATH --model et --out DIR`,
`export CHECKPOINT --out FILE.pt`, `metrics --model FILE.pt --data PATH --out FILE.json`,
`simulate --model FILE.pt (--data PATH --frame I | --structure FILE) --temperature K --timestep FS
--steps N --out RUNDIR`, `finetune CHECKPOINT --reweight frames|clusters --out DIR [--time-budget S]`,
`recruit CHECKPOINT --pool PATH --count N --strategy clusters|frames|random --out FILE`,
`train --continue-from CHECKPOINT --add-data FILE ...`; `--model` of metrics and simulate also takes
`amber14`, `gaff-2.11`, `gfn2-xtb`, `gfn1-xtb`, `dft` (openmlff.potentials).

One spelling per concept: a setting's flag is its config field's name with the unit in it (`--timestep-fs`,
`--temperature-K`, `--time-budget-s`, `--learning-rate`, `--torch-threads`); the older short forms
(`--timestep`, `--temperature`, `--time-budget`, `--lr`, `--threads`) stay as aliases. Only the command
that runs has its options built (its module imported), so `openmlff --help` imports neither torch nor OpenMM.
"""

from __future__ import annotations

import sys
import warnings
from importlib import import_module

from ..core.errors import OpenMLFFError, describe_os_error
from .common import OneLineParser

#: command -> (the module of cli/ that adds its options, its one-line help): `openmlff --help` reads only this.
COMMANDS = {
    "data": ("data", "inspect, generate and label datasets"),
    "train": ("training", "train a model; writes DIR/model.ckpt (resumes an interrupted run)"),
    "finetune": ("training", "fine-tune a trained model with sample weights from its own errors"),
    "active-learn": ("training", "committee MD, label the most uncertain frames, retrain; N rounds"),
    "recruit": ("training", "pick labelled frames the model has not seen where its errors are large"),
    "export": ("training", "export a checkpoint (or a committee of them) to a TorchScript file (nm in, kJ/mol out)"),
    "metrics": ("evaluation", "force metrics of a model (or a classical force field, or xTB/DFT) on a dataset"),
    "analyze": ("evaluation", "analyse an MD run directory, or a trajectory of another engine: bonds, h(r), RDF, "
                              "RMSD, Rg, dihedrals, collapse diagnosis"),
    "simulate": ("simulation", "MD with a model (or a classical force field, or xTB/DFT) in OpenMM; resumes an "
                               "unfinished run directory"),
    "campaign": ("campaign", "stability campaigns: a grid of MD runs in a local pool or on Dask"),
    "correlate": ("evaluation", "correlate each force metric with MD stability over a campaign's runs"),
}


def main(argv: list[str] | None = None) -> int:
    command = "openmlff"
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser(commands=[name for name in argv[:1] if name in COMMANDS])
        args = parser.parse_args(argv)
        command = f"openmlff {args.command}" if getattr(args, "command", None) else command
        if not hasattr(args, "handler"):
            parser.print_help()
            return 2
        from ..core.threads import configure_process

        configure_process()  # OMP_WAIT_POLICY before torch's OpenMP starts (openmlff.core.threads)
        warnings.formatwarning = _one_line_warning
        return _run(args)
    except KeyboardInterrupt:  # Ctrl-C, also while torch is being imported: what is written stays, and resumes
        print(f"{command}: interrupted; what was written is kept, and the same command resumes", file=sys.stderr)
        return 130


def build_parser(commands=None) -> OneLineParser:
    """The `openmlff` parser; only the `commands` named (default: all) get their options and handlers, the others
    are listed with their help (so that parsing one command imports only its module)."""
    p = OneLineParser(prog="openmlff", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        parser = sub.add_parser(name, help=help_text, description=help_text)
        if commands is None or name in commands:
            getattr(import_module(f".{module}", __name__), "add_" + name.replace("-", "_"))(parser)
    return p


def _run(args) -> int:
    """The command's handler; a user error or a file-system error as one line (exit 1), a bug as a traceback."""
    try:
        return int(args.handler(args) or 0)
    except (OpenMLFFError, OSError) as exc:
        message = exc if isinstance(exc, OpenMLFFError) else describe_os_error(exc)  # an OSError: 'PATH: reason'
        print(f"openmlff {args.command}: error: {message}", file=sys.stderr)
        return 1


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line, 'warning: MESSAGE' (openmlff's warnings name their file), no source line under it."""
    return f"warning: {message}\n"
