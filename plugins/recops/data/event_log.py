"""Live events in: validated against the data contract, logged durably, folded into staging.

The recommendation service takes events in the dataset's own schema (the spec's
``events`` section: its column names, its keys, its event types and value range):

- ``parse_events`` checks every record (required fields, types, declared event type,
  value in range, parsable time, well-formed keys) and raises ``EventError`` on the first
  bad one, naming its index, field and value, before anything is written; only then are
  new string keys interned (under a lock, durably) and the records converted to the
  canonical rows by ``recops.data.convert.to_layout``, as the import converts files;
- ``append`` writes canonical rows as JSON lines to
  ``staging/events/date=YYYY-MM-DD/<host>-<pid>.jsonl`` and fsyncs them (and, for a new
  file, its folder) before it returns, so an event acknowledged after ``append`` survives
  a crash of the process or the machine;
- ``compact`` folds one day's logs into the staged partition
  ``staging/date=YYYY-MM-DD/part-0.parquet`` the nightly validates: merged with what is
  staged, de-duplicated, written atomically; a torn last line (a crash mid-write) is
  skipped. The logs stay, so compaction is a pure fold that may run any number of times.

This module imports pandas only inside its functions.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.errors import DataError, ParamError
from recops.io import locked
from recops.layout import INTERACTION_COLUMNS, Layout

if TYPE_CHECKING:
    import pandas as pd

    from recops.config import Settings
    from recops.dataset_spec import DatasetSpec

__all__ = [
    "EVENTS_DIR",
    "EventError",
    "append",
    "compact",
    "event_log_dir",
    "parse_events",
]

#: The folder under ``settings.staging_dir`` that holds the logs.
EVENTS_DIR = "events"
#: Unix times a record may carry (before 1970 and up to about the year 5138): beyond
#: them pandas cannot hold the time, and a milliseconds value sent as seconds is refused.
_SECONDS_RANGE = (-1e11, 1e11)
_MS_RANGE = (-1e14, 1e14)
_LOG = logging.getLogger(__name__)
#: One lock per log file in this process: lines of two threads never interleave.
_FILE_LOCKS: dict[Path, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


class EventError(ParamError):
    """An event the data contract refuses; nothing of its batch was written.

    Attributes:
        index: The record's position in the batch.
        field: The dataset's column name at fault (``""`` for the record itself).
        value: The value found (None when the field is missing).
    """

    def __init__(self, index: int, field: str, value: Any, problem: str) -> None:
        where = f"field {field!r}" if field else "the record"
        super().__init__(f"event {index}: {where} {problem} (got {value!r})")
        self.index = index
        self.field = field
        self.value = value


def event_log_dir(settings: Settings, day: str) -> Path:
    """The folder of one UTC day's logs (``day`` is ``YYYY-MM-DD``)."""
    return settings.staging_dir / EVENTS_DIR / f"date={day}"


def _spec_of(settings: Settings, layout_or_spec: Layout | DatasetSpec) -> DatasetSpec:
    from recops.layout import active_spec

    if isinstance(layout_or_spec, Layout):
        return active_spec(settings, layout_or_spec.name)
    return layout_or_spec


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: Any) -> float | None:
    """A finite number from a JSON number or numeric text; None otherwise."""
    if _is_number(value):
        number = float(value)
    elif isinstance(value, str) and value.strip():
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _check_key(index: int, field: str, value: Any, key_type: str) -> Any:
    """The key as the conversion takes it (int for integer keys, text for string keys)."""
    if key_type == "integer":
        number = _as_float(value)
        if number is None or not number.is_integer():
            raise EventError(index, field, value, "is not a whole-number key")
        return int(number)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise EventError(index, field, value, "is not a non-empty string key")
    return str(value)


def _check_time(index: int, field: str, value: Any, fmt: str) -> Any:
    import pandas as pd

    from recops.dataset_spec import is_time_pattern

    if fmt == "iso8601" or is_time_pattern(fmt):
        what = "an ISO 8601 time" if fmt == "iso8601" else f"a time written as {fmt!r}"
        if not isinstance(value, str):
            raise EventError(index, field, value, f"is not {what}")
        try:
            pd.to_datetime([value], format="ISO8601" if fmt == "iso8601" else fmt, utc=True)
        except (ValueError, OverflowError):
            raise EventError(index, field, value, f"is not {what}") from None
        return value
    number = _as_float(value)
    ms = fmt == "unix_milliseconds"
    low, high = _MS_RANGE if ms else _SECONDS_RANGE
    if number is None or not low < number < high:
        unit = "milliseconds" if ms else "seconds"
        raise EventError(index, field, value, f"is not a time in unix {unit}")
    return number


