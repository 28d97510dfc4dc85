"""Configs as the single source of settings: dataclass fields give the CLI flags, spec keys and defaults.

A config dataclass (SimulationConfig, TrainingConfig) names each setting once, with its unit in the
name and a one-line help in the field's metadata. `add_config_arguments` makes one CLI flag per field
(`timestep_fs` -> `--timestep-fs`, the same default, the type from the annotation), plus the older
short names that scripts rely on as aliases (`--timestep`); `config_from_args` builds the config back.
Campaign specs use the field names as keys. Each config validates itself on construction and raises
ConfigError, which carries the field's name.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import MISSING, fields

from .errors import InputError


class ConfigError(InputError):
    """A config field has a value it cannot take; `field` names it, and the message says what was expected."""

    def __init__(self, config: str, field: str, message: str) -> None:
        super().__init__(f"{config}.{field} {message}")
        self.config = config
        self.field = field


def setting(default, help: str, **kwargs):
    """A dataclass field with its CLI help (and `aliases`: older flag names kept for scripts)."""
    from dataclasses import field

    metadata = {"help": help, **{k: kwargs.pop(k) for k in ("aliases",) if k in kwargs}}
    if callable(default) and not isinstance(default, (int, float, str, bool)):
        return field(default_factory=default, metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_optional(kind):
    def parse(text: str):
        return None if text.strip().lower() in ("none", "off") else kind(text)
    parse.__name__ = kind.__name__
    return parse


def finite_float(text: str) -> float:
    """argparse type of every float option: a finite number ('inf' and 'nan' parse as floats but are no setting)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


_TYPES = {"int": int, "float": finite_float, "str": str}


def add_config_arguments(parser: argparse.ArgumentParser, config_class, *, exclude=(), required=(),
                         choices: dict | None = None, group: str | None = None) -> None:
    """One option per field of `config_class` (but `exclude`), named after it, with its default and help.

    required: fields the command insists on. choices: field -> allowed values. Options are stored
    under the field's name (dest), so `config_from_args` finds them.
    """
    target = parser.add_argument_group(group) if group else parser
    for f in fields(config_class):
        if f.name in exclude or not f.init:
            continue
        names = [flag(f.name), *f.metadata.get("aliases", ())]
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                              else None)
        annotation = str(f.type).replace(" ", "")
        help_text = f.metadata.get("help", "")
        if annotation == "bool":
            target.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
            continue
        if annotation == "dict":
            target.add_argument(*names, dest=f.name, type=json_object, default=default,
                                help=f"{help_text} (JSON object)")
            continue
        base = annotation.split("|")[0]
        kind = _TYPES.get(base, str)
        optional = "None" in annotation.split("|")
        shown = "" if default is None or f.name in required else f" (default {default})"
        target.add_argument(*names, dest=f.name, type=_parse_optional(kind) if optional else kind, default=default,
                            required=f.name in required, choices=(choices or {}).get(f.name),
                            help=f"{help_text}{shown}" + ("; 'none' unsets it" if optional else ""))


def config_from_args(config_class, args: argparse.Namespace, **fixed):
    """The config from the parsed options of add_config_arguments (fields not on the command line keep defaults)."""
    values = {f.name: getattr(args, f.name) for f in fields(config_class) if f.init and hasattr(args, f.name)}
    values.update(fixed)
    return config_class(**values)


def check(config, condition: bool, field: str, message: str) -> None:
    """Raise ConfigError(field, message) unless condition: the one-line validation of config dataclasses."""
    if not condition:
        raise ConfigError(type(config).__name__, field, message)


def check_finite(config) -> None:
    """ConfigError naming the first number field of a config dataclass that is NaN or infinite (also in a list or
    tuple field): every config's validation starts here, so no 'inf' K or fs reaches a run and blames the model."""
    for f in fields(config):
        value = getattr(config, f.name)
        for item in (value if isinstance(value, (list, tuple)) else (value,)):
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(type(config).__name__, f.name, f"must be a finite number, got {value}")


def named_options(what: str, name: str, options: dict, defaults: dict[str, dict]) -> dict:
    """The options of the choice `name` among `defaults` ({name: {option: default}}), defaults filled in;
    InputError naming an unknown choice or option (losses, reweighting rules)."""
    if name not in defaults:
        raise InputError(f"unknown {what} {name!r}; expected one of {list(defaults)}")
    unknown = sorted(set(options) - set(defaults[name]))
    if unknown:
        raise InputError(f"{what} {name!r} takes the options {sorted(defaults[name]) or 'none'}, got {unknown}")
    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{what} {name!r}: option {key!r} must be a finite number, got {value}")
    return {**defaults[name], **options}
