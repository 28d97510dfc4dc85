"""A campaign specification: the grid models x starting conformations x temperatures x seeds, read from a file.

The spec file is TOML (read with the standard library's tomllib) or JSON, told by its suffix
(.toml, .json); both give the same tables. Relative paths are resolved against the spec file's
folder. A TOML example (every key but `models` and `starts` has a default):

    name = "aspirin-et-vs-visnet"          # default: the spec file's stem
    seeds = [0, 1, 2]                      # default [0]
    temperatures_K = [300, 500]            # default [300]

    [models]                               # label -> model (openmlff.potentials.model_ref):
    et = "models/et.pt"                    #   an exported model, or another code's TorchScript
    visnet = "models/visnet.pt"            #   file (TorchForce contract), or a name (amber14)
    # [models.mace]                        # a model of another code, with options (files
    # potential = "openmm-ml:mace"         #   resolved against this folder); openmm-ml:NAME
    # modelPath = "models/aspirin.model"   #   and ase:MODULE:CLASS need --allow-model-code

    [starts]                               # dataset frames ...
    data = "data/rmd17_aspirin.npz"
    frames = [0, 120, 480]                 # ... listed, or drawn from a training split:
    # frames_from_split = "test"           #   'train', 'val' or 'test' of
    # checkpoint = "training/model.ckpt"   #   a training checkpoint (or a split .json file)
    # count = 8                            #   how many (default: all of that set)
    # energy_unit / length_unit            #   the data file's units, when it cannot tell
    # structures = ["aspirin", "x.pdb"]    # ... or structures: built-in names or files
    #                                      #   (a table label -> name/file names them)

    [md]                                   # any openmlff.md.SimulationConfig field but
    timestep_fs = 0.5                      # temperature_K and seed (those are the grid);
    steps = 20000                          # or length_ps = 10 instead of steps
    platform = "CPU"
    # replicas_per_context = 8             # runs per OpenMM Context (openmlff.campaign.batches; 1: alone;
    #                                      #   default: batched where benchmarks/replicas.py measured it faster)

    [reference]                            # optional: where the bond reference lengths come from
    data = "data/rmd17_aspirin.npz"        # default: every frame of the starts' dataset
    frames_from_split = "train"            # (structure starts: the starting structure);
    checkpoint = "training/model.ckpt"     # reference = "start" always uses the starting structure

    [trust]                                # optional: a committee evaluated at each report (openmlff.md.trust)
    committee = "models/committee.pt"      # `openmlff export --committee ...`, or a list of models
    threshold_kcal_per_mol_per_A = 5.0     # untrusted above this force spread (first_untrusted_time_ps)
    stop_when_untrusted = false            # true: end each run at its first untrusted report

This module holds the spec's data (DatasetFrames, RunSpec, CampaignSpec), its grid and what may change
in an existing campaign; reading and validating a file is openmlff.campaign.spec_file's.

Frames drawn from a split are the first `count` of a fixed (seed 0) random order of that set, so
raising `count` later adds frames and keeps the earlier ones. Run ids join model label, start,
temperature and seed: `et__frame0120__T500__s1`, stable across re-expansion.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..core.errors import InputError
from ..core.resume import ABSENT, Difference, resume_differences, short_value
from .spec_file import GRID_FIELDS, CampaignSpecError, read_spec_file


@dataclass(frozen=True)
class DatasetFrames:
    """Frames of a dataset file: `frames` (resolved indices; None = every frame) and how they were chosen.

    frames_from_split / checkpoint / count: the split set they were drawn from; data_fingerprint:
    the fingerprint of the data that split was drawn for (from the checkpoint), checked when the
    data are loaded. energy_unit / length_unit: the data file's units when it cannot tell.
    """

    data: str
    frames: tuple[int, ...] | None = None
    frames_from_split: str | None = None
    checkpoint: str | None = None
    count: int | None = None
    data_fingerprint: str | None = None
    energy_unit: str | None = None
    length_unit: str | None = None

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["frames"] = None if self.frames is None else list(self.frames)
        return {k: v for k, v in out.items() if v is not None or k == "frames"}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetFrames":
        frames = d.get("frames")
        return cls(**{**d, "frames": None if frames is None else tuple(int(f) for f in frames)})


@dataclass(frozen=True)
class RunSpec:
    """One MD run of a campaign: which model, from where, at which temperature and seed, with which settings.

    The start is frame `frame` of `data`, or `structure` (a built-in name or a file path).
    reference: the bond reference frames (None: the default of the start; "start": the starting
    structure). md: SimulationConfig fields other than temperature_K and seed.
    """

    run_id: str
    model: str
    model_path: str | dict  # the model as the spec names it (potentials.model_ref.ModelRef.to_value)
    start: str
    temperature_K: float
    seed: int
    md: dict
    data: DatasetFrames | None = None
    frame: int | None = None
    structure: str | None = None
    reference: DatasetFrames | str | None = None
    trust: dict | None = None

    @property
    def steps(self) -> int:
        return int(md_setting(self.md, "steps"))

    def trust_settings(self):
        """The run's openmlff.md.trust.TrustSettings (None without a [trust] table)."""
        if self.trust is None:
            return None
        from ..md.trust import TrustSettings

        committee = self.trust["committee"]
        committee = tuple(committee) if isinstance(committee, list) else Path(committee)
        return TrustSettings(committee, self.trust.get("threshold_kcal_per_mol_per_A"),
                             bool(self.trust.get("stop_when_untrusted", False)))

    def simulation_config(self, torch_threads: int | None = None):
        """The SimulationConfig of this run; torch_threads fills that field when the spec leaves it unset."""
        from ..md.config import SimulationConfig

        md = dict(self.md)
        if md.get("torch_threads") is None and torch_threads is not None:
            md["torch_threads"] = int(torch_threads)
        return SimulationConfig(**md, temperature_K=self.temperature_K, seed=self.seed)


