"""Every bad input in docs/data_contracts.md, run through the real validate stage.

A month of small synthetic partitions is landed once (history bulk-validated and published,
the last day staged); each test copies that home, damages the staged partition and runs
``pipeline.validate_step`` (the DAG's task body) or ``validate_and_publish`` with a custom
contract. Blocked means: the task raises naming the expectation, column and value, the
staged bytes sit in quarantine with the report, and nothing is published for the day.
Warned means: the day is published and the warning is in the result and the report.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from recops.config import Settings
from recops.data import land, partition_path, staged_path, synthesize
from recops.pipeline import run_dir, validate_step
from recops.validation import (
    ContractConfig,
    DataValidationError,
    ValidateConfig,
    ValidationResult,
    validate_and_publish,
)

DAYS = 30


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A landed home (29 published days + 1 staged), built once for the module."""
    home = tmp_path_factory.mktemp("template") / "home"
    settings = Settings(home=home)
    result = land(
        settings,
        *synthesize(rows=3600, users=60, items=80, days=DAYS, seed=11),
        source="synthetic",
        stage_last_days=1,
    )
    assert result.staged_dates == [result.last_date]
    return home, result.last_date


@pytest.fixture()
def env(
    template: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, str]:
    home = tmp_path / "home"
    shutil.copytree(template[0], home)
    monkeypatch.setenv("RECOPS_HOME", str(home))
    return Settings.from_env(), template[1]


def _interval(day: str) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return start, start + timedelta(days=1)


