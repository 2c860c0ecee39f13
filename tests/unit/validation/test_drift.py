"""Tests for the drift and volume checks: PSI, the reference window, new ids and values."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _contract_tables import MOVIELENS, REPO, SHOP
from recops.dataset_spec import load_spec
from recops.layout import Layout, layout_from_spec
from recops.validation import ContractConfig, psi
from recops.validation.drift import (
    History,
    drift_checks,
    load_history,
    new_value_checks,
    row_count_band,
    weight_bins,
)


def _layout(dataset: str) -> Layout:
    return layout_from_spec(load_spec(REPO / "datasets" / f"{dataset}.yaml"))


def test_psi_is_zero_for_equal_shares_and_grows_with_shift() -> None:
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0, abs=1e-3)
    small, large = psi([50, 50], [60, 40]), psi([50, 50], [90, 10])
    # Hand-computed (with the 0.5 pseudo-count per bin): sum((a - e) * ln(a / e)).
    e, a1, a2 = 0.5, 60.5 / 101, 40.5 / 101
    assert small == pytest.approx((a1 - e) * math.log(a1 / e) + (a2 - e) * math.log(a2 / e))
    assert 0 < small < large
    assert psi([100, 0], [0, 100]) < math.inf


def test_weight_bins_are_values_or_deciles() -> None:
    ratings = pd.Series([1.0, 2.0, 2.0, 5.0])

    assert weight_bins(ratings, pd.Series([2.0, 5.0, 5.0])) == ([1, 2, 1], [0, 1, 2])
    # A value the reference never had gets an "other" bin, empty on the reference side.
    assert weight_bins(ratings, pd.Series([3.0, 1.0])) == ([1, 2, 1, 0], [1, 0, 0, 1])
    spread = pd.Series([float(v) for v in range(100)])
    expected, actual = weight_bins(spread, pd.Series([0.5, 99.0, 1000.0]))
    assert len(expected) == 10 and sum(expected) == 100 and min(expected) >= 9
    assert actual[0] == 1 and actual[-1] == 2


def _frame(users: list[int], items: list[int], weights: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": users, "item_id": items, "weight": weights})


def test_load_history_takes_the_last_days_before_the_interval(tmp_path: Path) -> None:
    for day, n in (("1998-04-19", 1), ("1998-04-20", 2), ("1998-04-21", 3), ("1998-04-22", 4)):
        path = tmp_path / f"date={day}" / "part-0.parquet"
        path.parent.mkdir()
        frame = _frame([1] * n, [2] * n, [3.0] * n).assign(event_type="view")
        pq.write_table(pa.Table.from_pandas(frame), path)
    (tmp_path / "date=1998-04-18").mkdir()
    (tmp_path / "date=1998-04-18" / "part-0.parquet").write_bytes(b"corrupt")

    history = load_history(tmp_path, "1998-04-22", 2)
    older = load_history(tmp_path, "1998-04-20", 5)

    assert history.days == ["1998-04-20", "1998-04-21"] and history.counts == [2, 3]
    assert history.frame is not None and list(history.frame.columns) == [
        "user_id", "item_id", "weight"
    ]  # fmt: skip
    assert len(history.frame) == 5
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
    reference = _frame([1] * 60, [10] * 60, [4.0] * 60)
    history = History(days=["d"], counts=[60], frame=reference, notes=[])
    today = _frame(list(range(100, 160)), [10] * 30 + [11] * 30, [1.0] * 60)
    notes: list[str] = []
    layout = _layout(MOVIELENS)

    skipped, _ = drift_checks(today.head(5), history, ContractConfig(), notes, layout=layout)
    checks, drift = drift_checks(today, history, ContractConfig(), notes, layout=layout)

    assert skipped == [] and notes[0].startswith("drift checks skipped: 5 rows today")
    by_key = {c.check: c for c in checks}
    # Every weight moved from 4 to 1: beyond the extreme PSI, which always blocks.
    assert by_key["interactions.weight_psi_extreme"].severity == "fail"
    assert not by_key["interactions.weight_psi_extreme"].success
    assert drift["new_user_share"] == 1.0 and drift["new_item_share"] == 0.5
    assert by_key["interactions.new_item_share"].unexpected_sample == [11]
    assert drift["reference_rows"] == 60.0 and drift["reference_days"] == 1.0
    # Without the users and items tables there is nothing to compare values with.
    assert drift["new_value_share.occupation"] is None


def test_event_type_mix_drift_warns() -> None:
    reference = _frame([1] * 60, [10] * 60, [1.0] * 50 + [5.0] * 10)
    history = History(days=["d"], counts=[60], frame=reference, notes=[])
    today = _frame([1] * 60, [10] * 60, [1.0] * 30 + [5.0] * 30)

    checks, drift = drift_checks(today, history, ContractConfig(), [], layout=_layout(SHOP))

    [check] = [c for c in checks if c.check == "interactions.weight_psi"]
    assert not check.success and check.severity == "warn"
    assert drift["weight_psi"] is not None and 0.2 < drift["weight_psi"] < 1.0
    assert check.describe().startswith("recops_weight_psi(column=weight, max=0.2): observed 0.")


def test_new_categorical_values_are_shared_out_of_todays_events() -> None:
    users = pd.DataFrame({"user_id": [1, 2, 3, 4], "country": ["DE", "FR", "US", None]})
    reference = _frame([1, 2] * 30, [10] * 60, [1.0] * 60)
    # Half of today's events come from a customer in a country the window never saw.
    today = _frame([1] * 20 + [3] * 25 + [4] * 5, [10] * 50, [1.0] * 50)
    history = History(days=["d"], counts=[60], frame=reference, notes=[])
    strict = ContractConfig(new_value_severity="fail")

    checks, drift = drift_checks(today, history, strict, [], layout=_layout(SHOP), users=users)

    [check] = [c for c in checks if c.check == "interactions.new_value_share.country"]
    assert drift["new_value_share.country"] == 0.5 and check.observed_value == 0.5
    assert not check.success and check.severity == "fail"
    assert check.kwargs == {"table": "users", "column": "country", "max_value": 0.2}
    assert check.unexpected_sample == ["US"]
    assert check.describe() == (
        "recops_new_value_share(table=users, column=country, max=0.2): "
        'observed 0.5 ({"new_values": ["US"]})'
    )
    assert ContractConfig().new_value_severity == "warn"


def test_new_value_share_of_a_multi_valued_categorical_counts_any_new_element() -> None:
    layout = _layout(MOVIELENS)
    items = pd.DataFrame(
        {"item_id": [10, 20, 30], "genres": ["Action|Comedy", "Comedy", "Comedy|Western"]}
    )
    reference = _frame([1] * 4, [10, 10, 20, 20], [1.0] * 4)
    today = _frame([1] * 4, [10, 20, 30, 30], [1.0] * 4)
    notes: list[str] = []

    [check] = new_value_checks(
        "items", layout.item_features, items, today, reference, ContractConfig(), notes
    )
    missing = new_value_checks(
        "items", layout.item_features, items.drop(columns="genres"), today, reference,
        ContractConfig(), notes,
    )  # fmt: skip

    assert check.check == "interactions.new_value_share.genres"
    assert check.observed_value == 0.5 and check.unexpected_sample == ["Western"]
    assert not check.success and check.severity == "warn"
    assert missing == [] and notes == ["new-value shares of items skipped: no column(s) genres"]
