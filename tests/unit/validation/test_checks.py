"""Tests for ``Check``: the one-line description and the report entry of a check."""

from __future__ import annotations

from recops.validation.checks import Check, dedupe, fmt, summarise


def test_describe_names_the_expectation_and_a_sample() -> None:
    check = Check(
        table="interactions",
        expectation_type="expect_column_values_to_be_between",
        kwargs={"column": "weight", "min_value": 1.0, "max_value": 5},
        success=False,
        unexpected_count=3,
        unexpected_sample=[0, 7, 0],
    )

    assert check.describe() == (
        "expect_column_values_to_be_between(column=weight, min=1, max=5): "
        "3 unexpected values, e.g. [0, 7]"
    )
    assert check.columns == ["weight"] and check.to_dict()["columns"] == ["weight"]


def test_describe_falls_back_to_the_observed_value_and_details() -> None:
    check = Check(
        table="interactions",
        expectation_type="expect_compound_columns_to_be_unique",
        kwargs={"column_list": ["user_id", "item_id"]},
        success=False,
        observed_value=0.5,
        details={"why": "dupes"},
    )

    assert check.columns == ["user_id", "item_id"]
    assert check.describe().endswith('observed 0.5 ({"why": "dupes"})')


def test_formatting_helpers() -> None:
    assert summarise(list(range(3))) == [0, 1, 2]
    assert summarise(list(range(11))) == {"n_values": 11, "first": list(range(10))}
    assert fmt({"n_values": 11, "first": []}) == "<11 values>"
    assert fmt({"a": [1.0, "x"]}) == "{a: [1, x]}"
    assert dedupe([[1], [1], 2]) == [[1], 2]
