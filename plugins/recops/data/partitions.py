"""The published layout: daily partitions, staging, and writing them idempotently.

The published layout under ``RECOPS_HOME/data`` is what every later stage reads:

- ``interactions/date=YYYY-MM-DD/part-0.parquet``: ``recops.layout.INTERACTION_COLUMNS``
  (``user_id``, ``item_id``, ``event_timestamp`` UTC, ``event_type``, ``weight``); one
  folder per UTC day.
- ``users.parquet``: ``user_id``, one column per user attribute of the dataset's spec,
  ``event_timestamp`` (when the profile became valid).
- ``items.parquet``: ``item_id``, the item attributes, ``event_timestamp``.

``recops.layout`` describes the columns and their dtypes.

New days land in ``staging/date=YYYY-MM-DD/part-0.parquet``; the nightly validate stage
checks each against the data contract and publishes or quarantines it
(``recops.validation.validate_and_publish``). ``land`` publishes history in bulk, but only
after one bulk validation with the same suites.

Every file is written to a temporary name and renamed into place, and a partition whose
bytes would not change is left alone, so landing twice changes nothing.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recops.config import Settings
from recops.data.progress import ProgressCallback, report_progress
from recops.errors import DataError
from recops.io import write_if_changed
from recops.layout import INTERACTION_COLUMNS
from recops.records import Record
from recops.validation.contract import ContractConfig
from recops.validation.quarantine import remove_empty_dir
from recops.validation.validate import validate_history

if TYPE_CHECKING:
    import pandas as pd

    from recops.dataset_spec import DatasetSpec

__all__ = [
    "PARTITION_FILE",
    "IngestResult",
    "day_labels",
    "land",
    "list_partitions",
    "list_staged",
    "normalise",
    "parquet_bytes",
    "partition_path",
    "publish",
    "read_interactions",
    "staged_path",
    "write_parquet_atomic",
]


#: The one file of a daily partition.
PARTITION_FILE = "part-0.parquet"


@dataclass(frozen=True, kw_only=True)
class IngestResult(Record):
    """What ingestion published (paths and counts only)."""

    source: str
    interactions_dir: str
    users_uri: str
    items_uri: str
    n_interactions: int
    n_users: int
    n_items: int
    n_partitions: int
    partitions_written: int
    first_date: str
    last_date: str
    staging_dir: str = ""
    staged_dates: list[str] = field(default_factory=list)
    history_report_uri: str = ""


def day_labels(stamps: pd.Series) -> pd.Series:
    """Each UTC time's day as ``YYYY-MM-DD``, the partition name.

    Formats each distinct day once: ``Series.dt.strftime`` formats every row, 12 s for 2M
    events.
    """
    import numpy as np
    import pandas as pd

    utc = pd.to_datetime(stamps, utc=True).dt.tz_convert(None)
    codes, days = pd.factorize(utc.to_numpy().astype("datetime64[D]"))
    labels = np.asarray(days).astype(str).astype(object)
    return pd.Series(labels[codes], index=stamps.index, dtype=object)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as zstd parquet bytes, identical for identical data on every run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    # Strip pandas metadata so identical data gives identical bytes on every run.
    table = table.replace_schema_metadata(None)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> bool:
    """Write ``frame`` to ``path`` via a temp file and rename, unless the bytes are the same.

    Returns:
        True when the file was (re)written, False when identical bytes were already there.
    """
    return write_if_changed(path, parquet_bytes(frame))


def partition_path(settings: Settings, day: str) -> Path:
    """Path of one day's published interactions partition (``day`` is ``YYYY-MM-DD``)."""
    return settings.interactions_dir / f"date={day}" / PARTITION_FILE


def staged_path(settings: Settings, day: str) -> Path:
    """Path of one day's staged (not yet validated) partition (``day`` is ``YYYY-MM-DD``)."""
    return settings.staging_dir / f"date={day}" / PARTITION_FILE


def list_staged(settings: Settings) -> list[Path]:
    """Staged partition files, oldest first."""
    return sorted(settings.staging_dir.glob(f"date=*/{PARTITION_FILE}"))


def list_partitions(settings: Settings, *, until: str | None = None) -> list[Path]:
    """Published partition files, oldest first, optionally only days before ``until``."""
    paths = sorted(settings.interactions_dir.glob(f"date=*/{PARTITION_FILE}"))
    if until is not None:
        paths = [p for p in paths if p.parent.name.removeprefix("date=") < until]
    return paths


