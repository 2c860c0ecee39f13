"""Has a data interval's day arrived? What the nightly waits for before it validates.

Unpausing ``recsys_nightly`` creates a scheduled run for the latest complete day at
once, and every night after; a day nobody fed must not fail the run every night. The
nightly's first task is a sensor in reschedule mode (it holds no worker slot while it
waits) that pokes ``poke_arrival``:

- the day has arrived when anything ``validate`` can work on is there: the day's staged
  partition, its published partition, a quarantine report to re-check, or live events
  in its event log (``recops feed`` and ``POST /v1/events`` write those; ``validate``
  folds them into the staged partition);
- until ``RECOPS_LATE_DATA_WAIT_S`` (default one hour) after the interval's end the
  sensor waits for late data;
- after that, the run is skipped with a message that says what was looked for and how
  to land it: a skipped run is Airflow's "nothing to do", a failed one would page.

A run for an old day (the demo's 1998, a backfill) is past its wait from the start: it
runs when the data is there and is skipped at once when it is not. Only the standard
library and ``recops.config`` are imported at module level (safe at DAG parse time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from recops.config import Settings, env_int

__all__ = [
    "LATE_DATA_POKE_S",
    "LATE_DATA_WAIT_S",
    "Arrival",
    "arrival",
    "poke_arrival",
]

#: How often the sensor looks again (it is rescheduled, not sleeping, in between).
LATE_DATA_POKE_S = 300
#: Default of ``RECOPS_LATE_DATA_WAIT_S``: how long after the interval's end data may be late.
LATE_DATA_WAIT_S = 3600
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arrival:
    """What ``arrival`` found for one day of one dataset.

    Attributes:
        day: The interval's day (``YYYY-MM-DD``).
        dataset: The dataset looked at.
        found: What was there (empty when nothing was).
        looked_at: The places looked at, for the message when nothing was there.
    """

    day: str
    dataset: str
    found: list[str]
    looked_at: list[str]

    @property
    def arrived(self) -> bool:
        return bool(self.found)


def _utc(value: datetime | str) -> datetime:
    # Through ISO text: Airflow passes pendulum DateTimes, whose arithmetic with a stdlib
    # timezone drops it (pendulum 3), so a deadline would come out naive.
    when = datetime.fromisoformat(value if isinstance(value, str) else value.isoformat())
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def arrival(settings: Settings, day: str) -> Arrival:
    """Whether ``day``'s data of ``settings.dataset`` is there for ``validate``."""
    from recops.data import partition_path, staged_path
    from recops.data.event_log import event_log_dir

    events = event_log_dir(settings, day)
    places: list[tuple[str, Path, bool]] = [
        ("staged", staged_path(settings, day), False),
        ("published", partition_path(settings, day), False),
        ("quarantined", settings.quarantine_dir / day / "validation.json", False),
        ("live events", events, True),
    ]
    found = []
    for label, path, is_dir in places:
        there = any(path.glob("*.jsonl")) if is_dir and path.is_dir() else path.is_file()
        if there:
            found.append(f"{label} {path}")
    return Arrival(
        day=day,
        dataset=settings.dataset,
        found=found,
        looked_at=[f"{label} {path}" for label, path, _ in places],
    )


def poke_arrival(
    interval_start: datetime | str,
    interval_end: datetime | str,
    params: dict[str, Any] | None,
    *,
    now: datetime | None = None,
) -> bool:
    """One poke of the nightly's sensor: True once the day is there, False to wait more.

    Raises:
        recops.params.ParamError: A Param the schema refuses (the run fails at once).
        airflow.sdk.exceptions.AirflowSkipException: The wait is over and nothing came.
    """
    from recops.params import merged_params

    p = merged_params(params)
    settings = Settings.from_env().for_dataset(p["dataset"])
    day = _utc(interval_start).strftime("%Y-%m-%d")
    seen = arrival(settings, day)
    if seen.arrived:
        _LOG.info("data of %s for %s is here: %s", seen.dataset, day, "; ".join(seen.found))
        return True
    wait = timedelta(seconds=env_int("RECOPS_LATE_DATA_WAIT_S", LATE_DATA_WAIT_S))
    deadline = _utc(interval_end) + wait
    current = now or datetime.now(UTC)
    where = "; ".join(seen.looked_at)
    if current < deadline:
        _LOG.info(
            "no data of %s for %s yet (looked at %s); waiting for late data until %s",
            seen.dataset, day, where, deadline.isoformat(),
        )  # fmt: skip
        return False
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException(
        f"no data of {seen.dataset} for {day} arrived by {deadline.isoformat()} "
        f"(looked at {where}): nothing to train on, so this run is skipped. "
        "Land a day with `recops feed` (events through the recommendation service), "
        "`recops data import` or `recops data fetch`, then clear this run or trigger one."
    )
