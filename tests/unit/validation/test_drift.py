"""Tests for the drift and volume checks: PSI, the reference window, the row-count band."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from recops.validation import ContractConfig, psi
from recops.validation.drift import History, drift_checks, load_history, row_count_band


def test_psi_is_zero_for_equal_shares_and_grows_with_shift() -> None:
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0, abs=1e-3)
    small, large = psi([50, 50], [60, 40]), psi([50, 50], [90, 10])
    # Hand-computed (with the 0.5 pseudo-count per bin): sum((a - e) * ln(a / e)).
    e, a1, a2 = 0.5, 60.5 / 101, 40.5 / 101
    assert small == pytest.approx((a1 - e) * math.log(a1 / e) + (a2 - e) * math.log(a2 / e))
    assert 0 < small < large
    assert psi([100, 0], [0, 100]) < math.inf


def _frame(users: list[int], items: list[int], ratings: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": users, "item_id": items, "rating": ratings})


def test_load_history_takes_the_last_days_before_the_interval(tmp_path: Path) -> None:
    for day, n in (("1998-04-19", 1), ("1998-04-20", 2), ("1998-04-21", 3), ("1998-04-22", 4)):
        path = tmp_path / f"date={day}" / "part-0.parquet"
        path.parent.mkdir()
        pq.write_table(pa.Table.from_pandas(_frame([1] * n, [2] * n, [3] * n)), path)
    (tmp_path / "date=1998-04-18").mkdir()
    (tmp_path / "date=1998-04-18" / "part-0.parquet").write_bytes(b"corrupt")

    history = load_history(tmp_path, "1998-04-22", 2)
    older = load_history(tmp_path, "1998-04-20", 5)

    assert history.days == ["1998-04-20", "1998-04-21"] and history.counts == [2, 3]
    assert history.frame is not None and len(history.frame) == 5
    assert history.notes == ["history: 2 published partition(s) 1998-04-20..1998-04-21"]
    assert older.days == ["1998-04-19"] and "skipped" in older.notes[0]
    assert load_history(tmp_path, "1998-04-01", 5).frame is None


def test_row_count_band_brackets_the_trailing_mean() -> None:
    notes: list[str] = []
    history = History(days=["a", "b"], counts=[10, 20], frame=None, notes=[])

    assert row_count_band(history, ContractConfig(row_count_factor=2.0), notes) == (7, 30, "warn")
    assert row_count_band(History([], [], None, []), ContractConfig(), notes) is None
    assert notes == ["row-count band skipped: no history"]


def test_drift_checks_skip_small_windows_and_flag_new_ids() -> None:
    reference = _frame([1] * 60, [10] * 60, [4] * 60)
    history = History(days=["d"], counts=[60], frame=reference, notes=[])
    today = _frame(list(range(100, 160)), [10] * 30 + [11] * 30, [1] * 60)
    notes: list[str] = []

    skipped, _ = drift_checks(today.head(5), history, ContractConfig(), notes)
    checks, drift = drift_checks(today, history, ContractConfig(), notes)

    assert skipped == [] and notes[0].startswith("drift checks skipped: 5 rows today")
    by_key = {c.check: c for c in checks}
    # Every rating moved from 4 to 1: beyond the extreme PSI, which always blocks.
    assert by_key["interactions.rating_psi_extreme"].severity == "fail"
    assert not by_key["interactions.rating_psi_extreme"].success
    assert drift["new_user_share"] == 1.0 and drift["new_item_share"] == 0.5
    assert by_key["interactions.new_item_share"].unexpected_sample == [11]
    assert drift["reference_rows"] == 60.0 and drift["reference_days"] == 1.0
