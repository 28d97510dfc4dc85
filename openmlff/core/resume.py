"""The one resume check: the recorded inputs of a resumable job against the current ones.

Training (`model.ckpt`), reference labelling (`manifest.json`), reference-MD sampling (its
checkpoint), MD runs (`run.json`) and campaigns (`campaign.json`) all continue a job that an
earlier session started, and only when it is the same job. `resume_differences` says which fields
differ and `check_resumable` refuses the resume with one `ResumeMismatchError` naming them all,
so every resumable folder is refused with the same wording (docs/architecture.md "Errors, threads
and locks").

Records are mappings; nested mappings are compared field by field under dotted names
(`config.steps`, `md.timestep_fs`). A field in `may_change` is not compared (a thread count, a
time budget). A field in `may_grow` may only grow: a number may rise, a list may gain entries (none
removed), a mapping may gain keys (existing keys unchanged). Lists and tuples compare alike, since
a record read back from JSON holds lists where the config had tuples.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import InputError

#: Longest value shown in a message; longer ones are cut with "...".
MAX_VALUE_CHARS = 80


class ResumeMismatchError(InputError):
    """A folder holds a job started with other inputs than the ones given now; the message names each field."""


class _Absent:
    """A field one of the two records does not have."""

    def __repr__(self) -> str:
        return "ABSENT"


#: The value of a field missing from one record (Difference.recorded or Difference.now).
ABSENT = _Absent()


@dataclass(frozen=True)
class Difference:
    """One field that differs: its dotted name, both values (or ABSENT), and the may_grow field it shrank, if any."""

    field: str
    recorded: object
    now: object
    shrunk: str = ""  # the may_grow field (this one, or the mapping holding it) that lost entries or fell

    @property
    def removed(self) -> list:
        """Entries of a recorded list that the current list lacks (empty for other values)."""
        if isinstance(self.recorded, (list, tuple)) and isinstance(self.now, (list, tuple)):
            return [x for x in self.recorded if not any(_same(x, y) for y in self.now)]
        return []

    def describe(self) -> str:
        """'field: recorded X, now Y', with '(name may only grow)' for a growable field that shrank."""
        text = f"{self.field}: " + (
            "not recorded" if self.recorded is ABSENT else f"recorded {short_value(self.recorded)}")
        text += ", now absent" if self.now is ABSENT else f", now {short_value(self.now)}"
        if self.shrunk:
            text += f" ({self.shrunk.rpartition('.')[2]} may only grow)"
        return text


def resume_differences(recorded: Mapping, current: Mapping, *, may_change: Iterable[str] = (),
                       may_grow: Iterable[str] = ()) -> list[Difference]:
    """Every field of `recorded` and `current` that differs, in record order (see the module docstring)."""
    return _compare(recorded, current, "", frozenset(may_change), frozenset(may_grow))


def check_resumable(recorded: Mapping, current: Mapping, *, where: str, may_change: Iterable[str] = (),
                    may_grow: Iterable[str] = (), job: str = "run",
                    error: type[ResumeMismatchError] = ResumeMismatchError) -> None:
    """Raise `error` (a ResumeMismatchError) naming `where` and every differing field, unless the job may resume.

    `where` is the file or folder that holds the recorded inputs; `job` says what it holds in the
    message ("training run", "labelling job"); `error` lets a package raise its own subclass.
    """
    differences = resume_differences(recorded, current, may_change=may_change, may_grow=may_grow)
    if differences:
        raise error(f"{where}: cannot resume a different {job}; these inputs differ from the recorded ones: "
                    f"{'; '.join(d.describe() for d in differences)}. Use a new output folder for a different {job}.")


def short_value(value) -> str:
    """A value as JSON, cut to MAX_VALUE_CHARS characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 3] + "..."


def _compare(old, new, name: str, may_change: frozenset, may_grow: frozenset) -> list[Difference]:
    if name in may_change:
        return []
    if name in may_grow and old is not ABSENT and new is not ABSENT:
        return _compare_growth(old, new, name)
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += _compare(old.get(key, ABSENT), new.get(key, ABSENT), f"{name}.{key}" if name else str(key),
                            may_change, may_grow)
        return out
    return [] if _same(old, new) else [Difference(name, old, new)]


def _compare_growth(old, new, name: str) -> list[Difference]:
    """A may_grow field: a number may rise, a list gain entries, a mapping gain keys with the old ones unchanged."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [Difference(f"{name}.{key}", value, new.get(key, ABSENT), shrunk=name if key not in new else "")
                for key, value in old.items() if not _same(value, new.get(key, ABSENT))]
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        grown = all(any(_same(x, y) for y in new) for x in old)
        return [] if grown else [Difference(name, old, new, shrunk=name)]
    if _is_number(old) and _is_number(new):
        return [] if new >= old else [Difference(name, old, new, shrunk=name)]
    return [] if _same(old, new) else [Difference(name, old, new)]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a, b) -> bool:
    """Equality with lists and tuples alike (JSON gives back lists), recursively."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if (a is ABSENT) != (b is ABSENT):
        return False
    return bool(a == b)