@dataclass
class CampaignSpec:
    """A declared grid of MD runs (see the module docstring for the file format).

    models: label -> model as named (a file, absolute; a name; or {"potential": ..., options}); starts:
    DatasetFrames (frames required) or start label -> structure name/file; md: SimulationConfig fields (steps
    resolved from length_ps); reference: None (default), "start", or DatasetFrames; source: the file it came from.
    replicas_per_context (None: the measured default) is how runs are executed, not what they are: it may change
    in an existing campaign (planned batches stay).
    """

    models: dict[str, str | dict]
    starts: DatasetFrames | dict[str, str]
    name: str = "campaign"
    seeds: list[int] = field(default_factory=lambda: [0])
    temperatures_K: list[float] = field(default_factory=lambda: [300.0])
    md: dict = field(default_factory=dict)
    reference: DatasetFrames | str | None = None
    source: str | None = None
    trust: dict | None = None
    replicas_per_context: int | None = None

    # -- reading -----------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path) -> "CampaignSpec":
        """Read and validate a .toml or .json spec (spec_file.read_spec_file); CampaignSpecError naming the field."""
        path = Path(path).expanduser().resolve()
        return cls.from_dict(read_spec_file(path), source=str(path))

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> "CampaignSpec":
        """The spec from its normalised dict (to_dict), as stored in a campaign's campaign.json."""
        starts = d["starts"]
        starts = dict(starts["structures"]) if "structures" in starts else DatasetFrames.from_dict(starts)
        ref = d.get("reference")
        return cls(models=dict(d["models"]), starts=starts, name=d["name"], seeds=list(d["seeds"]),
                   temperatures_K=list(d["temperatures_K"]), md=dict(d["md"]),
                   reference=DatasetFrames.from_dict(ref) if isinstance(ref, dict) else ref, source=source,
                   trust=d.get("trust"), replicas_per_context=d.get("replicas_per_context"))

    # -- writing -----------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain, normalised data (absolute paths, resolved frames): what campaign.json stores and hashes."""
        starts = self.starts.to_dict() if isinstance(self.starts, DatasetFrames) else {"structures": dict(self.starts)}
        ref = self.reference.to_dict() if isinstance(self.reference, DatasetFrames) else self.reference
        out = {"name": self.name, "models": dict(self.models), "starts": starts, "seeds": list(self.seeds),
               "temperatures_K": list(self.temperatures_K), "md": dict(self.md), "reference": ref}
        if self.trust is not None:  # absent, not None, so that campaign.json of campaigns without one is unchanged
            out["trust"] = dict(self.trust)
        if self.replicas_per_context is not None:  # likewise
            out["replicas_per_context"] = int(self.replicas_per_context)
        return out

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def check_models(self) -> None:
        """Refuse a missing or unreadable model file, or one whose atoms are not the starts' (CampaignSpecError
        naming the spec and the field): called before a campaign runs, so a bad model fails once, not run by run."""
        from ..potentials import get_potential
        from ..potentials.model_ref import ModelRef

        where = self.source or "the campaign spec"
        starts = self._start_atoms()
        for label, value in self.models.items():
            ref = ModelRef.from_value(value, f"models.{label}")
            if ref.is_file() and not Path(ref.name).is_file():
                raise CampaignSpecError(f"{where}: field 'models.{label}': {ref.name}: no such model file (expected an "
                                        "exported TorchScript model, .pt)")
            try:
                ref.check_consent(f"{where}: field 'models.{label}'")
                model = get_potential(ref)
                for start, atomic_numbers in starts:
                    model.check_atoms(atomic_numbers, where=start)
            except InputError as exc:
                raise CampaignSpecError(f"{where}: field 'models.{label}': {exc}") from None

    def _start_atoms(self) -> list[tuple[str, object]]:
        """(where, atomic numbers) of the starts: the dataset's, or each structure's (their own errors name them)."""
        if isinstance(self.starts, DatasetFrames):
            from ..data import load_dataset

            data = load_dataset(self.starts.data, energy_unit=self.starts.energy_unit,
                                length_unit=self.starts.length_unit)
            return [(f"starts.data {self.starts.data}", data.z)]
        from ..structures import load_structure

        return [(f"starts.structures.{label} ({name})", load_structure(name).atomic_numbers)
                for label, name in self.starts.items()]

    # -- the grid ----------------------------------------------------------------------------------

    def start_labels(self) -> dict[str, int | str]:
        """Start id -> frame index (dataset starts) or structure name/file."""
        if isinstance(self.starts, DatasetFrames):
            return {frame_label(f): f for f in self.starts.frames}
        return dict(self.starts)

    def expand(self) -> list[RunSpec]:
        """Every run of the grid, in the order models, starts, temperatures, seeds."""
        is_frame = isinstance(self.starts, DatasetFrames)
        grid = itertools.product(self.models.items(), self.start_labels().items(), self.temperatures_K, self.seeds)
        return [RunSpec(run_id=run_id(model, start, temperature, seed), model=model, model_path=model_path,
                        start=start, temperature_K=float(temperature), seed=int(seed), md=dict(self.md),
                        data=self.starts if is_frame else None, frame=int(where) if is_frame else None,
                        structure=None if is_frame else str(where), reference=self.reference, trust=self.trust)
                for (model, model_path), (start, where), temperature, seed in grid]

    @property
    def steps(self) -> int:
        """MD steps per run (SimulationConfig's default when the spec names none)."""
        return int(md_setting(self.md, "steps"))

    @property
    def timestep_fs(self) -> float:
        return float(md_setting(self.md, "timestep_fs"))


