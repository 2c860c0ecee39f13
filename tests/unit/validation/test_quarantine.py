"""Tests for rejection: the quarantine copy, the report that condemned it, the error."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from _contract_tables import DAY, config, fail, good_rows, interactions, partition
from recops.config import Settings
from recops.validation import DataValidationError, validate_and_publish
from recops.validation.quarantine import quarantine, remove_empty_dir


def test_out_of_range_weights_fail_and_quarantine(movielens: Settings) -> None:
    rows = [*good_rows(movielens), (2, 20, "interaction", 0.0, DAY)]
    rows.append((3, 10, "interaction", 7.0, DAY))

    error = fail(movielens, rows)

    message = str(error)
    assert "failed 1 of" in message
    assert "expect_column_values_to_be_between(column=weight, min=1, max=5)" in message
    assert "2 unexpected values, e.g. [0, 7]" in message
    # Quarantine holds the exact partition bytes and the report that condemned it.
    quarantined = movielens.quarantine_dir / "1998-04-22"
    assert error.quarantine_uri == str(quarantined)
    path = Path(movielens.interactions_dir / "date=1998-04-22" / "part-0.parquet")
    assert (quarantined / "part-0.parquet").read_bytes() == path.read_bytes()
    report = json.loads((quarantined / "validation.json").read_text())
    assert report["success"] is False and report["n_failed"] == 1
    [failed] = [e for e in report["expectations"] if not e["success"]]
    assert failed["columns"] == ["weight"] and failed["unexpected_count"] == 2
    assert sorted(failed["unexpected_sample"]) == [0, 7]
    # Airflow may pickle the exception between processes.
    clone = pickle.loads(pickle.dumps(error))
    assert str(clone) == message and clone.report_uri == error.report_uri


def test_failing_published_day_is_copied_not_removed(shop: Settings) -> None:
    published = partition(shop, interactions([*good_rows(shop), (2, 20, "return", 1.0, DAY)]))
    staged = shop.staging_dir / "date=1998-04-22" / "part-0.parquet"
    cfg = config(shop, staged, published_dir=str(shop.interactions_dir))

    with pytest.raises(DataValidationError, match=r"column=event_type.*\[return\]") as info:
        validate_and_publish(cfg)

    # Already trusted and perhaps in use downstream: it stays, a copy goes to quarantine.
    assert published.is_file()
    assert (Path(str(info.value.quarantine_uri)) / "part-0.parquet").read_bytes() == (
        published.read_bytes()
    )


def test_failing_staged_day_is_moved_and_a_rerun_repeats_the_message(shop: Settings) -> None:
    staged = shop.staging_dir / "date=1998-04-22" / "part-0.parquet"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"not parquet")
    cfg = config(shop, staged, published_dir=str(shop.interactions_dir))

    with pytest.raises(DataValidationError) as first:
        validate_and_publish(cfg)
    with pytest.raises(DataValidationError) as again:
        validate_and_publish(cfg)

    assert not staged.parent.exists()
    assert str(again.value) == str(first.value)
    assert again.value.quarantine_uri == first.value.quarantine_uri


def test_quarantine_replaces_an_earlier_copy(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"new")
    target = tmp_path / "q" / "1998-04-22"
    target.mkdir(parents=True)
    (target / "stale.bin").write_bytes(b"old")

    assert quarantine(target, [(source, "part-0.parquet")]) == target

    assert sorted(p.name for p in target.iterdir()) == ["part-0.parquet"]
    assert [p.name for p in target.parent.iterdir()] == ["1998-04-22"]


def test_remove_empty_dir_leaves_full_and_missing_folders_alone(tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "f").touch()
    empty = tmp_path / "empty"
    empty.mkdir()

    for path in (full, empty, tmp_path / "missing"):
        remove_empty_dir(path)

    assert full.is_dir() and not empty.exists()