def _check_record(index: int, record: Any, spec: DatasetSpec) -> dict[str, Any]:
    """One record's fields (the dataset's column names), checked and normalised."""
    ev = spec.events
    if not isinstance(record, Mapping):
        raise EventError(index, "", record, "is not a JSON object")
    required = [ev.user_key, ev.item_key, ev.timestamp.column]
    required += [c.column for c in (ev.event_type, ev.value) if c is not None]
    for column in required:
        if column not in record or record[column] is None:
            raise EventError(index, column, record.get(column), "is required")
    out = {
        ev.user_key: _check_key(index, ev.user_key, record[ev.user_key], spec.users.key_type),
        ev.item_key: _check_key(index, ev.item_key, record[ev.item_key], spec.items.key_type),
        ev.timestamp.column: _check_time(
            index, ev.timestamp.column, record[ev.timestamp.column], ev.timestamp.format
        ),
    }
    if ev.event_type is not None:
        kind = record[ev.event_type.column]
        if not isinstance(kind, str) or kind not in ev.event_type.weights:
            allowed = ", ".join(ev.event_type.weights)
            raise EventError(index, ev.event_type.column, kind, f"is not one of: {allowed}")
        out[ev.event_type.column] = kind
    if ev.value is not None:
        raw = record[ev.value.column]
        number = _as_float(raw)
        low, high = ev.value.range.low, ev.value.range.high
        if number is None:
            raise EventError(index, ev.value.column, raw, "is not a number")
        if (low is not None and number < low) or (high is not None and number > high):
            raise EventError(index, ev.value.column, raw, f"is outside [{low:g}, {high:g}]")
        out[ev.value.column] = number
    return out


def _empty_table(spec: DatasetSpec, side: str) -> pd.DataFrame:
    """A users or items frame with no rows: ``to_layout`` needs one when attributes exist."""
    import pandas as pd

    table = getattr(spec, side)
    columns = [table.key, *(a.column for a in table.attributes)]
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})


def parse_events(
    settings: Settings, layout_or_spec: Layout | DatasetSpec, records: list[dict[str, Any]]
) -> pd.DataFrame:
    """Validate events in the dataset's own schema and convert them to canonical rows.

    Every record is checked before anything is written; new string keys are then interned
    under a lock on the dataset's key folder, so concurrent callers give one key one id.

    Args:
        settings: Whose dataset (its key tables).
        layout_or_spec: The dataset's spec, or its layout (the spec is then loaded).
        records: JSON objects keyed by the spec's event column names.

    Returns:
        ``recops.layout.INTERACTION_COLUMNS``, one row per record, in order.

    Raises:
        EventError: The first record the contract refuses (index, field and value named).
    """
    import pandas as pd

    from recops.data.convert import to_layout
    from recops.data.keys import read_key_table, write_key_table

    spec = _spec_of(settings, layout_or_spec)
    if not isinstance(records, list):
        raise EventError(0, "", records, "is not a JSON list of events")
    if not records:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in INTERACTION_COLUMNS})
    checked = [_check_record(i, r, spec) for i, r in enumerate(records)]
    events = pd.DataFrame(checked)
    frames = {"events": events}
    for side in ("users", "items"):
        if getattr(spec, side).attributes:
            frames[side] = _empty_table(spec, side)
    string_sides = [s for s in ("users", "items") if getattr(spec, s).key_type == "string"]
    with locked(settings.keys_dir / ".intern.lock"):
        tables = {side: read_key_table(settings, side) for side in string_sides}
        # Before interning: a refused batch must not leave new keys behind.
        _check_references(settings, spec, checked, tables)
        converted = to_layout(spec, frames, key_tables=tables)
        for side in string_sides:
            if len(converted.key_tables[side]) != len(tables[side]):
                write_key_table(settings, side, converted.key_tables[side])
    return converted.interactions.reset_index(drop=True)


def _check_references(
    settings: Settings,
    spec: DatasetSpec,
    records: list[dict[str, Any]],
    key_tables: Mapping[str, pd.DataFrame],
) -> None:
    """Refuse an event on an item the published catalogue does not list
    (``recops.data.references``): the nightly's contract would block its whole day.

    Raises:
        EventError: The first such record (its index, the item key column and the key).
    """
    from recops.data.references import known_ids

    path = settings.items_path
    if not path.is_file():
        return  # nothing published yet: the import's contract speaks first
    known = known_ids(path, "item_id")
    column = spec.events.item_key
    ids: dict[str, int] = {}
    keys = key_tables.get("items")
    if spec.items.key_type == "string" and keys is not None and len(keys):
        # Only the batch's keys: the table can hold millions.
        asked = keys[keys["key"].isin({str(r[column]) for r in records})]
        ids = dict(zip(asked["key"].astype(str), asked["id"].astype("int64"), strict=True))
    for index, record in enumerate(records):
        key = record[column]
        found = ids.get(str(key)) if spec.items.key_type == "string" else int(key)
        if found is None or int(found) not in known:
            raise EventError(
                index,
                column,
                key,
                f"is not an item of {spec.name}'s catalogue ({path.name}); new items come "
                "in with the items file (`recops data import`)",
            )


