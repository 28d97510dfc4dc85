"""A campaign specification: the grid models x starting conformations x temperatures x seeds, read from a file.

The spec file is TOML (read with the standard library's tomllib) or JSON, told by its suffix
(.toml, .json); both give the same tables. Relative paths are resolved against the spec file's
folder. A TOML example (every key but `models` and `starts` has a default):

    name = "aspirin-et-vs-visnet"          # default: the spec file's stem
    seeds = [0, 1, 2]                      # default [0]
    temperatures_K = [300, 500]            # default [300]

    [models]                               # label -> exported TorchScript model
    et = "models/et.pt"
    visnet = "models/visnet.pt"

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

    [reference]                            # optional: where the bond reference lengths come from
    data = "data/rmd17_aspirin.npz"        # default: every frame of the starts' dataset
    frames_from_split = "train"            # (structure starts: the starting structure);
    checkpoint = "training/model.ckpt"     # reference = "start" always uses the starting structure

Frames drawn from a split are the first `count` of a fixed (seed 0) random order of that set, so
raising `count` later adds frames and keeps the earlier ones. Run ids join model label, start,
temperature and seed: `et__frame0120__T500__s1`, stable across re-expansion.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..resume import ABSENT, Difference, resume_differences, short_value
from ..units import FS_IN_PS

SPEC_SUFFIXES = (".toml", ".json")
SPLIT_SETS = ("train", "val", "test")
#: Grid fields kept out of the `md` table.
GRID_FIELDS = ("temperature_K", "seed")
#: Seed of the random order in which frames are drawn from a split set.
FRAME_SELECTION_SEED = 0
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP_LEVEL = ("name", "models", "starts", "seeds", "temperatures_K", "md", "reference")


class CampaignSpecError(InputError):
    """A campaign spec is malformed; the message names the spec file, the field and what was expected."""


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
    model_path: str
    start: str
    temperature_K: float
    seed: int
    md: dict
    data: DatasetFrames | None = None
    frame: int | None = None
    structure: str | None = None
    reference: DatasetFrames | str | None = None

    @property
    def steps(self) -> int:
        return int(md_setting(self.md, "steps"))

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

    models: label -> model file (absolute); starts: DatasetFrames (frames required) or a dict
    start label -> structure name/file; md: SimulationConfig fields (steps resolved from
    length_ps); reference: None (default), "start", or DatasetFrames. source: the file it came from.
    """

    models: dict[str, str]
    starts: DatasetFrames | dict[str, str]
    name: str = "campaign"
    seeds: list[int] = field(default_factory=lambda: [0])
    temperatures_K: list[float] = field(default_factory=lambda: [300.0])
    md: dict = field(default_factory=dict)
    reference: DatasetFrames | str | None = None
    source: str | None = None

    # -- reading -----------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path) -> "CampaignSpec":
        """Read and validate a .toml or .json spec; CampaignSpecError naming the file and the field."""
        path = Path(path).expanduser().resolve()
        if path.suffix.lower() not in SPEC_SUFFIXES:
            raise CampaignSpecError(f"{path}: a campaign spec must be a {' or '.join(SPEC_SUFFIXES)} file")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: campaign spec not found")
        try:
            if path.suffix.lower() == ".toml":
                raw = tomllib.loads(path.read_text(encoding="utf-8"))
            else:
                raw = json.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise CampaignSpecError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
        return _Parser(path).parse(raw)

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> "CampaignSpec":
        """The spec from its normalised dict (to_dict), as stored in a campaign's campaign.json."""
        starts = d["starts"]
        starts = dict(starts["structures"]) if "structures" in starts else DatasetFrames.from_dict(starts)
        ref = d.get("reference")
        return cls(models=dict(d["models"]), starts=starts, name=d["name"], seeds=list(d["seeds"]),
                   temperatures_K=list(d["temperatures_K"]), md=dict(d["md"]),
                   reference=DatasetFrames.from_dict(ref) if isinstance(ref, dict) else ref, source=source)

    # -- writing -----------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain, normalised data (absolute paths, resolved frames): what campaign.json stores and hashes."""
        starts = self.starts.to_dict() if isinstance(self.starts, DatasetFrames) else {"structures": dict(self.starts)}
        ref = self.reference.to_dict() if isinstance(self.reference, DatasetFrames) else self.reference
        return {"name": self.name, "models": dict(self.models), "starts": starts, "seeds": list(self.seeds),
                "temperatures_K": list(self.temperatures_K), "md": dict(self.md), "reference": ref}

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def check_models(self) -> None:
        """Refuse a missing or unreadable model file (CampaignSpecError naming the spec and the field): called
        before a campaign runs, so a bad model fails once, not run by run."""
        from ..model_file import read_model_metadata

        where = self.source or "the campaign spec"
        for label, path in self.models.items():
            if not Path(path).is_file():
                raise CampaignSpecError(f"{where}: field 'models.{label}': {path}: no such model file (expected an "
                                        "exported TorchScript model, .pt)")
            try:
                read_model_metadata(path)
            except InputError as exc:
                raise CampaignSpecError(f"{where}: field 'models.{label}': {exc}") from None

    # -- the grid ----------------------------------------------------------------------------------

    def start_labels(self) -> dict[str, int | str]:
        """Start id -> frame index (dataset starts) or structure name/file."""
        if isinstance(self.starts, DatasetFrames):
            return {frame_label(f): f for f in self.starts.frames}
        return dict(self.starts)

    def expand(self) -> list[RunSpec]:
        """Every run of the grid, in the order models, starts, temperatures, seeds."""
        runs = []
        is_frame = isinstance(self.starts, DatasetFrames)
        for model, model_path in self.models.items():
            for start, where in self.start_labels().items():
                for temperature in self.temperatures_K:
                    for seed in self.seeds:
                        runs.append(RunSpec(
                            run_id=run_id(model, start, temperature, seed), model=model, model_path=model_path,
                            start=start, temperature_K=float(temperature), seed=int(seed), md=dict(self.md),
                            data=self.starts if is_frame else None, frame=int(where) if is_frame else None,
                            structure=None if is_frame else str(where), reference=self.reference))
        return runs

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

    The comparison is openmlff.resume's; only the wording is the campaign's. `md` is compared as full
    SimulationConfigs, so writing a default out does not count as a change.
    """
    a, b = old.to_dict(), new.to_dict()
    a["md"], b["md"] = _full_md(a["md"]), _full_md(b["md"])
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


# --- parsing and validation -----------------------------------------------------------------------

class _Parser:
    """Turns the raw tables of one spec file into a CampaignSpec, or a CampaignSpecError naming the field."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.folder = path.parent

    def error(self, where: str, message: str) -> CampaignSpecError:
        return CampaignSpecError(f"{self.path}: field '{where}': {message}")

    def parse(self, raw) -> CampaignSpec:
        if not isinstance(raw, dict):
            raise CampaignSpecError(f"{self.path}: expected a table of fields at the top level")
        unknown = [k for k in raw if k not in _TOP_LEVEL]
        if unknown:
            raise self.error(unknown[0], f"unknown field; the fields are {list(_TOP_LEVEL)}")
        for required in ("models", "starts"):
            if required not in raw:
                raise CampaignSpecError(f"{self.path}: field '{required}' is missing")
        name = raw.get("name", self.path.stem)
        self.label(name, "name")
        spec = CampaignSpec(
            name=name, models=self.models(raw["models"]), starts=self.starts(raw["starts"]),
            seeds=self.numbers(raw.get("seeds", [0]), "seeds", int),
            temperatures_K=self.numbers(raw.get("temperatures_K", [300.0]), "temperatures_K", float),
            md=self.md(raw.get("md", {})), reference=self.reference(raw.get("reference")), source=str(self.path))
        for s in spec.seeds:
            if not 0 <= s < 2**31 - 1:
                raise self.error("seeds", f"each seed must be in [0, 2**31 - 2], got {s}")
        for t in spec.temperatures_K:
            if not t > 0:
                raise self.error("temperatures_K", f"each temperature must be positive (K), got {t}")
        self.check_md_values(spec)
        return spec

    def label(self, value, where: str) -> str:
        if not isinstance(value, str) or not _LABEL.match(value) or "__" in value:
            raise self.error(where, f"expected a name of letters, digits, '_', '.', '-' (no '__'), got {value!r}")
        return value

    def path_field(self, value, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(where, f"expected a file path (string), got {value!r}")
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (self.folder / p).resolve())

    def models(self, raw) -> dict[str, str]:
        if not isinstance(raw, dict) or not raw:
            raise self.error("models", "expected a non-empty table label -> exported model file (.pt)")
        return {self.label(k, f"models.{k}"): self.path_field(v, f"models.{k}") for k, v in raw.items()}

    def numbers(self, raw, where: str, kind: type) -> list:
        values = raw if isinstance(raw, list) else [raw]
        ok = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if kind is int else \
             (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
        if not values or not all(ok(v) for v in values):
            raise self.error(where, f"expected a non-empty list of {'integers' if kind is int else 'numbers'}, got {raw!r}")
        values = [kind(v) for v in values]
        if len(set(values)) != len(values):
            raise self.error(where, f"holds a value twice: {values}")
        return values

    def starts(self, raw) -> DatasetFrames | dict[str, str]:
        if not isinstance(raw, dict) or ("data" in raw) == ("structures" in raw):
            raise self.error("starts", "expected a table with either 'data' (dataset frames) or 'structures'")
        if "structures" in raw:
            extra = [k for k in raw if k != "structures"]
            if extra:
                raise self.error(f"starts.{extra[0]}", "unknown field next to 'structures'")
            return self.structures(raw["structures"])
        frames = self.dataset_frames(raw, "starts")
        if frames.frames is None:
            raise self.error("starts", "name the starting frames: 'frames' (a list) or 'frames_from_split' with 'checkpoint'")
        return frames

    def structures(self, raw) -> dict[str, str]:
        from ..structures import list_structures

        builtin = set(list_structures())
        if isinstance(raw, list) and raw and all(isinstance(v, str) for v in raw):
            items = [(v.strip().lower() if v.strip().lower() in builtin else Path(v).stem, v) for v in raw]
        elif isinstance(raw, dict) and raw:
            items = list(raw.items())
        else:
            raise self.error("starts.structures", "expected a non-empty list of built-in names or files, "
                             "or a table label -> name/file")
        out: dict[str, str] = {}
        for label, value in items:
            where = f"starts.structures.{label}"
            if label in out:
                raise self.error("starts.structures", f"two entries give the start id {label!r}; use a table to name them")
            self.label(label, where)
            if not isinstance(value, str):
                raise self.error(where, f"expected a built-in name or a file, got {value!r}")
            out[label] = value.strip().lower() if value.strip().lower() in builtin else self.path_field(value, where)
        return out

    def dataset_frames(self, raw: dict, where: str) -> DatasetFrames:
        allowed = ("data", "frames", "frames_from_split", "checkpoint", "count", "energy_unit", "length_unit")
        unknown = [k for k in raw if k not in allowed]
        if unknown:
            raise self.error(f"{where}.{unknown[0]}", f"unknown field; expected some of {list(allowed)}")
        data = self.path_field(raw.get("data"), f"{where}.data")
        units = {}
        for key in ("energy_unit", "length_unit"):
            if raw.get(key) is not None:
                if not isinstance(raw[key], str):
                    raise self.error(f"{where}.{key}", f"expected a unit name, got {raw[key]!r}")
                units[key] = raw[key]
        if "frames" in raw and "frames_from_split" in raw:
            raise self.error(where, "give either 'frames' or 'frames_from_split', not both")
        if "frames" in raw:
            for key in ("checkpoint", "count"):
                if key in raw:
                    raise self.error(f"{where}.{key}", "belongs with 'frames_from_split', not with 'frames'")
            frames = raw["frames"]
            if not isinstance(frames, list) or not frames or not all(
                    isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in frames):
                raise self.error(f"{where}.frames", f"expected a non-empty list of frame indices (integers >= 0), got {frames!r}")
            if len(set(frames)) != len(frames):
                raise self.error(f"{where}.frames", f"holds a frame twice: {frames}")
            return DatasetFrames(data=data, frames=tuple(frames), **units)
        if "frames_from_split" not in raw:
            for key in ("checkpoint", "count"):
                if key in raw:
                    raise self.error(f"{where}.{key}", "belongs with 'frames_from_split'")
            return DatasetFrames(data=data, **units)
        return self.split_frames(raw, where, data, units)

    def split_frames(self, raw: dict, where: str, data: str, units: dict) -> DatasetFrames:
        subset = raw["frames_from_split"]
        if subset not in SPLIT_SETS:
            raise self.error(f"{where}.frames_from_split", f"expected one of {list(SPLIT_SETS)}, got {subset!r}")
        if "checkpoint" not in raw:
            raise self.error(f"{where}.checkpoint", "missing: 'frames_from_split' needs the training checkpoint "
                             "(or split .json file) that holds the split")
        checkpoint = self.path_field(raw["checkpoint"], f"{where}.checkpoint")
        indices, fingerprint = self.read_split(checkpoint, subset, f"{where}.checkpoint")
        count = raw.get("count")
        if count is not None:
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise self.error(f"{where}.count", f"expected a positive integer, got {count!r}")
            if count > indices.size:
                raise self.error(f"{where}.count", f"asks for {count} frames, but the '{subset}' set of "
                                 f"{checkpoint} has {indices.size}")
            order = np.random.default_rng(FRAME_SELECTION_SEED).permutation(indices)
            indices = np.sort(order[:count])
        return DatasetFrames(data=data, frames=tuple(int(i) for i in indices), frames_from_split=subset,
                             checkpoint=checkpoint, count=count, data_fingerprint=fingerprint, **units)

    def read_split(self, checkpoint: str, subset: str, where: str) -> tuple[np.ndarray, str | None]:
        """The sorted frame indices of `subset` in a training checkpoint or split .json, and the data fingerprint."""
        from ..training.checkpoint import read_split

        path = Path(checkpoint)
        if not path.is_file():
            raise self.error(where, f"{path} does not exist")
        try:
            split, fingerprint = read_split(path)
        except InputError as exc:
            raise self.error(where, str(exc)) from None
        return np.sort(np.asarray(getattr(split, subset), dtype=np.int64)), fingerprint

    def md(self, raw) -> dict:
        from ..md.config import SimulationConfig

        if not isinstance(raw, dict):
            raise self.error("md", f"expected a table of SimulationConfig fields, got {raw!r}")
        known = {f.name: f.type for f in fields(SimulationConfig) if f.name not in GRID_FIELDS}
        md = {}
        for key, value in raw.items():
            if key in GRID_FIELDS:
                grid = "temperatures_K" if key == "temperature_K" else "seeds"
                raise self.error(f"md.{key}", f"is set by the grid: use the top-level '{grid}' list")
            if key == "length_ps":
                continue
            if key not in known:
                raise self.error(f"md.{key}", f"not a SimulationConfig field; the fields are {sorted(known)} "
                                 "(and length_ps)")
            if not _matches_annotation(value, known[key]):
                raise self.error(f"md.{key}", f"expected {known[key]}, got {value!r}")
            md[key] = value
        if "length_ps" in raw:
            if "steps" in raw:
                raise self.error("md.length_ps", "give either 'steps' or 'length_ps', not both")
            length = raw["length_ps"]
            if not isinstance(length, (int, float)) or isinstance(length, bool) or not length > 0:
                raise self.error("md.length_ps", f"expected a positive number of ps, got {length!r}")
            timestep_fs = md.get("timestep_fs", SimulationConfig.timestep_fs)
            md["steps"] = int(round(length / (timestep_fs * FS_IN_PS)))
        return md

    def check_md_values(self, spec: CampaignSpec) -> None:
        """Build one SimulationConfig per temperature, so a bad value fails now, naming the field."""
        from ..config import ConfigError

        for temperature in spec.temperatures_K:
            try:
                RunSpec("check", "m", "", "s", temperature, spec.seeds[0], spec.md).simulation_config()
            except ConfigError as exc:
                raise self.error(f"md.{exc.field}", str(exc)) from None
            except TypeError as exc:
                raise self.error("md", str(exc)) from None

    def reference(self, raw) -> DatasetFrames | str | None:
        if raw is None or raw == "start":
            return raw
        if not isinstance(raw, dict):
            raise self.error("reference", f"expected \"start\" or a table with 'data' (and frames), got {raw!r}")
        return self.dataset_frames(raw, "reference")


_ANNOTATION_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),)}


def _matches_annotation(value, annotation: str) -> bool:
    """Whether `value` fits a simple annotation like 'int', 'float | None', 'str' (others are not checked)."""
    names = [part.strip() for part in str(annotation).split("|")]
    if not all(n in _ANNOTATION_TYPES for n in names):
        return True
    if isinstance(value, bool) and "bool" not in names:
        return False
    return any(isinstance(value, t) for n in names for t in _ANNOTATION_TYPES[n])
