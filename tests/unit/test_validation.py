"""Tests for the validate stage: real Great Expectations on tiny parquet tables."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from recops.config import Settings
from recops.validation import (
    ContractConfig,
    DataValidationError,
    ValidateConfig,
    ValidationResult,
    psi,
    validate_and_publish,
    validate_partition,
)

DAY = datetime(1998, 4, 22, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)
UTC_TS = pa.timestamp("us", tz="UTC")


def _write_users(path: Path, genders: list[str] | None = None) -> None:
    table = pa.table(
        {
            "user_id": pa.array([1, 2, 3], pa.int64()),
            "age": pa.array([24, 53, 33], pa.int64()),
            "gender": pa.array(genders or ["M", "F", "M"], pa.string()),
            "occupation": pa.array(["technician", "other", "writer"], pa.string()),
            "zip_code": pa.array(["85711", "94043", "32067"], pa.string()),
            "event_timestamp": pa.array([DAY - timedelta(days=30)] * 3, UTC_TS),
        }
    )
    pq.write_table(table, path)


def _write_items(path: Path) -> None:
    table = pa.table(
        {
            "item_id": pa.array([10, 20, 30], pa.int64()),
            "title": pa.array(["Toy Story (1995)", "GoldenEye (1995)", "Unknown"], pa.string()),
            "release_year": pa.array([1995, 1995, 0], pa.int64()),
            "genre_mask": pa.array([0b11100, 0b10, 0], pa.int64()),
            "event_timestamp": pa.array([DAY - timedelta(days=30)] * 3, UTC_TS),
        }
    )
    pq.write_table(table, path)


def _interactions(rows: list[tuple[int, int, int, datetime]]) -> pa.Table:
    users, items, ratings, stamps = (
        (list(col) for col in zip(*rows, strict=True)) if rows else ([], [], [], [])
    )
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "item_id": pa.array(items, pa.int64()),
            "rating": pa.array(ratings, pa.int64()),
            "event_timestamp": pa.array(stamps, UTC_TS),
        }
    )


GOOD_ROWS = [
    (1, 10, 5, DAY + timedelta(hours=1)),
    (1, 20, 3, DAY + timedelta(hours=2)),
    (2, 10, 4, DAY + timedelta(hours=3)),
    (3, 30, 1, NEXT_DAY - timedelta(microseconds=1)),
]


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True)
    _write_users(settings.users_path)
    _write_items(settings.items_path)
    return settings


def _partition(settings: Settings, table: pa.Table | bytes) -> Path:
    path = settings.interactions_dir / f"date={DAY.date().isoformat()}" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(table, bytes):
        path.write_bytes(table)
    else:
        pq.write_table(table, path)
    return path


def _config(settings: Settings, partition: Path, **overrides: Any) -> ValidateConfig:
    fields: dict[str, Any] = {
        "interactions_path": str(partition),
        "users_path": str(settings.users_path),
        "items_path": str(settings.items_path),
        "interval_start": DAY,
        "interval_end": NEXT_DAY,
        "report_dir": str(settings.runs_dir / "run-1" / "validate"),
        "quarantine_dir": str(settings.quarantine_dir),
    }
    fields.update(overrides)
    return ValidateConfig(**fields)


def _fail(settings: Settings, rows: list[tuple[int, int, int, datetime]]) -> DataValidationError:
    partition = _partition(settings, _interactions(rows))
    with pytest.raises(DataValidationError) as info:
        validate_partition(_config(settings, partition))
    assert str(partition) in str(info.value)
    return info.value


def test_import_is_cheap() -> None:
    code = (
        "import sys, recops.validation; "
        "heavy = {'great_expectations', 'pandas', 'pyarrow'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_good_partition_passes_and_writes_report(settings: Settings) -> None:
    partition = _partition(settings, _interactions(GOOD_ROWS))

    result = validate_partition(_config(settings, partition))

    assert isinstance(result, ValidationResult)
    assert result.success and result.n_failed == 0
    assert result.n_rows == len(GOOD_ROWS)
    assert result.partition_date == "1998-04-22"
    assert result.partition_sha256 == hashlib.sha256(partition.read_bytes()).hexdigest()
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    report = json.loads(Path(result.report_uri).read_text())
    assert report["success"] is True
    assert len(report["expectations"]) == result.n_expectations > 20
    assert {e["table"] for e in report["expectations"]} == {"interactions", "users", "items"}
    assert all(e["success"] for e in report["expectations"])
    assert not settings.quarantine_dir.exists() or not any(settings.quarantine_dir.iterdir())


def test_out_of_range_ratings_fail_and_quarantine(settings: Settings) -> None:
    rows = [*GOOD_ROWS, (2, 20, 0, DAY), (3, 10, 7, DAY)]

    error = _fail(settings, rows)

    message = str(error)
    assert "failed 1 of" in message
    assert "expect_column_values_to_be_between(column=rating, min=1, max=5)" in message
    assert "2 unexpected values, e.g. [0, 7]" in message
    # Quarantine holds the exact partition bytes and the report that condemned it.
    quarantined = settings.quarantine_dir / "1998-04-22"
    assert error.quarantine_uri == str(quarantined)
    partition = Path(settings.interactions_dir / "date=1998-04-22" / "part-0.parquet")
    assert (quarantined / "part-0.parquet").read_bytes() == partition.read_bytes()
    report = json.loads((quarantined / "validation.json").read_text())
    assert report["success"] is False and report["n_failed"] == 1
    [failed] = [e for e in report["expectations"] if not e["success"]]
    assert failed["columns"] == ["rating"] and failed["unexpected_count"] == 2
    assert sorted(failed["unexpected_sample"]) == [0, 7]
    # Airflow may pickle the exception between processes.
    clone = pickle.loads(pickle.dumps(error))
    assert str(clone) == message and clone.report_uri == error.report_uri


def test_event_at_or_after_interval_end_fails(settings: Settings) -> None:
    error = _fail(settings, [*GOOD_ROWS, (2, 30, 4, NEXT_DAY), (2, 20, 4, DAY + timedelta(days=9))])

    assert "expect_column_values_to_be_between(column=event_timestamp" in str(error)
    assert "2 unexpected values" in str(error)


def test_unknown_user_id_fails(settings: Settings) -> None:
    error = _fail(settings, [*GOOD_ROWS, (999, 10, 4, DAY)])

    assert "expect_column_values_to_be_in_set(column=user_id" in str(error)
    assert "1 unexpected value, e.g. [999]" in str(error)


def test_duplicate_events_fail(settings: Settings) -> None:
    error = _fail(settings, [*GOOD_ROWS, GOOD_ROWS[0]])

    assert (
        "expect_compound_columns_to_be_unique(columns=[user_id, item_id, event_timestamp])"
        in str(error)
    )


def test_empty_partition_fails(settings: Settings) -> None:
    error = _fail(settings, [])

    assert "expect_table_row_count_to_be_between(min=1): observed 0" in str(error)


def test_bad_users_table_fails_naming_table(settings: Settings) -> None:
    _write_users(settings.users_path, genders=["M", "X", "F"])

    error = _fail(settings, GOOD_ROWS)

    assert f"users {settings.users_path} failed 1 of" in str(error)
    assert "expect_column_values_to_be_in_set(column=gender, value_set=[F, M])" in str(error)
    assert (settings.quarantine_dir / "1998-04-22" / "users.parquet").is_file()


def test_corrupt_partition_gives_clear_error(settings: Settings) -> None:
    partition = _partition(settings, b"PAR1 definitely not parquet")

    with pytest.raises(DataValidationError, match="unreadable or corrupt") as info:
        validate_partition(_config(settings, partition))

    assert str(partition) in str(info.value)
    assert (settings.quarantine_dir / "1998-04-22" / "part-0.parquet").is_file()
    report = json.loads(Path(str(info.value.report_uri)).read_text())
    assert str(partition) in report["tables"]["interactions"]["read_error"]


def test_missing_file_and_naive_interval_are_rejected(settings: Settings) -> None:
    partition = _partition(settings, _interactions(GOOD_ROWS))
    missing = settings.data_dir / "nope.parquet"

    with pytest.raises(FileNotFoundError, match=f"items parquet file not found: {missing}"):
        validate_partition(_config(settings, partition, items_path=str(missing)))
    with pytest.raises(ValueError, match="interval_start=.* must be timezone-aware"):
        validate_partition(_config(settings, partition, interval_start=datetime(1998, 4, 22)))


def test_schema_drift_fails_on_columns_and_dtypes(settings: Settings) -> None:
    naive = _interactions(GOOD_ROWS).set_column(
        3, "event_timestamp", pa.array([r[3].replace(tzinfo=None) for r in GOOD_ROWS])
    )
    partition = _partition(settings, naive.append_column("extra", pa.array([1, 2, 3, 4])))

    with pytest.raises(DataValidationError) as info:
        validate_partition(_config(settings, partition))

    message = str(info.value)
    assert "expect_table_columns_to_match_set" in message and "extra" in message
    assert "expect_column_values_to_be_of_type(column=event_timestamp, type=Timestamp)" in message
    # GX cannot compare naive values with the UTC interval; that surfaces as a failure, not a crash.
    assert "expect_column_values_to_be_between(column=event_timestamp" in message


def test_contract_config_rejects_bad_severity_and_thresholds() -> None:
    with pytest.raises(ValueError, match=r"rating_psi_severity='block'"):
        ContractConfig(rating_psi_severity="block")
    with pytest.raises(ValueError, match="row_count_factor=0.5"):
        ContractConfig(row_count_factor=0.5)
    contract = ContractConfig(warn_only=["users.expect_column_values_to_be_in_set.gender"])  # type: ignore[arg-type]
    assert contract.warn_only == ("users.expect_column_values_to_be_in_set.gender",)
    assert ContractConfig.from_dict(contract.to_dict()) == contract


def test_psi_is_zero_for_equal_shares_and_grows_with_shift() -> None:
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0, abs=1e-3)
    small, large = psi([50, 50], [60, 40]), psi([50, 50], [90, 10])
    # Hand-computed (with the 0.5 pseudo-count per bin): sum((a - e) * ln(a / e)).
    e, a1, a2 = 0.5, 60.5 / 101, 40.5 / 101
    assert small == pytest.approx((a1 - e) * math.log(a1 / e) + (a2 - e) * math.log(a2 / e))
    assert 0 < small < large
    assert psi([100, 0], [0, 100]) < math.inf


def test_warn_only_turns_a_failure_into_a_warning(settings: Settings) -> None:
    _write_users(settings.users_path, genders=["M", "X", "F"])
    partition = _partition(settings, _interactions(GOOD_ROWS))
    key = "users.expect_column_values_to_be_in_set.gender"

    result = validate_partition(
        _config(settings, partition, contract=ContractConfig(warn_only=(key,)))
    )

    assert result.success and len(result.warnings) == 1
    assert "column=gender" in result.warnings[0] and "[X]" in result.warnings[0]
    report = json.loads(Path(result.report_uri).read_text())
    [check] = [e for e in report["expectations"] if e["check"] == key]
    assert check["severity"] == "warn" and check["success"] is False
    assert "no published_dir: no history" in result.notes
    assert Path(result.data_docs_uri).is_file()


def test_validate_and_publish_needs_a_partition(settings: Settings) -> None:
    staged = settings.staging_dir / "date=1998-04-22" / "part-0.parquet"
    config = _config(settings, staged, published_dir=str(settings.interactions_dir))

    with pytest.raises(FileNotFoundError, match="no interactions partition for 1998-04-22"):
        validate_and_publish(config)
    with pytest.raises(ValueError, match="needs ValidateConfig.published_dir"):
        validate_and_publish(_config(settings, staged))


def test_failing_published_day_is_copied_not_removed(settings: Settings) -> None:
    published = _partition(settings, _interactions([*GOOD_ROWS, (2, 20, 9, DAY)]))
    staged = settings.staging_dir / "date=1998-04-22" / "part-0.parquet"
    config = _config(settings, staged, published_dir=str(settings.interactions_dir))

    with pytest.raises(DataValidationError, match="column=rating") as info:
        validate_and_publish(config)

    # Already trusted and perhaps in use downstream: it stays, a copy goes to quarantine.
    assert published.is_file()
    assert (Path(str(info.value.quarantine_uri)) / "part-0.parquet").read_bytes() == (
        published.read_bytes()
    )


def test_staged_day_is_published_and_rerun_is_the_same(settings: Settings) -> None:
    staged = settings.staging_dir / "date=1998-04-22" / "part-0.parquet"
    staged.parent.mkdir(parents=True)
    pq.write_table(_interactions(GOOD_ROWS), staged)
    payload = staged.read_bytes()
    config = _config(settings, staged, published_dir=str(settings.interactions_dir))

    first = validate_and_publish(config)
    again = validate_and_publish(config)

    assert first == again and first.published
    published = settings.interactions_dir / "date=1998-04-22" / "part-0.parquet"
    assert first.partition_uri == str(published) and published.read_bytes() == payload
    assert not staged.parent.exists()
    assert "drift checks skipped: no history (no reference window)" in first.notes
    assert "row-count band skipped: no history" in first.notes
