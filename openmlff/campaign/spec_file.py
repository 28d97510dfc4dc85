"""Reading a campaign spec file (TOML or JSON) into the normalised spec dict, each field validated.

The file format is described in openmlff.campaign.spec; this module turns the raw tables into the
plain dict that CampaignSpec.from_dict takes (and campaign.json stores), or raises
CampaignSpecError naming the file, the field and what was expected.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.units import FS_IN_PS

SPEC_SUFFIXES = (".toml", ".json")
SPLIT_SETS = ("train", "val", "test")
#: Grid fields kept out of the `md` table.
GRID_FIELDS = ("temperature_K", "seed")
#: Seed of the random order in which frames are drawn from a split set.
FRAME_SELECTION_SEED = 0
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP_LEVEL = ("name", "models", "starts", "seeds", "temperatures_K", "md", "reference", "trust")
_TRUST_FIELDS = ("committee", "threshold_kcal_per_mol_per_A", "stop_when_untrusted")


class CampaignSpecError(InputError):
    """A campaign spec is malformed; the message names the spec file, the field and what was expected."""


def read_spec_file(path) -> dict:
    """The normalised spec dict of a .toml or .json spec file (relative paths resolved against its folder)."""
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
    except UnicodeDecodeError as exc:
        raise CampaignSpecError(f"{path}: not UTF-8 text (byte {exc.start}); expected a {path.suffix[1:].upper()} "
                                "file") from None
    return _Parser(path).parse(raw)


class _Parser:
    """Turns the raw tables of one spec file into the normalised spec dict, or a CampaignSpecError naming the field."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.folder = path.parent

    def error(self, where: str, message: str) -> CampaignSpecError:
        return CampaignSpecError(f"{self.path}: field '{where}': {message}")

    def parse(self, raw) -> dict:
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
        spec = {"name": name, "models": self.models(raw["models"]), "starts": self.starts(raw["starts"]),
                "seeds": self.numbers(raw.get("seeds", [0]), "seeds", int),
                "temperatures_K": self.numbers(raw.get("temperatures_K", [300.0]), "temperatures_K", float),
                "md": self.md(raw.get("md", {})), "reference": self.reference(raw.get("reference"))}
        for s in spec["seeds"]:
            if not 0 <= s < 2**31 - 1:
                raise self.error("seeds", f"each seed must be in [0, 2**31 - 2], got {s}")
        for t in spec["temperatures_K"]:
            if not t > 0:
                raise self.error("temperatures_K", f"each temperature must be positive (K), got {t}")
        if raw.get("trust") is not None:
            spec["trust"] = self.trust(raw["trust"])
        replicas = self.replicas_per_context(raw.get("md", {}), "trust" in spec)
        if replicas is not None:
            spec["replicas_per_context"] = replicas
        self.check_md_values(spec)
        return spec

    def trust(self, raw) -> dict:
        """[trust]: a committee file evaluated at each report of every run (openmlff.md.trust)."""
        if not isinstance(raw, dict) or "committee" not in raw:
            raise self.error("trust", "expected a table with 'committee' (a committee .pt file, or a list of two or more "
                                      "models) and optionally "
                                      "'threshold_kcal_per_mol_per_A' and 'stop_when_untrusted'")
        unknown = [k for k in raw if k not in _TRUST_FIELDS]
        if unknown:
            raise self.error(f"trust.{unknown[0]}", f"unknown field; the fields are {list(_TRUST_FIELDS)}")
        threshold = raw.get("threshold_kcal_per_mol_per_A")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not threshold > 0):
            raise self.error("trust.threshold_kcal_per_mol_per_A", f"expected a positive force spread, got {threshold!r}")
        stop = raw.get("stop_when_untrusted", False)
        if not isinstance(stop, bool) or (stop and threshold is None):
            raise self.error("trust.stop_when_untrusted", "expected true or false; true needs a threshold")
        committee = raw["committee"]
        if isinstance(committee, list):  # two or more models, each as [models] takes them
            if len(committee) < 2:
                raise self.error("trust.committee", "a list of models needs two or more members")
            committee = [self.model(m, f"trust.committee[{k}]") for k, m in enumerate(committee)]
        else:
            committee = self.path_field(committee, "trust.committee")
        return {"committee": committee,
                "threshold_kcal_per_mol_per_A": None if threshold is None else float(threshold),
                "stop_when_untrusted": stop}

    def label(self, value, where: str) -> str:
        if not isinstance(value, str) or not _LABEL.match(value) or "__" in value:
            raise self.error(where, f"expected a name of letters, digits, '_', '.', '-' (no '__'), got {value!r}")
        return value

    def path_field(self, value, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(where, f"expected a file path (string), got {value!r}")
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (self.folder / p).resolve())

    def models(self, raw) -> dict:
        if not isinstance(raw, dict) or not raw:
            raise self.error("models", "expected a non-empty table label -> model (a model file, a name, "
                                       "'openmm-ml:NAME' or 'ase:MODULE:CLASS', or a table with 'potential' and options)")
        return {self.label(k, f"models.{k}"): self.model(v, f"models.{k}") for k, v in raw.items()}

    def model(self, value, where: str):
        """A model (potentials.model_ref.ModelRef.to_value): file paths, and options that name files
        (model_ref.is_path_option), resolved against the spec's folder."""
        from ..potentials.model_ref import ModelRef, is_path_option

        if isinstance(value, dict):
            if not isinstance(value.get("potential"), str) or not value["potential"].strip():
                raise self.error(where, "a model table needs 'potential' (a model file, a name, 'openmm-ml:NAME' or "
                                        "'ase:MODULE:CLASS'); its other keys are the model's options")
            out = {"potential": self.model(value["potential"], f"{where}.potential")}
            training = value.get("training")
            if training is not None:
                if not isinstance(training, dict) or "data" not in training or set(training) - {"data", "split"}:
                    raise self.error(f"{where}.training", "expected a table with 'data' (the file the model was "
                                                          "trained on) and optionally 'split' (a split .json file)")
                out["training"] = {k: self.path_field(v, f"{where}.training.{k}") for k, v in training.items()}
            for key, option in value.items():
                if key == "training":
                    continue
                if key != "potential" and is_path_option(key):
                    option = [self.path_field(v, f"{where}.{key}") for v in option] if isinstance(option, list) \
                        else self.path_field(option, f"{where}.{key}")
                out.setdefault(key, option)
            return out
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, f"expected a model (a file, a name, 'openmm-ml:NAME' or 'ase:MODULE:CLASS') or a "
                                    f"table with 'potential', got {value!r}")
        return self.path_field(value, where) if ModelRef(value).is_file() else value.strip()

    def numbers(self, raw, where: str, kind: type) -> list:
        values = raw if isinstance(raw, list) else [raw]
        ok = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if kind is int else _finite_number
        if not values or not all(ok(v) for v in values):
            raise self.error(where, f"expected a non-empty list of {'integers' if kind is int else 'finite numbers'}, "
                                    f"got {raw!r}")
        values = [kind(v) for v in values]
        if len(set(values)) != len(values):
            raise self.error(where, f"holds a value twice: {values}")
        return values

    def starts(self, raw) -> dict:
        if not isinstance(raw, dict) or ("data" in raw) == ("structures" in raw):
            raise self.error("starts", "expected a table with either 'data' (dataset frames) or 'structures'")
        if "structures" in raw:
            extra = [k for k in raw if k != "structures"]
            if extra:
                raise self.error(f"starts.{extra[0]}", "unknown field next to 'structures'")
            return {"structures": self.structures(raw["structures"])}
        frames = self.dataset_frames(raw, "starts")
        if frames["frames"] is None:
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

    def dataset_frames(self, raw: dict, where: str) -> dict:
        """The fields of a DatasetFrames (openmlff.campaign.spec) as a dict."""
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
        if "frames_from_split" in raw:
            return self.split_frames(raw, where, data, units)
        misplaced = [k for k in ("checkpoint", "count") if k in raw]
        if misplaced:
            raise self.error(f"{where}.{misplaced[0]}", "belongs with 'frames_from_split'"
                             + (", not with 'frames'" if "frames" in raw else ""))
        if "frames" not in raw:
            return {"data": data, "frames": None, **units}
        frames = raw["frames"]
        if not isinstance(frames, list) or not frames or not all(
                isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in frames):
            raise self.error(f"{where}.frames", "expected a non-empty list of frame indices (integers >= 0), "
                                                f"got {frames!r}")
        if len(set(frames)) != len(frames):
            raise self.error(f"{where}.frames", f"holds a frame twice: {frames}")
        return {"data": data, "frames": list(frames), **units}

    def split_frames(self, raw: dict, where: str, data: str, units: dict) -> dict:
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
        return {"data": data, "frames": [int(i) for i in indices], "frames_from_split": subset,
                "checkpoint": checkpoint, "count": count, "data_fingerprint": fingerprint, **units}

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
            if key in ("length_ps", "replicas_per_context"):
                continue
            if key not in known:
                raise self.error(f"md.{key}", f"not a SimulationConfig field; the fields are {sorted(known)} "
                                 "(and length_ps, replicas_per_context)")
            if not _matches_annotation(value, known[key]):
                raise self.error(f"md.{key}", f"expected {known[key]}, got {value!r}")
            md[key] = value
        if "length_ps" in raw:
            if "steps" in raw:
                raise self.error("md.length_ps", "give either 'steps' or 'length_ps', not both")
            length = raw["length_ps"]
            if not _finite_number(length) or not length > 0:
                raise self.error("md.length_ps", f"expected a positive number of ps, got {length!r}")
            timestep_fs = md.get("timestep_fs", SimulationConfig.timestep_fs)
            md["steps"] = int(round(length / (timestep_fs * FS_IN_PS)))
            if md["steps"] < 1 and _finite_number(timestep_fs) and timestep_fs > 0:
                raise self.error("md.length_ps", f"{length!r} ps is less than one step of {timestep_fs} fs; expected "
                                                 "at least one step")
        return md

    def replicas_per_context(self, md: dict, trust: bool) -> int | None:
        """md.replicas_per_context: runs per OpenMM Context (openmlff.campaign.batches); None = measured default."""
        value = md.get("replicas_per_context")
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self.error("md.replicas_per_context", f"expected a positive integer (1: every run alone), "
                                                        f"got {value!r}")
        if value > 1 and trust:
            raise self.error("md.replicas_per_context", "runs with a [trust] committee run one per Context; "
                                                        "set 1 or leave it out")
        return value

    def check_md_values(self, spec: dict) -> None:
        """Build one SimulationConfig per temperature, so a bad value fails now, naming the field."""
        from ..core.config import ConfigError
        from ..md.config import SimulationConfig

        for temperature in spec["temperatures_K"]:
            try:
                SimulationConfig(**spec["md"], temperature_K=temperature, seed=spec["seeds"][0])
            except ConfigError as exc:
                raise self.error(f"md.{exc.field}", str(exc)) from None
            except TypeError as exc:
                raise self.error("md", str(exc)) from None

    def reference(self, raw) -> dict | str | None:
        if raw is None or raw == "start":
            return raw
        if not isinstance(raw, dict):
            raise self.error("reference", f"expected \"start\" or a table with 'data' (and frames), got {raw!r}")
        return self.dataset_frames(raw, "reference")


_ANNOTATION_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),)}


def _finite_number(value) -> bool:
    """An int or a finite float (TOML and Python's JSON both read inf and nan), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _matches_annotation(value, annotation: str) -> bool:
    """Whether `value` fits a simple annotation like 'int', 'float | None', 'str' (others are not checked);
    a float is finite."""
    names = [part.strip() for part in str(annotation).split("|")]
    if not all(n in _ANNOTATION_TYPES for n in names):
        return True
    if isinstance(value, bool) and "bool" not in names:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return any(isinstance(value, t) for n in names for t in _ANNOTATION_TYPES[n])
