"""The one resume check (openmlff.core.resume) on hand-made records: every difference named, growth rules, dotted names."""

from __future__ import annotations

import pytest

from openmlff.core.errors import InputError
from openmlff.core.resume import ABSENT, ResumeMismatchError, check_resumable, resume_differences

RECORDED = {
    "model sha256": "aa" * 50,  # longer than the 80 characters a message shows
    "config": {"timestep_fs": 0.5, "temperature_K": 300.0, "steps": 200, "torch_threads": 1,
               "platform_properties": {"Threads": "1"}, "integrator": "langevin"},
    "seeds": [0, 1],
    "models": {"a": "/m/a.pt"},
}


def changed(**edits) -> dict:
    """RECORDED with dotted fields replaced ('config.steps': 100); value ABSENT deletes the field."""
    import copy

    out = copy.deepcopy(RECORDED)
    for dotted, value in edits.items():
        *parents, leaf = dotted.split("__")
        target = out
        for key in parents:
            target = target[key]
        if value is ABSENT:
            del target[leaf]
        else:
            target[leaf] = value
    return out


def test_same_inputs_pass_and_lists_equal_tuples():
    check_resumable(RECORDED, changed(), where="run.json")
    check_resumable(RECORDED, changed(seeds=(0, 1)), where="run.json")  # JSON gives back lists


def test_every_differing_field_is_named_with_both_values_and_the_place():
    now = changed(config__timestep_fs=1.0, config__integrator="nose_hoover", **{"model sha256": "bb" * 50})
    with pytest.raises(ResumeMismatchError) as info:
        check_resumable(RECORDED, now, where="/runs/x/run.json")
    message = str(info.value)
    assert message.startswith("/runs/x/run.json: cannot resume a different run")
    assert "config.timestep_fs: recorded 0.5, now 1.0" in message
    assert 'config.integrator: recorded "langevin", now "nose_hoover"' in message
    assert f"model sha256: recorded \"{'a' * 76}..., now \"{'b' * 76}...;" in message  # a long value is cut
    assert message.endswith("Use a new output folder for a different run.")
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)


def test_nested_fields_have_dotted_names_and_absent_fields_are_named():
    now = changed(config__platform_properties={"Threads": "2"}, config__steps=ABSENT)
    now["extra"] = 3
    names = [d.field for d in resume_differences(RECORDED, now)]
    assert names == ["config.steps", "config.platform_properties.Threads", "extra"]
    with pytest.raises(ResumeMismatchError, match="config.steps: recorded 200, now absent.*extra: not recorded, now 3"):
        check_resumable(RECORDED, now, where="run.json")


def test_may_change_fields_are_ignored():
    now = changed(config__torch_threads=8, config__platform_properties={"Threads": "8"})
    check_resumable(RECORDED, now, where="run.json",
                    may_change=("config.torch_threads", "config.platform_properties"))
    with pytest.raises(ResumeMismatchError, match="config.torch_threads: recorded 1, now 8"):
        check_resumable(RECORDED, now, where="run.json", may_change=("config.platform_properties",))


def test_may_grow_accepts_growth():
    grown = changed(config__steps=400, seeds=[0, 1, 2], models={"a": "/m/a.pt", "b": "/m/b.pt"})
    check_resumable(RECORDED, grown, where="run.json", may_grow=("config.steps", "seeds", "models"))
    check_resumable(RECORDED, changed(seeds=[1, 0]), where="run.json", may_grow=("seeds",))  # order is free


@pytest.mark.parametrize("edit, expected", [
    ({"config__steps": 100}, r"config.steps: recorded 200, now 100 \(steps may only grow\)"),
    ({"seeds": [1, 2]}, r"seeds: recorded \[0, 1\], now \[1, 2\] \(seeds may only grow\)"),
    ({"models": {"b": "/m/b.pt"}}, r'models.a: recorded "/m/a.pt", now absent \(models may only grow\)'),
    ({"models": {"a": "/m/other.pt"}}, r'models.a: recorded "/m/a.pt", now "/m/other.pt"'),
])
def test_may_grow_refuses_shrinking_or_changing(edit, expected):
    with pytest.raises(ResumeMismatchError, match=expected):
        check_resumable(RECORDED, changed(**edit), where="run.json", may_grow=("config.steps", "seeds", "models"))


def test_the_removed_entries_of_a_growable_list():
    (difference,) = resume_differences(RECORDED, changed(seeds=[1, 2]), may_grow=("seeds",))
    assert difference.shrunk == "seeds" and difference.removed == [0]


def test_job_wording_and_error_class_are_the_callers():
    class LabellingResumeError(ResumeMismatchError):
        pass

    with pytest.raises(LabellingResumeError, match="manifest.json: cannot resume a different labelling job; .*seeds"):
        check_resumable(RECORDED, changed(seeds=[0]), where="manifest.json", job="labelling job",
                        error=LabellingResumeError)