def _restage(settings: Settings, day: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> bytes:
    path = staged_path(settings, day)
    change(pd.read_parquet(path)).to_parquet(path, index=False)
    return path.read_bytes()


def _step(settings: Settings, day: str) -> dict[str, Any]:
    return validate_step(*_interval(day))


def _with_contract(settings: Settings, day: str, contract: ContractConfig) -> ValidationResult:
    start, end = _interval(day)
    return validate_and_publish(
        ValidateConfig(
            interactions_path=str(staged_path(settings, day)),
            users_path=str(settings.users_path),
            items_path=str(settings.items_path),
            interval_start=start,
            interval_end=end,
            report_dir=str(run_dir(settings, start) / "validation"),
            quarantine_dir=str(settings.quarantine_dir),
            published_dir=str(settings.interactions_dir),
            contract=contract,
        )
    )


def _assert_blocked(
    settings: Settings, day: str, staged: bytes, run: Callable[[], object], *needles: str
) -> str:
    with pytest.raises(DataValidationError) as info:
        run()
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    quarantined = settings.quarantine_dir / day
    assert info.value.quarantine_uri == str(quarantined)
    # Nothing lost: the quarantined bytes are the staged bytes; nothing published.
    assert (quarantined / "part-0.parquet").read_bytes() == staged
    report = json.loads((quarantined / "validation.json").read_text())
    assert report["success"] is False and report["message"] == message
    assert not partition_path(settings, day).exists()
    assert not staged_path(settings, day).exists()
    return message


def _assert_warned(settings: Settings, result: dict[str, Any], needle: str) -> None:
    assert result["published"] is True
    assert partition_path(settings, result["partition_date"]).is_file()
    assert any(needle in w for w in result["warnings"]), result["warnings"]
    report = json.loads(Path(result["report_uri"]).read_text())
    assert report["success"] is True and report["warnings"] == result["warnings"]


def _spread(frame: pd.DataFrame, day: str, n: int) -> pd.Series:
    # n evenly spaced, distinct timestamps inside the day.
    start, _ = _interval(day)
    offsets = pd.to_timedelta(range(0, 86_400, max(1, 86_400 // n)), unit="s")[:n]
    return pd.Series(pd.Timestamp(start) + offsets).astype("datetime64[us, UTC]")


def test_clean_staged_day_is_published_with_docs_and_drift(env: tuple[Settings, str]) -> None:
    settings, day = env
    staged = staged_path(settings, day).read_bytes()

    result = _step(settings, day)

    assert result["published"] is True and result["warnings"] == []
    assert partition_path(settings, day).read_bytes() == staged
    assert not staged_path(settings, day).exists()
    assert Path(result["data_docs_uri"]).is_file()
    assert 0 <= result["drift"]["weight_psi"] < 0.2
    assert result["drift"]["reference_days"] == 14
    # Idempotent: the re-run re-validates the published copy and returns the same result.
    assert _step(settings, day) == result


def test_truncated_parquet_is_blocked(env: tuple[Settings, str]) -> None:
    settings, day = env
    path = staged_path(settings, day)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    _assert_blocked(
        settings,
        day,
        path.read_bytes(),
        lambda: _step(settings, day),
        "unreadable or corrupt",
        str(path),
    )


def test_wrong_dtype_is_blocked(env: tuple[Settings, str]) -> None:
    settings, day = env
    staged = _restage(settings, day, lambda f: f.assign(weight=f["weight"].astype("int64")))

    _assert_blocked(
        settings,
        day,
        staged,
        lambda: _step(settings, day),
        "expect_column_values_to_be_of_type(column=weight, type=float64)",
        "observed int64",
    )


def test_twenty_percent_null_keys_are_blocked(env: tuple[Settings, str]) -> None:
    settings, day = env

    def nulls(frame: pd.DataFrame) -> pd.DataFrame:
        user = frame["user_id"].astype("Int64")
        user.iloc[: len(frame) // 5] = pd.NA
        return frame.assign(user_id=user)

    staged = _restage(settings, day, nulls)
    n_null = len(pd.read_parquet(staged_path(settings, day))) // 5

    _assert_blocked(
        settings,
        day,
        staged,
        lambda: _step(settings, day),
        f"expect_column_values_to_not_be_null(column=user_id): {n_null} unexpected values",
    )


def test_out_of_range_ratings_are_blocked(env: tuple[Settings, str]) -> None:
    settings, day = env

    def bad(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame.index[:3], "weight"] = [0.0, 7.0, 9.0]
        return frame

    staged = _restage(settings, day, bad)

    _assert_blocked(
        settings,
        day,
        staged,
        lambda: _step(settings, day),
        "expect_column_values_to_be_between(column=weight, min=1, max=5): 3 unexpected values",
        "e.g. [0, 7, 9]",
    )


def test_duplicate_events_are_blocked(env: tuple[Settings, str]) -> None:
    settings, day = env
    staged = _restage(settings, day, lambda f: pd.concat([f, f.head(4)], ignore_index=True))

    _assert_blocked(
        settings,
        day,
        staged,
        lambda: _step(settings, day),
        "expect_compound_columns_to_be_unique("
        "columns=[user_id, item_id, event_timestamp, event_type])",
        "8 unexpected values",
    )


def test_future_timestamp_is_blocked(env: tuple[Settings, str]) -> None:
    settings, day = env
    future = pd.Timestamp("2999-01-01", tz="UTC")

    def bad(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame.index[0], "event_timestamp"] = future
        return frame

    staged = _restage(settings, day, bad)

    message = _assert_blocked(
        settings,
        day,
        staged,
        lambda: _step(settings, day),
        "expect_column_values_to_be_between(column=event_timestamp",
        "2999-01-01",
    )
    # Named twice: outside the data interval, and in the future.
    assert message.count("column=event_timestamp") == 2


def _new_users(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[:2], "user_id"] = [9999, 8888]
    return frame


def test_users_without_a_profile_row_warn_by_default(env: tuple[Settings, str]) -> None:
    # Users new since the users file, or first seen by POST /v1/events: their day is
    # published (the models read a missing profile as missing values), with a warning.
    settings, day = env
    _restage(settings, day, _new_users)

    result = _step(settings, day)

    _assert_warned(
        settings,
        result,
        "expect_column_values_to_be_in_set(column=user_id, value_set=<60 values>): "
        "2 unexpected values",
    )


def test_users_without_a_profile_row_block_when_configured(env: tuple[Settings, str]) -> None:
    settings, day = env
    staged = _restage(settings, day, _new_users)

    _assert_blocked(
        settings,
        day,
        staged,
        lambda: _with_contract(settings, day, ContractConfig(unknown_user_severity="fail")),
        "expect_column_values_to_be_in_set(column=user_id, value_set=<60 values>): "
        "2 unexpected values",
        "9999",
    )


def test_unknown_item_ids_are_blocked(env: tuple[Settings, str]) -> None:
    settings, day = env

    def bad(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame.index[:2], "item_id"] = [7777, 6666]
        return frame

    staged = _restage(settings, day, bad)

    _assert_blocked(
        settings,
        day,
        staged,
        lambda: _step(settings, day),
        "expect_column_values_to_be_in_set(column=item_id, value_set=<80 values>): "
        "2 unexpected values",
        "7777",
    )


def test_empty_partition_is_blocked(env: tuple[Settings, str]) -> None:
    settings, day = env
    staged = _restage(settings, day, lambda f: f.head(0))

    _assert_blocked(
        settings,
        day,
        staged,
        lambda: _step(settings, day),
        "expect_table_row_count_to_be_between(min=1): observed 0",
    )


def _spike(frame: pd.DataFrame, day: str) -> pd.DataFrame:
    # Four days' worth of events on one day: a duplicated or replayed load.
    big = pd.concat([frame] * 4, ignore_index=True)
    return big.assign(event_timestamp=_spread(big, day, len(big)))


def test_row_count_spike_warns_by_default(env: tuple[Settings, str]) -> None:
    settings, day = env
    _restage(settings, day, lambda f: _spike(f, day))

    result = _step(settings, day)

    _assert_warned(settings, result, "expect_table_row_count_to_be_between(min=")
    assert result["drift"]["row_count"] > 3 * result["drift"]["row_count_trailing_mean"]


def test_row_count_spike_blocks_when_configured(env: tuple[Settings, str]) -> None:
    settings, day = env
    staged = _restage(settings, day, lambda f: _spike(f, day))
    contract = ContractConfig(row_count_severity="fail")

    _assert_blocked(
        settings,
        day,
        staged,
        lambda: _with_contract(settings, day, contract),
        "expect_table_row_count_to_be_between(min=",
    )


def _skew(frame: pd.DataFrame) -> pd.DataFrame:
    # A moderate shift: a third of the ratings become 1 star.
    weight = frame["weight"].copy()
    weight.iloc[::3] = 1.0
    return frame.assign(weight=weight)


def test_drifted_ratings_warn_by_default(env: tuple[Settings, str]) -> None:
    settings, day = env
    _restage(settings, day, _skew)

    result = _step(settings, day)

    _assert_warned(settings, result, "recops_weight_psi(column=weight, max=0.2)")
    assert 0.2 < result["drift"]["weight_psi"] < 1.0


def test_drifted_ratings_block_when_configured(env: tuple[Settings, str]) -> None:
    settings, day = env
    staged = _restage(settings, day, _skew)

    _assert_blocked(
        settings,
        day,
        staged,
        lambda: _with_contract(settings, day, ContractConfig(weight_psi_severity="fail")),
        "recops_weight_psi(column=weight, max=0.2): observed 0.",
    )


def test_extreme_rating_drift_always_blocks(env: tuple[Settings, str]) -> None:
    settings, day = env
    staged = _restage(settings, day, lambda f: f.assign(weight=1.0))

    _assert_blocked(
        settings,
        day,
        staged,
        lambda: _step(settings, day),
        "recops_weight_psi_extreme(column=weight, max=1)",
    )


def test_quarantined_day_fails_again_with_the_same_message(env: tuple[Settings, str]) -> None:
    settings, day = env
    _restage(settings, day, lambda f: f.assign(weight=f["weight"] + 5))
    with pytest.raises(DataValidationError) as first:
        _step(settings, day)

    with pytest.raises(DataValidationError) as again:
        _step(settings, day)

    assert str(again.value) == str(first.value)
    assert not partition_path(settings, day).exists()


def test_bad_restage_never_replaces_the_published_day(env: tuple[Settings, str]) -> None:
    settings, day = env
    good = staged_path(settings, day).read_bytes()
    _step(settings, day)
    staged_path(settings, day).parent.mkdir(parents=True)
    staged_path(settings, day).write_bytes(good)
    bad = _restage(settings, day, lambda f: f.assign(item_id=f["item_id"] + 10_000))

    with pytest.raises(DataValidationError, match="column=item_id"):
        _step(settings, day)

    # The published copy is the one that passed; the rejected one is in quarantine.
    assert partition_path(settings, day).read_bytes() == good
    assert (settings.quarantine_dir / day / "part-0.parquet").read_bytes() == bad
