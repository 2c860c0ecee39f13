"""Tests for the GX suites generated from a spec: each rule catches its bad data by name."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _contract_tables import (
    DAY,
    MOVIELENS,
    NEXT_DAY,
    SHOP,
    attribute,
    config,
    fail,
    good_rows,
    interactions,
    partition,
    spec_dict,
    write_items,
    write_spec,
    write_users,
)
from recops.config import Settings
from recops.dataset_spec import DatasetSpec
from recops.validation import ContractConfig, DataValidationError, validate_partition
from recops.validation.suites import (
    Suite,
    allowed_values,
    build_suites,
    check_key,
    is_reference,
    reference_check,
    to_check,
)


def _blocks(error: DataValidationError, table: str, path: Path) -> str:
    """The message block of ``table`` (``<table> <path> failed ...``)."""
    [block] = [line for line in str(error).splitlines() if line.startswith(f"{table} {path} ")]
    return block


def test_null_keys_fail(settings: Settings) -> None:
    rows: list[Any] = [*good_rows(settings), (None, 10, good_rows(settings)[0][2], 1.0, DAY)]

    error = fail(settings, rows)

    block = _blocks(
        error, "interactions", settings.interactions_dir / "date=1998-04-22" / "part-0.parquet"
    )
    assert "expect_column_values_to_not_be_null(column=user_id): 1 unexpected value" in block


def test_null_key_in_a_dimension_table_fails_naming_it(settings: Settings) -> None:
    write_users(settings, user_id=[1, None, 3])

    error = fail(settings, good_rows(settings))

    block = _blocks(error, "users", settings.users_path)
    assert "expect_column_values_to_not_be_null(column=user_id): 1 unexpected value" in block
    assert (settings.quarantine_dir / "1998-04-22" / "users.parquet").is_file()


def test_undeclared_event_type_fails(settings: Settings) -> None:
    declared = {MOVIELENS: "[interaction]", SHOP: "[add_to_cart, purchase, view]"}

    error = fail(settings, [*good_rows(settings), (2, 30, "refund", 1.0, DAY)])

    assert (
        f"interactions {settings.interactions_dir}" in str(error)
        and "expect_column_values_to_be_in_set(column=event_type, "
        f"value_set={declared[settings.dataset]}): 1 unexpected value, e.g. [refund]"
        in str(error)
    )


def test_weight_outside_the_explicit_range_fails(movielens: Settings) -> None:
    rows = [
        *good_rows(movielens),
        (2, 20, "interaction", 0.0, DAY),
        (3, 10, "interaction", 7.0, DAY),
    ]

    error = fail(movielens, rows)

    assert "interactions " in str(error) and "failed 1 of" in str(error)
    assert (
        "expect_column_values_to_be_between(column=weight, min=1, max=5): "
        "2 unexpected values, e.g. [0, 7]" in str(error)
    )


def test_weight_must_be_positive_without_an_explicit_value(shop: Settings) -> None:
    error = fail(shop, [*good_rows(shop), (2, 10, "view", -1.0, DAY)])

    assert (
        "expect_column_values_to_be_between(column=weight, min=0, strict_min=True): "
        "1 unexpected value, e.g. [-1]" in str(error)
    )


def test_categorical_outside_its_allowed_set_fails(movielens: Settings) -> None:
    write_users(movielens, occupation=["technician", "astronaut", "writer"])

    error = fail(movielens, good_rows(movielens))

    block = _blocks(error, "users", movielens.users_path)
    assert "failed 1 of" in block
    assert (
        "expect_column_values_to_be_in_set(column=occupation, value_set=<21 values>): "
        "1 unexpected value, e.g. [astronaut]" in block
    )


def test_every_element_of_a_multi_valued_categorical_is_checked(movielens: Settings) -> None:
    write_items(movielens, genres=["Action|Horrror", "Action", "Comedy|Horrror|Wester"])

    error = fail(movielens, good_rows(movielens))

    block = _blocks(error, "items", movielens.items_path)
    # The bad elements themselves are named, not the joined cells they sit in.
    assert (
        "expect_column_values_to_be_in_set(column=genres, value_set=<19 values>): "
        "2 unexpected values, e.g. [Horrror, Wester]" in block
    )


def test_allowed_set_declared_for_the_shop_is_checked(shop: Settings) -> None:
    spec = spec_dict(SHOP)
    attribute(spec, "users", "country")["allowed"] = ["DE", "FR"]
    write_spec(shop, spec)

    error = fail(shop, good_rows(shop))

    block = _blocks(error, "users", shop.users_path)
    assert (
        f"users {shop.users_path} failed 1 of 9 expectations: "
        "expect_column_values_to_be_in_set(column=country, value_set=[DE, FR]): "
        "1 unexpected value, e.g. [US]" in block
    )


def test_numeric_out_of_range_blocks_or_warns_as_the_spec_says(shop: Settings) -> None:
    write_items(shop, price=[89.9, -5.0, 0.0])
    expected = (
        "expect_column_values_to_be_between(column=price, min=0): 1 unexpected value, e.g. [-5]"
    )

    error = fail(shop, good_rows(shop))
    assert expected in _blocks(error, "items", shop.items_path)

    spec = spec_dict(SHOP)
    attribute(spec, "items", "price")["range"] = {"low": 0, "severity": "warn"}
    write_spec(shop, spec)
    path = partition(shop, interactions(good_rows(shop)))
    result = validate_partition(config(shop, path))

    assert result.success and result.warnings == [f"items: {expected}"]
    report = json.loads(Path(result.report_uri).read_text())
    [check] = [e for e in report["expectations"] if e["check"].endswith("between.price")]
    assert check["severity"] == "warn" and check["unexpected_sample"] == [-5.0]


def test_not_null_attribute_fails_and_nan_is_not_out_of_range(shop: Settings) -> None:
    write_items(shop, category=["shoes", None, "shoes"], price=[89.9, None, 1.0])

    error = fail(shop, good_rows(shop))

    block = _blocks(error, "items", shop.items_path)
    assert "failed 2 of" in block
    assert "expect_column_values_to_not_be_null(column=category): 1 unexpected value" in block
    assert "expect_column_values_to_not_be_null(column=price): 1 unexpected value" in block


def test_attribute_dtype_and_missing_column_fail(movielens: Settings) -> None:
    write_users(movielens, occupation=None)
    users = pq.read_table(movielens.users_path)
    # Written as int64: the layout says float64 for a numeric attribute.
    users = users.set_column(1, "age", pa.array([24, 53, 33], pa.int64()))
    pq.write_table(users, movielens.users_path)

    error = fail(movielens, good_rows(movielens))

    block = _blocks(error, "users", movielens.users_path)
    assert "expect_table_columns_to_match_set" in block and "occupation" in block
    assert "expect_column_values_to_be_of_type(column=age, type=float64): observed int64" in block


def test_event_at_or_after_interval_end_fails(settings: Settings) -> None:
    event_type = good_rows(settings)[0][2]
    late = [(2, 30, event_type, 4.0, NEXT_DAY), (2, 20, event_type, 4.0, DAY + timedelta(days=9))]

    error = fail(settings, [*good_rows(settings), *late])

    assert "expect_column_values_to_be_between(column=event_timestamp" in str(error)
    assert "2 unexpected values" in str(error)


def test_unknown_items_and_duplicate_events_fail(shop: Settings) -> None:
    rows = good_rows(shop)

    error = fail(shop, [*rows, (1, 999, "view", 1.0, DAY), rows[0]])

    assert "expect_column_values_to_be_in_set(column=item_id, value_set=" in str(error)
    assert "1 unexpected value, e.g. [999]" in str(error)
    assert (
        "expect_compound_columns_to_be_unique("
        "columns=[user_id, item_id, event_timestamp, event_type])" in str(error)
    )


def test_empty_partition_fails(movielens: Settings) -> None:
    error = fail(movielens, [])

    assert "expect_table_row_count_to_be_between(min=1): observed 0" in str(error)


def test_schema_drift_fails_on_columns_and_dtypes(movielens: Settings) -> None:
    rows = good_rows(movielens)
    naive = interactions(rows).set_column(
        2, "event_timestamp", pa.array([r[4].replace(tzinfo=None) for r in rows])
    )
    path = partition(movielens, naive.append_column("rating", pa.array([1, 2, 3, 4])))

    with pytest.raises(DataValidationError) as info:
        validate_partition(config(movielens, path))

    message = str(info.value)
    assert "expect_table_columns_to_match_set" in message and "rating" in message
    assert "expect_column_values_to_be_of_type(column=event_timestamp, type=Timestamp)" in message
    # GX cannot compare naive values with the UTC interval; that surfaces as a failure, not a crash.
    assert "expect_column_values_to_be_between(column=event_timestamp" in message


def test_warn_only_turns_a_failure_into_a_warning(movielens: Settings) -> None:
    write_users(movielens, gender=["M", "X", "F"])
    path = partition(movielens, interactions(good_rows(movielens)))
    key = "users.expect_column_values_to_be_in_set.gender"
    contract = ContractConfig(warn_only=(key,))

    result = validate_partition(config(movielens, path, contract=contract, data_docs=True))

    assert result.success and len(result.warnings) == 1
    assert result.warnings[0].startswith("users: ") and "column=gender" in result.warnings[0]
    assert "[X]" in result.warnings[0]
    report = json.loads(Path(result.report_uri).read_text())
    [check] = [e for e in report["expectations"] if e["check"] == key]
    assert check["severity"] == "warn" and check["success"] is False
    assert "no published_dir: no history" in result.notes
    assert Path(result.data_docs_uri).is_file()


def _suites(spec: dict[str, Any], contract: ContractConfig) -> list[Suite]:
    return build_suites(
        DatasetSpec.model_validate(spec),
        [1, 2],
        [10],
        start=DAY,
        end=NEXT_DAY,
        contract=contract,
        band=(5, 50, "warn"),
    )


def test_suites_follow_the_spec_with_keys_and_severities() -> None:
    spec = spec_dict(SHOP)
    attribute(spec, "items", "brand")["not_null"] = {"severity": "warn"}
    contract = ContractConfig(warn_only=("items.expect_column_values_to_be_unique.item_id",))

    suites = _suites(spec, contract)

    assert [(s.name, s.table) for s in suites] == [
        ("interactions", "interactions"), ("users", "users"), ("items", "items")
    ]  # fmt: skip
    items = {e.meta["check"]: e.meta["severity"] for e in suites[2].expectations}
    assert items["items.expect_column_values_to_be_unique.item_id"] == "warn"
    assert items["items.expect_column_values_to_not_be_null.brand"] == "warn"
    assert items["items.expect_column_values_to_not_be_null.category"] == "fail"
    assert items["items.expect_column_values_to_be_between.price"] == "fail"
    assert "items.expect_column_values_to_not_be_null.name" not in items
    band = [e for e in suites[0].expectations if e.meta["check"].endswith("row_count_band")]
    assert [(e.meta["severity"], e.severity) for e in band] == [("warn", "warning")]
    keys = [check_key("interactions", e) for e in suites[0].expectations]
    assert "interactions.expect_column_values_to_not_be_null.weight" in keys
    assert "interactions.expect_column_values_to_be_in_set.event_type" in keys


def test_multi_valued_allowed_sets_get_an_element_suite() -> None:
    spec = spec_dict(MOVIELENS)
    attribute(spec, "items", "genres")["allowed"] = {"values": ["a", 2, 3.0], "severity": "warn"}

    suites = _suites(spec, ContractConfig())

    [elements] = [s for s in suites if s.elements_of is not None]
    assert elements.table == "items" and elements.elements_of is not None
    assert elements.elements_of.separator == "|"
    [in_set] = elements.expectations
    assert in_set.value_set == ["2", "3", "a"]
    assert in_set.meta == {
        "check": "items.expect_column_values_to_be_in_set.genres",
        "severity": "warn",
    }
    # The joined cells are never checked against the set, only their elements.
    items = next(s for s in suites if s.name == "items")
    assert not any(getattr(e, "value_set", None) for e in items.expectations)
    assert allowed_values(DatasetSpec.model_validate(spec).items.attributes[2]) == ["2", "3", "a"]


def test_to_check_flattens_a_result_and_its_exception() -> None:
    raw = {
        "success": False,
        "expectation_config": {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "user_id", "value_set": list(range(20)), "batch_id": "b"},
            "meta": {"check": "interactions.x", "severity": "warn"},
        },
        "result": {"unexpected_count": 1, "partial_unexpected_list": [99]},
        "exception_info": {
            "m1": {"raised_exception": True, "exception_message": "boom"},
            "m2": {"raised_exception": True, "exception_message": "boom"},
        },
    }

    check = to_check("interactions", raw)

    assert check.kwargs == {
        "column": "user_id",
        "value_set": {"n_values": 20, "first": list(range(10))},
    }
    assert check.error == "boom" and check.severity == "warn" and check.check == "interactions.x"
    assert check.describe() == (
        "expect_column_values_to_be_in_set(column=user_id, value_set=<20 values>): raised boom"
    )


def test_reference_checks_run_beside_gx_as_gx_would_report_them() -> None:
    import great_expectations as gx
    import pandas as pd

    E: Any = gx.expectations
    known = E.ExpectColumnValuesToBeInSet(
        column="user_id", value_set=list(range(30)),
        meta={"check": "interactions.expect_column_values_to_be_in_set.user_id",
              "severity": "warn"},
    )  # fmt: skip
    other = E.ExpectColumnValuesToBeInSet(column="event_type", value_set=["view"])
    assert is_reference("interactions", known) and not is_reference("interactions", other)
    assert not is_reference("users", known)

    frame = pd.DataFrame({"user_id": [1, 2, 99, None, 99, *range(100, 125)]})
    check = reference_check("interactions", known, frame)
    assert (check.success, check.unexpected_count, check.severity) == (False, 27, "warn")
    assert check.unexpected_sample is not None and len(check.unexpected_sample) == 20
    assert check.unexpected_sample[:2] == [99, 99]  # empty cells are not checked
    assert check.kwargs == {"column": "user_id", "value_set": {"n_values": 30,
                            "first": list(range(10))}}  # fmt: skip
    assert check.check == "interactions.expect_column_values_to_be_in_set.user_id"
    assert reference_check("interactions", known, frame.iloc[:2]).success
    missing = reference_check("interactions", known, pd.DataFrame({"item_id": [1]}))
    assert not missing.success and missing.error is not None and "user_id" in missing.error