def read_interactions(paths: Iterable[Path]) -> pd.DataFrame:
    """Concatenate published partitions, naming the file that fails to read."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames = []
    for path in paths:
        try:
            frames.append(pq.read_table(path).to_pandas())
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(f"cannot read interactions partition {path}: {exc}") from exc
    if not frames:
        raise DataError("no interactions partitions to read")
    return pd.concat(frames, ignore_index=True)


def publish(
    settings: Settings,
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    *,
    source: str,
    keep_days: Iterable[str] = (),
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Write the three tables into the published layout, one partition per UTC day.

    This is the trusted path: it does not validate. Use it for data already validated
    (``land`` bulk-validates history first) or in tests that build published data.
    Partitions of days not present in ``interactions`` are removed, so switching sources
    never leaves a stale day behind, except the days in ``keep_days`` (days that are
    staged: their published copy stays until the staged one passes validation).
    """
    settings.ensure_dirs()
    users, items, interactions = normalise(users, items, interactions)
    days = day_labels(interactions["event_timestamp"])
    written = 0
    wanted: set[Path] = {partition_path(settings, d) for d in keep_days}
    n_days = days.nunique()
    for done, (day, part) in enumerate(interactions.groupby(days, sort=True)):
        report_progress(progress, "publishing daily partitions", done, n_days)
        path = partition_path(settings, str(day))
        wanted.add(path)
        written += write_parquet_atomic(
            part[list(INTERACTION_COLUMNS)].reset_index(drop=True), path
        )
    for stale in list_partitions(settings):
        if stale not in wanted:
            stale.unlink()
            stale.parent.rmdir()
    write_parquet_atomic(users.reset_index(drop=True), settings.users_path)
    write_parquet_atomic(items.reset_index(drop=True), settings.items_path)
    report_progress(progress, "publishing daily partitions", n_days, n_days)
    ordered = sorted(p for p in wanted if p.is_file())
    return IngestResult(
        source=source,
        interactions_dir=str(settings.interactions_dir),
        users_uri=str(settings.users_path),
        items_uri=str(settings.items_path),
        n_interactions=len(interactions),
        n_users=len(users),
        n_items=len(items),
        n_partitions=len(ordered),
        partitions_written=written,
        first_date=ordered[0].parent.name.removeprefix("date=") if ordered else "",
        last_date=ordered[-1].parent.name.removeprefix("date=") if ordered else "",
    )


def normalise(
    users: pd.DataFrame, items: pd.DataFrame, interactions: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Timestamps in ``datetime64[us, UTC]``, interactions sorted by every column.

    Returns:
        ``(users, items, interactions)``, in that order.
    """
    # One timestamp unit everywhere keeps bytes stable and joins exact.
    users = users.assign(event_timestamp=users["event_timestamp"].astype("datetime64[us, UTC]"))
    items = items.assign(event_timestamp=items["event_timestamp"].astype("datetime64[us, UTC]"))
    interactions = interactions.assign(
        event_timestamp=interactions["event_timestamp"].astype("datetime64[us, UTC]")
    )
    interactions = interactions.sort_values(list(INTERACTION_COLUMNS)).reset_index(drop=True)
    return users, items, interactions


def land(
    settings: Settings,
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    *,
    source: str,
    stage_last_days: int = 1,
    progress: ProgressCallback | None = None,
    spec: DatasetSpec | Path | None = None,
) -> IngestResult:
    """Bulk-validate and publish the history; put the last ``stage_last_days`` days in staging.

    The history (every day but the last N) is validated in one Great Expectations run on the
    concatenated frame (same suites as a nightly partition, see
    ``recops.validation.validate_history``) and published only if it passes. The last N
    days are written to ``staging/``, where the nightly validate stage publishes or
    quarantines them. A staged day whose published copy already holds the same bytes (it
    was validated and published before) is not staged again, so landing twice is a no-op.

    The tables are in the published layout of ``spec`` (default: the settings' dataset's
    spec, ``recops.layout.spec_path``), whose contract validates the history.

    Raises:
        DataError: ``stage_last_days`` is negative.
        recops.validation.DataValidationError: The history fails the contract; nothing is
            published or staged.
    """
    from recops.layout import spec_path

    if stage_last_days < 0:
        raise DataError(f"stage_last_days={stage_last_days} must be >= 0")
    contract_spec = spec if spec is not None else spec_path(settings)
    settings.ensure_dirs()
    users, items, interactions = normalise(users, items, interactions)
    day_of = day_labels(interactions["event_timestamp"])
    days = sorted(day_of.unique())
    n_stage = min(stage_last_days, len(days))
    stage_days = days[len(days) - n_stage :]
    is_history = ~day_of.isin(stage_days)
    history = interactions[is_history].reset_index(drop=True)

    report_uri = ""
    if not history.empty:
        report_progress(progress, "validating the history (Great Expectations)", 0, 1)
        checked = validate_history(
            history,
            users,
            items,
            report_dir=settings.data_dir / "reports" / f"history-{source}",
            contract=ContractConfig(),
            label=f"{source} history ({len(days) - n_stage} days)",
            spec=contract_spec,
        )
        report_uri = checked.report_uri
        report_progress(progress, "validating the history (Great Expectations)", 1, 1)
    result = publish(
        settings, history, users, items, source=source, keep_days=stage_days, progress=progress
    )

    staged_written = 0
    staged_dates: list[str] = []
    for day in stage_days:
        part = interactions[day_of == day][list(INTERACTION_COLUMNS)].reset_index(drop=True)
        target = staged_path(settings, day)
        published = partition_path(settings, day)
        if published.is_file() and published.read_bytes() == parquet_bytes(part):
            target.unlink(missing_ok=True)
            remove_empty_dir(target.parent)
            continue
        staged_written += write_parquet_atomic(part, target)
        staged_dates.append(day)
    for stale in list_staged(settings):
        if stale.parent.name.removeprefix("date=") not in staged_dates:
            stale.unlink()
            remove_empty_dir(stale.parent)
    return IngestResult(
        source=source,
        interactions_dir=result.interactions_dir,
        users_uri=result.users_uri,
        items_uri=result.items_uri,
        n_interactions=len(interactions),
        n_users=result.n_users,
        n_items=result.n_items,
        n_partitions=len(days),
        partitions_written=result.partitions_written + staged_written,
        first_date=days[0] if days else "",
        last_date=days[-1] if days else "",
        staging_dir=str(settings.staging_dir),
        staged_dates=staged_dates,
        history_report_uri=report_uri,
    )
