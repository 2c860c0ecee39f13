"""Tests for the validate stage's entry points: real Great Expectations on tiny tables."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from _contract_tables import DAY, GOOD_ROWS, config, interactions, partition
from recops.config import Settings
from recops.errors import LateDataError, ParamError
from recops.validation import (
    DataValidationError,
    ValidationResult,
    validate_and_publish,
    validate_history,
    validate_partition,
)


def test_import_is_cheap() -> None:
    code = (
        "import sys, recops.validation; "
        "heavy = {'great_expectations', 'pandas', 'pyarrow'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_good_partition_passes_and_writes_report(settings: Settings) -> None:
    path = partition(settings, interactions(GOOD_ROWS))

    result = validate_partition(config(settings, path))

    assert isinstance(result, ValidationResult)
    assert result.success and result.n_failed == 0
    assert result.n_rows == len(GOOD_ROWS)
    assert result.partition_date == "1998-04-22"
    assert result.partition_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    report = json.loads(Path(result.report_uri).read_text())
    assert report["success"] is True
    assert len(report["expectations"]) == result.n_expectations > 20
    assert {e["table"] for e in report["expectations"]} == {"interactions", "users", "items"}
    assert all(e["success"] for e in report["expectations"])
    assert not settings.quarantine_dir.exists() or not any(settings.quarantine_dir.iterdir())


def test_corrupt_partition_gives_clear_error(settings: Settings) -> None:
    path = partition(settings, b"PAR1 definitely not parquet")

    with pytest.raises(DataValidationError, match="unreadable or corrupt") as info:
        validate_partition(config(settings, path))

    assert str(path) in str(info.value)
    assert (settings.quarantine_dir / "1998-04-22" / "part-0.parquet").is_file()
    report = json.loads(Path(str(info.value.report_uri)).read_text())
    assert str(path) in report["tables"]["interactions"]["read_error"]


def test_missing_file_and_naive_interval_are_rejected(settings: Settings) -> None:
    path = partition(settings, interactions(GOOD_ROWS))
    missing = settings.data_dir / "nope.parquet"

    with pytest.raises(FileNotFoundError, match=f"items parquet file not found: {missing}"):
        validate_partition(config(settings, path, items_path=str(missing)))
    with pytest.raises(ValueError, match="interval_start=.* must be timezone-aware"):
        validate_partition(config(settings, path, interval_start=datetime(1998, 4, 22)))


def test_missing_file_is_late_data_and_bad_interval_a_param_error(settings: Settings) -> None:
    path = partition(settings, interactions(GOOD_ROWS))

    # Late data is retried; a bad interval is permanent (both keep their builtin bases).
    with pytest.raises(LateDataError):
        validate_partition(config(settings, path, users_path=str(settings.data_dir / "x")))
    with pytest.raises(ParamError, match="interval_end=.* must be after interval_start"):
        validate_partition(config(settings, path, interval_end=DAY))


def test_validate_and_publish_needs_a_partition(settings: Settings) -> None:
    staged = settings.staging_dir / "date=1998-04-22" / "part-0.parquet"
    cfg = config(settings, staged, published_dir=str(settings.interactions_dir))

    with pytest.raises(FileNotFoundError, match="no interactions partition for 1998-04-22"):
        validate_and_publish(cfg)
    with pytest.raises(ValueError, match="needs ValidateConfig.published_dir"):
        validate_and_publish(config(settings, staged))


def test_staged_day_is_published_and_rerun_is_the_same(settings: Settings) -> None:
    staged = settings.staging_dir / "date=1998-04-22" / "part-0.parquet"
    staged.parent.mkdir(parents=True)
    pq.write_table(interactions(GOOD_ROWS), staged)
    payload = staged.read_bytes()
    cfg = config(settings, staged, published_dir=str(settings.interactions_dir))

    first = validate_and_publish(cfg)
    again = validate_and_publish(cfg)

    assert first == again and first.published
    published = settings.interactions_dir / "date=1998-04-22" / "part-0.parquet"
    assert first.partition_uri == str(published) and published.read_bytes() == payload
    assert not staged.parent.exists()
    assert "drift checks skipped: no history (no reference window)" in first.notes
    assert "row-count band skipped: no history" in first.notes


def test_validate_history_checks_frames_in_memory(settings: Settings, tmp_path: Path) -> None:
    frame = interactions(GOOD_ROWS).to_pandas()
    users = pd.read_parquet(settings.users_path)
    items = pd.read_parquet(settings.items_path)

    result = validate_history(frame, users, items, report_dir=tmp_path / "report", label="h")

    assert result.success and result.partition_uri == "h" and result.n_rows == len(GOOD_ROWS)
    assert result.partition_date == "1998-04-22"
    assert Path(result.report_uri).parent == tmp_path / "report"
    bad = frame.assign(rating=[1, 2, 3, 6])
    with pytest.raises(DataValidationError, match=r"interactions h failed 1 of") as info:
        validate_history(bad, users, items, report_dir=tmp_path / "bad", label="h")
    assert info.value.quarantine_uri is None
    assert json.loads((tmp_path / "bad" / "validation.json").read_text())["success"] is False