def md_setting(md: dict, name: str):
    """The value of SimulationConfig field `name` in an `md` table, or the field's default."""
    from ..md.config import SimulationConfig

    return md.get(name, getattr(SimulationConfig, name))


def frame_label(frame: int) -> str:
    return f"frame{int(frame):04d}"


def run_id(model: str, start: str, temperature_K: float, seed: int) -> str:
    """`model__start__T<K>__s<seed>`, e.g. `et__frame0123__T500__s0` (temperature as %g)."""
    return f"{model}__{start}__T{float(temperature_K):g}__s{int(seed)}"


# --- what may change in an existing campaign ------------------------------------------------------

#: Fields that may grow in an existing campaign: lists (entries added), tables (keys added), numbers (raised).
GROWABLE_FIELDS = ("models", "seeds", "temperatures_K", "starts.frames", "starts.structures", "starts.count",
                   "md.steps")


def spec_changes(old: CampaignSpec, new: CampaignSpec) -> list[str]:
    """What `new` changes in `old` beyond additions (GROWABLE_FIELDS), one "'field': recorded X, now Y" per change.

    The comparison is openmlff.core.resume's; only the wording is the campaign's. `md` is compared as full
    SimulationConfigs, so writing a default out does not count as a change.
    """
    a, b = old.to_dict(), new.to_dict()
    a["md"], b["md"] = _full_md(a["md"]), _full_md(b["md"])
    for d in (a, b):  # how runs are executed, not what they are: batches.py keeps the planned batches
        d.pop("replicas_per_context", None)
    return [_describe(d) for d in resume_differences(a, b, may_grow=GROWABLE_FIELDS)]


def _full_md(md: dict) -> dict:
    from dataclasses import asdict

    from ..md.config import SimulationConfig

    config = asdict(SimulationConfig(**md))
    return {k: v for k, v in config.items() if k not in GRID_FIELDS}


def _describe(d: Difference) -> str:
    if d.recorded is ABSENT or d.now is ABSENT:
        return f"'{d.field}': {'added' if d.recorded is ABSENT else 'removed'}"
    if d.shrunk and d.removed:
        return f"'{d.field}': {short_value(d.removed)} removed"
    return f"'{d.field}': recorded {short_value(d.recorded)}, now {short_value(d.now)}" + (
        " (it may only grow)" if d.shrunk else "")
