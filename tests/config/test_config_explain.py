"""TrainingConfig.explain(): every field documented with a type, default, bounds and description."""

from __future__ import annotations

import pytest
import yaml

from trainengine.config import SECTION_TYPES, TrainingConfig

ROWS = TrainingConfig.explain()
BY_PATH = {row["path"]: row for row in ROWS}


def _all_fields():
    return [
        (section, name, info) for section, model in SECTION_TYPES.items() for name, info in model.model_fields.items()
    ]


def test_every_field_of_every_section_has_one_row():
    # Every section field, then the one top-level list that is not a section: plugins.
    expected = [f"{s}.{n}" for s, n, _ in _all_fields()] + ["plugins"]
    assert [row["path"] for row in ROWS] == expected
    assert set(SECTION_TYPES) | {"plugins"} == set(TrainingConfig.model_fields)


@pytest.mark.parametrize(("section", "name", "info"), _all_fields(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_field_has_a_description_a_type_and_its_default(section, name, info):
    row = BY_PATH[f"{section}.{name}"]
    assert row["description"].strip(), f"{section}.{name} has no description"
    assert row["description"] == info.description
    # One line: the description feeds a table and the generated docs.
    assert "\n" not in row["description"]
    assert row["type"].strip()
    default = getattr(TrainingConfig(), section).model_dump(mode="json")[name]
    assert yaml.safe_load(row["default"]) == default


def _numeric_bounds(info) -> list[tuple[str, object]]:
    out = []
    for meta in info.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(meta, attr, None)
            if value is not None:
                out.append((sym, value))
    return out


def test_bounded_numbers_state_their_bounds():
    bounded = [(s, n, info) for s, n, info in _all_fields() if _numeric_bounds(info)]
    assert len(bounded) > 30  # the sections really are bounded
    for section, name, info in bounded:
        text = BY_PATH[f"{section}.{name}"]["bounds"]
        for sym, value in _numeric_bounds(info):
            assert f"{sym} {value}" in text, f"{section}.{name}: {text!r} lacks {sym} {value}"


def test_known_examples():
    lr = BY_PATH["training.learning_rate"]
    assert lr["type"] == "float"
    assert "> 0" in lr["bounds"] and "<= 10" in lr["bounds"]
    assert "learning rate" in lr["description"].lower()
    assert "fp16" in BY_PATH["training.precision"]["type"]
    assert "None" in BY_PATH["training.max_steps"]["type"]
    assert BY_PATH["training.max_steps"]["default"] == "null"
