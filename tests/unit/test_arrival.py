"""``recops.arrival``: the nightly waits for its day, then skips rather than fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from recops.arrival import arrival, poke_arrival
from recops.config import Settings

START = "2026-12-05T00:00:00+00:00"
END = "2026-12-06T00:00:00+00:00"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RECOPS_DATASET", raising=False)
    monkeypatch.delenv("RECOPS_LATE_DATA_WAIT_S", raising=False)
    return Settings.from_env()


def test_waits_for_late_data_then_skips_naming_what_it_looked_for(settings: Settings) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    end = datetime.fromisoformat(END)
    assert poke_arrival(START, END, {}, now=end + timedelta(minutes=5)) is False
    with pytest.raises(AirflowSkipException) as skipped:
        poke_arrival(START, END, {}, now=end + timedelta(hours=2))
    message = str(skipped.value)
    assert "2026-12-05" in message and "recops feed" in message
    assert str(settings.staging_dir) in message
    assert not settings.home.exists()  # looking wrote nothing


def test_airflows_pendulum_interval_is_understood(settings: Settings) -> None:
    import pendulum
    from airflow.sdk.exceptions import AirflowSkipException

    # What Airflow hands a task as data_interval_start / data_interval_end.
    start, end = pendulum.datetime(2026, 12, 5, tz="UTC"), pendulum.datetime(2026, 12, 6, tz="UTC")
    assert poke_arrival(start, end, {}, now=end + timedelta(minutes=5)) is False
    with pytest.raises(AirflowSkipException, match="2026-12-05"):
        poke_arrival(start, end, {})  # now: years after the interval


def test_the_wait_is_a_deployment_setting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECOPS_LATE_DATA_WAIT_S", str(6 * 3600))
    later = datetime.fromisoformat(END) + timedelta(hours=2)
    assert poke_arrival(START, END, {}, now=later) is False


@pytest.mark.parametrize("kind", ["staged", "published", "live events"])
def test_any_data_validate_can_use_counts_as_arrived(settings: Settings, kind: str) -> None:
    from recops.data import partition_path, staged_path
    from recops.data.event_log import event_log_dir

    day = "2026-12-05"
    target = {
        "staged": staged_path(settings, day),
        "published": partition_path(settings, day),
        "live events": event_log_dir(settings, day) / "host-1.jsonl",
    }[kind]
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert arrival(settings, day).found == [
        f"{kind} {target if kind != 'live events' else target.parent}"
    ]
    assert poke_arrival(START, END, {}, now=datetime(2030, 1, 1, tzinfo=UTC)) is True


def test_bad_params_are_refused_before_waiting(settings: Settings) -> None:
    from recops.errors import ParamError

    with pytest.raises(ParamError, match="bogus"):
        poke_arrival(START, END, {"bogus": 1}, now=datetime.fromisoformat(END))
