"""Tests for the contract's GX suites: each rule catches its kind of bad data by name."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from _contract_tables import (
    DAY,
    GOOD_ROWS,
    NEXT_DAY,
    config,
    fail,
    interactions,
    partition,
    write_users,
)
from recops.config import Settings
from recops.validation import ContractConfig, DataValidationError, validate_partition
from recops.validation.suites import build_suites, check_key, to_check


def test_event_at_or_after_interval_end_fails(settings: Settings) -> None:
    error = fail(settings, [*GOOD_ROWS, (2, 30, 4, NEXT_DAY), (2, 20, 4, DAY + timedelta(days=9))])

    assert "expect_column_values_to_be_between(column=event_timestamp" in str(error)
    assert "2 unexpected values" in str(error)


def test_unknown_user_id_fails(settings: Settings) -> None:
    error = fail(settings, [*GOOD_ROWS, (999, 10, 4, DAY)])

    assert "expect_column_values_to_be_in_set(column=user_id" in str(error)
    assert "1 unexpected value, e.g. [999]" in str(error)


def test_duplicate_events_fail(settings: Settings) -> None:
    error = fail(settings, [*GOOD_ROWS, GOOD_ROWS[0]])

    assert (
        "expect_compound_columns_to_be_unique(columns=[user_id, item_id, event_timestamp])"
        in str(error)
    )


def test_empty_partition_fails(settings: Settings) -> None:
    error = fail(settings, [])

    assert "expect_table_row_count_to_be_between(min=1): observed 0" in str(error)


def test_bad_users_table_fails_naming_table(settings: Settings) -> None:
    write_users(settings.users_path, genders=["M", "X", "F"])

    error = fail(settings, GOOD_ROWS)

    assert f"users {settings.users_path} failed 1 of" in str(error)
    assert "expect_column_values_to_be_in_set(column=gender, value_set=[F, M])" in str(error)
    assert (settings.quarantine_dir / "1998-04-22" / "users.parquet").is_file()


def test_schema_drift_fails_on_columns_and_dtypes(settings: Settings) -> None:
    naive = interactions(GOOD_ROWS).set_column(
        3, "event_timestamp", pa.array([r[3].replace(tzinfo=None) for r in GOOD_ROWS])
    )
    path = partition(settings, naive.append_column("extra", pa.array([1, 2, 3, 4])))

    with pytest.raises(DataValidationError) as info:
        validate_partition(config(settings, path))

    message = str(info.value)
    assert "expect_table_columns_to_match_set" in message and "extra" in message
    assert "expect_column_values_to_be_of_type(column=event_timestamp, type=Timestamp)" in message
    # GX cannot compare naive values with the UTC interval; that surfaces as a failure, not a crash.
    assert "expect_column_values_to_be_between(column=event_timestamp" in message


def test_warn_only_turns_a_failure_into_a_warning(settings: Settings) -> None:
    write_users(settings.users_path, genders=["M", "X", "F"])
    path = partition(settings, interactions(GOOD_ROWS))
    key = "users.expect_column_values_to_be_in_set.gender"

    result = validate_partition(config(settings, path, contract=ContractConfig(warn_only=(key,))))

    assert result.success and len(result.warnings) == 1
    assert "column=gender" in result.warnings[0] and "[X]" in result.warnings[0]
    report = json.loads(Path(result.report_uri).read_text())
    [check] = [e for e in report["expectations"] if e["check"] == key]
    assert check["severity"] == "warn" and check["success"] is False
    assert "no published_dir: no history" in result.notes
    assert Path(result.data_docs_uri).is_file()


def test_suites_carry_check_keys_and_severities() -> None:
    suites = build_suites(
        [1, 2],
        [10],
        start=DAY,
        end=NEXT_DAY,
        contract=ContractConfig(warn_only=("items.expect_column_values_to_be_unique.item_id",)),
        band=(5, 50, "warn"),
    )

    assert set(suites) == {"interactions", "users", "items"}
    metas = {e.meta["check"]: e.meta["severity"] for e in suites["items"]}
    assert metas["items.expect_column_values_to_be_unique.item_id"] == "warn"
    band = [e for e in suites["interactions"] if e.meta["check"].endswith("row_count_band")]
    assert [(e.meta["severity"], e.severity) for e in band] == [("warn", "warning")]
    keys = [check_key("interactions", e) for e in suites["interactions"]]
    assert "interactions.expect_column_values_to_not_be_null.rating" in keys
    assert "interactions.expect_table_row_count_to_be_between" in keys


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
