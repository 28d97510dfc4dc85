"""`openmlff data info | generate | label`: datasets (openmlff.data, openmlff.reference)."""

from __future__ import annotations

import json
import sys

from ..core.config import add_config_arguments, config_from_args
from ..core.errors import StateError
from .common import load, unit_options


def add_data(data) -> None:
    data_sub = data.add_subparsers(dest="data_command")
    info = data_sub.add_parser("info", help="frames, atoms, elements, units and label ranges of a dataset file")
    info.add_argument("path")
    unit_options(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(handler=_data_info)
    gen = data_sub.add_parser("generate", help="sample a dataset by reference MD (MD17-style)")
    gen.add_argument("--structure", required=True, help="built-in name (aspirin, ac-ala3-nhme, chignolin) or a PDB/XYZ file")
    gen.add_argument("--out", required=True, help="output dataset file (.npz, openmlff format)")
    gen.add_argument("--quiet", action="store_true")
    from ..reference.sampling import SamplingConfig

    add_config_arguments(gen, SamplingConfig, required=("n_frames",),
                         group="sampling settings (openmlff.reference.sampling.SamplingConfig)")
    gen.set_defaults(handler=_data_generate)

    lab = data_sub.add_parser("label", help="label the conformations of a dataset or structure file with a reference method")
    lab.add_argument("--data", required=True, help="dataset or structure file whose frames are labelled")
    unit_options(lab)
    lab.add_argument("--method", default="gfn2-xtb", help="reference method (default gfn2-xtb)")
    lab.add_argument("--out", required=True, help="output dataset file (.npz, openmlff format)")
    lab.add_argument("--work-dir", default=None, help="folder for resumable chunks (default OUT.chunks)")
    from ..reference.labelling import LabellingConfig

    add_config_arguments(lab, LabellingConfig, group="labelling settings (openmlff.reference.labelling.LabellingConfig)")
    lab.add_argument("--quiet", action="store_true")
    lab.set_defaults(handler=_data_label)


def _data_info(args) -> int:
    from ..data import dataset_info, format_dataset_info

    info = dataset_info(args.path, energy_unit=args.file_energy_unit, length_unit=args.file_length_unit)
    print(json.dumps(info, indent=2, default=str) if args.json else format_dataset_info(info))
    return 0


def _data_generate(args) -> int:
    from ..reference.sampling import SamplingConfig, generate_dataset

    config = config_from_args(SamplingConfig, args)
    ds = generate_dataset(args.structure, out=args.out, config=config, progress=not args.quiet)
    print(f"wrote {args.out}: {ds.n_frames} frames of {ds.n_atoms} atoms ({config.method}, {config.temperature_K} K)")
    return 0


def _data_label(args) -> int:
    from ..data import save_dataset
    from ..reference.labelling import LabellingConfig, label_conformations

    source = load(args, args.data)
    work_dir = args.work_dir or f"{args.out}.chunks"
    result = label_conformations(args.method, source.z, source.R, work_dir, config_from_args(LabellingConfig, args),
                                 progress=not args.quiet, name=source.name)
    for failure in result.failures:
        print(f"frame {failure.index} failed: {failure.message}", file=sys.stderr)
    if result.dataset is None:
        raise StateError(f"{args.data}: every frame failed with {args.method}; nothing written")
    save_dataset(result.dataset, args.out)
    print(f"wrote {args.out}: {result.dataset.n_frames} of {source.n_frames} frames labelled with {args.method} "
          f"({len(result.failures)} failed; chunks computed {result.chunks_computed}, reused {result.chunks_reused})")
    return 0 if not result.failures else 3