def _lock_for(path: Path) -> threading.Lock:
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, threading.Lock())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _line(row: Any) -> str:
    return json.dumps(
        {
            "user_id": int(row.user_id),
            "item_id": int(row.item_id),
            # Epoch microseconds: exact, and what the published dtype holds.
            "event_timestamp": int(row.ts_us),
            "event_type": str(row.event_type),
            "weight": float(row.weight),
        },
        sort_keys=True,
    )


def append(settings: Settings, events: pd.DataFrame) -> list[Path]:
    """Log canonical rows durably, one JSON line each, in the log of their UTC day.

    Returns only once the lines are on disk (``fsync`` of the file, and of its folders
    when they or the file are new): acknowledge an event only after this returns.

    Args:
        settings: Whose dataset's staging folder.
        events: ``recops.layout.INTERACTION_COLUMNS``.

    Returns:
        The log files written to, one per day.

    Raises:
        DataError: A column is missing.
    """
    import pandas as pd

    from recops.data.partitions import day_labels

    lacking = [c for c in INTERACTION_COLUMNS if c not in events.columns]
    if lacking:
        raise DataError(f"events lack the canonical columns {lacking}")
    if events.empty:
        return []
    frame = events[list(INTERACTION_COLUMNS)].copy()
    stamps = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    frame["ts_us"] = stamps.astype("int64")
    days = day_labels(stamps)
    name = f"{socket.gethostname()}-{os.getpid()}.jsonl"
    written: list[Path] = []
    for day, part in frame.groupby(days, sort=True):
        folder = event_log_dir(settings, str(day))
        new_dirs = [p for p in (folder.parent, folder) if not p.is_dir()]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        payload = "".join(_line(row) + "\n" for row in part.itertuples(index=False))
        with _lock_for(path):
            is_new = not path.exists()
            with path.open("ab") as handle:
                # A torn line left by a crashed writer of the same name (a reused pid)
                # is closed first, so it cannot swallow this batch's first line.
                if handle.tell() > 0:
                    with path.open("rb") as check:
                        check.seek(-1, os.SEEK_END)
                        if check.read(1) != b"\n":
                            handle.write(b"\n")
                handle.write(payload.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
        if is_new:
            _fsync_dir(folder)
        for made in new_dirs:
            _fsync_dir(made.parent)
        written.append(path)
    return written


def _read_log(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The complete lines of one log, and how many lines were skipped as torn."""
    rows: list[dict[str, Any]] = []
    skipped = 0
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({c: row[c] for c in INTERACTION_COLUMNS})
        except (ValueError, KeyError, TypeError):
            skipped += 1
    return rows, skipped


def compact(settings: Settings, day: str) -> Path | None:
    """Fold one day's logs into its staged partition, atomically and idempotently.

    The logged rows are merged with the staged partition when there is one (else with the
    published partition of the day, since publishing replaces that file), identical rows
    kept once, sorted, and written by temp file and rename; unchanged bytes are left
    alone, so running it again changes nothing. A day whose logged events are all
    published already stages nothing. The logs are kept.

    Args:
        settings: Whose dataset's staging folder.
        day: The UTC day, ``YYYY-MM-DD``.

    Returns:
        The staged partition, or None when nothing is logged for ``day`` or everything
        logged is published already.
    """
    import pandas as pd

    from recops.data.partitions import partition_path, staged_path, write_parquet_atomic

    logs = sorted(event_log_dir(settings, day).glob("*.jsonl"))
    rows: list[dict[str, Any]] = []
    for log in logs:
        found, skipped = _read_log(log)
        rows += found
        if skipped:
            _LOG.warning("%s: skipped %d torn line(s)", log, skipped)
    if not rows:
        return None
    logged = pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS))
    logged["event_timestamp"] = pd.to_datetime(logged["event_timestamp"], unit="us", utc=True)
    path = staged_path(settings, day)
    published = partition_path(settings, day)
    frames = [logged]
    if path.is_file():
        frames.insert(0, pd.read_parquet(path)[list(INTERACTION_COLUMNS)])
    elif published.is_file():
        # A day already published (a re-run, or events that came late): the staged
        # partition must hold the published rows too, since publishing replaces the file.
        frames.insert(0, pd.read_parquet(published)[list(INTERACTION_COLUMNS)])
    merged = pd.concat(frames, ignore_index=True).astype(
        {
            "user_id": "int64",
            "item_id": "int64",
            "event_timestamp": "datetime64[us, UTC]",
            "event_type": object,
            "weight": "float64",
        }
    )
    merged["event_type"] = merged["event_type"].astype(str).astype(object)
    merged = merged.drop_duplicates().sort_values(
        ["event_timestamp", "user_id", "item_id", "event_type", "weight"], kind="stable"
    )
    if not path.is_file() and published.is_file() and len(merged) == len(frames[0]):
        return None  # every logged event is published already: nothing to stage again
    write_parquet_atomic(merged.reset_index(drop=True), path)
    return path
