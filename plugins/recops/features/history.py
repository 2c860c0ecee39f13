"""Each user's recent events, online in Feast: the snapshot, live appends and reads.

The ``user_history`` view (entity ``user``) holds, per user, the last
``settings.history_max`` events of every type, most recent first, as three parallel
lists: ``history_item_ids`` (int64), ``history_timestamps`` (epoch microseconds) and
``history_event_types``. Two writers feed it:

- the features stage writes ``history_snapshot`` of the published interactions to the
  view's parquet source (``write_history_source``) and materializes it with the other
  views; each row is stamped at the user's last event;
- ``append_events`` merges live events into what the online store holds and pushes the
  result through ``user_history_push``, stamped at the newest event (or just after the
  row it replaces, when that is not older), under a per-dataset file lock so two
  writers never lose an update.

Both online stores keep the newer of two writes (Redis by itself, SQLite through the
trigger ``recops.features.store.guard_sqlite_order`` adds), so a nightly snapshot older
than the pushed history never replaces it.

``read_histories`` is on the request path of the recommendation service. It reads the
online store through the provider's ``online_read`` on a cached ``FeatureView``: one
round trip, no registry lookup per call, and no lifecycle gate, so reads keep answering
while a materialization holds the view in the MATERIALIZING state (feast#6780).

This module imports pandas and Feast only inside its functions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.errors import DataError
from recops.features.feast_repo import open_store, registry_path
from recops.io import locked

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from feast import FeatureStore, FeatureView

__all__ = [
    "HISTORY_COLUMNS",
    "HISTORY_PUSH_SOURCE",
    "HISTORY_SERVICE",
    "HISTORY_VIEW",
    "UserHistory",
    "append_events",
    "ensure_history_source",
    "history_lock_path",
    "history_query",
    "history_schema",
    "history_snapshot",
    "history_table_sql",
    "history_source_path",
    "read_histories",
    "seen_item_ids",
    "write_history_source",
    "write_history_table",
]

#: The view of each user's recent events.
HISTORY_VIEW = "user_history"
#: The push source live events reach ``HISTORY_VIEW`` through.
HISTORY_PUSH_SOURCE = "user_history_push"
#: The feature service serving reads the history by.
HISTORY_SERVICE = "history_v1"
#: The view's features, in this order.
HISTORY_COLUMNS: tuple[str, str, str] = (
    "history_item_ids",
    "history_timestamps",
    "history_event_types",
)
#: How long a cached reader trusts its view before looking at the registry again (a SQL
#: registry has no file whose mtime would say it changed).
_READER_TTL_S = 60.0
#: The least time between two refreshes: a materialization rewrites the registry several
#: times, and a request should not pay a registry load for each.
_READER_MIN_AGE_S = 5.0


@dataclass(frozen=True)
class UserHistory:
    """One user's recent events, most recent first (the three tuples are parallel).

    Attributes:
        item_ids: The items' int64 ids.
        timestamps_us: When each event happened, in epoch microseconds (UTC).
        event_types: Each event's type (the canonical ``event_type``).
    """

    item_ids: tuple[int, ...] = ()
    timestamps_us: tuple[int, ...] = ()
    event_types: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.item_ids)


def history_source_path(settings: Settings) -> Path:
    """Offline source parquet of the ``user_history`` view."""
    return settings.data_dir / "features" / f"{HISTORY_VIEW}.parquet"


def history_lock_path(settings: Settings) -> Path:
    """The file ``append_events`` locks: one per dataset (its Feast folder)."""
    return settings.feast_dir / f"{HISTORY_VIEW}.lock"


def _arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("user_id", pa.int64()),
            pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
            pa.field(HISTORY_COLUMNS[0], pa.list_(pa.int64())),
            pa.field(HISTORY_COLUMNS[1], pa.list_(pa.int64())),
            pa.field(HISTORY_COLUMNS[2], pa.list_(pa.string())),
        ]
    )


def _history_input(interactions: pd.DataFrame, history_max: int) -> pd.DataFrame:
    """The columns a history snapshot reads, checked (a copy).

    Raises:
        DataError: ``history_max`` is below 1, or a column is missing.
    """
    if history_max < 1:
        raise DataError(f"history_max is {history_max}; keep at least 1 event per user")
    needed = ["user_id", "item_id", "event_timestamp", "event_type"]
    lacking = [c for c in needed if c not in interactions.columns]
    if lacking:
        raise DataError(f"interactions lack the columns {lacking} the user history needs")
    return interactions[needed].copy()


def history_snapshot(
    settings: Settings, interactions: pd.DataFrame, *, history_max: int
) -> pd.DataFrame:
    """One row per user: their last ``history_max`` events, most recent first.

    Identical events (same item, time and type) count once, as ``append_events`` does.
    Events at the same time are ordered by item id, then type, so the snapshot does not
    depend on row order.

    Args:
        settings: Deployment settings (unused today; the signature is shared with the
            other writers).
        interactions: Canonical interactions (``user_id``, ``item_id``,
            ``event_timestamp``, ``event_type``).
        history_max: The most events kept per user.

    Returns:
        ``user_id``, ``event_timestamp`` (the user's last event, UTC) and the three list
        columns, sorted by ``user_id``.

    Raises:
        DataError: ``history_max`` is below 1, or a column is missing.
    """
    import pandas as pd

    del settings
    frame = _history_input(interactions, history_max)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    frame["ts_us"] = frame["event_timestamp"].astype("int64")
    frame = frame.drop_duplicates(["user_id", "item_id", "ts_us", "event_type"])
    frame = frame.sort_values(
        ["user_id", "ts_us", "item_id", "event_type"],
        ascending=[True, False, True, True],
        kind="stable",
    )
    frame = frame[frame.groupby("user_id").cumcount() < history_max]
    if frame.empty:
        return pd.DataFrame(
            {
                "user_id": pd.Series([], dtype="int64"),
                "event_timestamp": pd.Series([], dtype="datetime64[us, UTC]"),
                **{c: pd.Series([], dtype=object) for c in HISTORY_COLUMNS},
            }
        )
    grouped = frame.groupby("user_id", sort=True)
    out = pd.DataFrame(
        {
            "event_timestamp": grouped["event_timestamp"].max(),
            HISTORY_COLUMNS[0]: grouped["item_id"].agg(lambda s: [int(v) for v in s]),
            HISTORY_COLUMNS[1]: grouped["ts_us"].agg(lambda s: [int(v) for v in s]),
            HISTORY_COLUMNS[2]: grouped["event_type"].agg(lambda s: [str(v) for v in s]),
        }
    ).reset_index()
    out["user_id"] = out["user_id"].astype("int64")
    return out[["user_id", "event_timestamp", *HISTORY_COLUMNS]]


def history_table_sql(interactions: pd.DataFrame, *, history_max: int) -> pa.Table:
    """``history_snapshot`` as an Arrow table, computed by DuckDB: the same rows and order.

    Args:
        interactions: Canonical interactions (``user_id``, ``item_id``,
            ``event_timestamp``, ``event_type``).
        history_max: The most events kept per user.

    Returns:
        The snapshot in the view source's schema.

    Raises:
        DataError: ``history_max`` is below 1, or a column is missing.
    """
    import duckdb
    import pandas as pd

    frame = _history_input(interactions, history_max)
    frame["ts_us"] = (
        pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    ).astype("int64")
    frame = frame.drop(columns="event_timestamp")
    frame["event_type"] = frame["event_type"].astype(object)
    sql = history_query("frame", history_max)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("frame", frame)
        table = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    return table.cast(_arrow_schema())


def history_query(relation: str, history_max: int) -> str:
    """DuckDB SQL giving ``history_snapshot``'s rows from ``relation``.

    Args:
        relation: A table or view with ``user_id``, ``item_id``, ``ts_us`` (epoch
            microseconds) and ``event_type``.
        history_max: The most events kept per user.

    Returns:
        The query; cast its result to ``history_schema()``.
    """
    items, times, types = HISTORY_COLUMNS
    # Ties in time go by item id, then type (nulls last), as in history_snapshot; a null
    # type becomes the string "None" there, so it does here too.
    return f"""
WITH f AS (SELECT DISTINCT user_id, item_id, ts_us, event_type FROM {relation}),
r AS (
    SELECT *, row_number() OVER (
        PARTITION BY user_id ORDER BY ts_us DESC, item_id, event_type NULLS LAST) AS rn
    FROM f
)
SELECT CAST(user_id AS BIGINT) AS user_id,
       make_timestamp(MAX(ts_us)) AS event_timestamp,
       list(CAST(item_id AS BIGINT) ORDER BY rn) AS "{items}",
       list(CAST(ts_us AS BIGINT) ORDER BY rn) AS "{times}",
       list(COALESCE(CAST(event_type AS VARCHAR), 'None') ORDER BY rn) AS "{types}"
FROM r WHERE rn <= {int(history_max)}
GROUP BY user_id ORDER BY user_id
"""


def history_schema() -> pa.Schema:
    """The Arrow schema of the ``user_history`` view's source."""
    return _arrow_schema()  # type: ignore[no-any-return]


def write_history_table(settings: Settings, table: pa.Table) -> Path:
    """Write a snapshot already built (``history_query``) where the view reads it.

    Unchanged bytes are left alone, so a rerun on the same data changes nothing.

    Returns:
        The parquet path (``history_source_path``).
    """
    import io

    import pyarrow.parquet as pq

    from recops.io import write_if_changed

    sink = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(None), sink, compression="zstd")
    path = history_source_path(settings)
    write_if_changed(path, sink.getvalue())
    return path


def write_history_source(settings: Settings, interactions: pd.DataFrame) -> Path:
    """Write the snapshot of ``interactions`` where the ``user_history`` view reads it.

    Unchanged bytes are left alone, so a rerun on the same data changes nothing.

    Args:
        settings: Whose dataset (and ``history_max``).
        interactions: The canonical interactions the history is built from.

    Returns:
        The parquet path (``history_source_path``).
    """
    import pyarrow as pa

    if settings.engine == "pandas":
        snap = history_snapshot(settings, interactions, history_max=settings.history_max)
        table = pa.Table.from_pandas(snap, schema=_arrow_schema(), preserve_index=False)
    else:
        # DuckDB builds the lists without a Python object per event (about 10x faster
        # at millions of events); the Spark engine's driver holds the frame too.
        table = history_table_sql(interactions, history_max=settings.history_max)
    return write_history_table(settings, table)


def ensure_history_source(settings: Settings) -> Path:
    """The view's source, written empty when the features stage has not written it yet.

    ``feast apply`` needs the file to exist; an empty snapshot materializes nothing.
    """
    import pandas as pd

    path = history_source_path(settings)
    if not path.is_file():
        empty = pd.DataFrame(
            {
                "user_id": pd.Series([], dtype="int64"),
                "item_id": pd.Series([], dtype="int64"),
                "event_timestamp": pd.Series([], dtype="datetime64[us, UTC]"),
                "event_type": pd.Series([], dtype=object),
            }
        )
        write_history_source(settings, empty)
    return path


@dataclass
class _Reader:
    """A store and its ``user_history`` view, kept between reads."""

    store: FeatureStore
    view: FeatureView
    loaded_at: float
    registry_mtime: int


_READERS: dict[tuple[str, ...], _Reader] = {}
_READERS_LOCK = threading.Lock()


def _registry_mtime(settings: Settings) -> int:
    path = registry_path(settings)
    return path.stat().st_mtime_ns if path.is_file() else 0


def _view_of(store: FeatureStore) -> FeatureView:
    return store.registry.get_feature_view(HISTORY_VIEW, store.project, allow_cache=True)


def _reader(settings: Settings, store: FeatureStore | None) -> _Reader:
    """A cached store and view for ``settings``, refreshed when the registry changes.

    A refresh that fails (a registry caught mid-write by a concurrent apply or
    materialization) keeps the cached reader: the view's online table does not move, so
    a slightly stale view still reads the current rows.
    """
    key = (
        str(settings.feature_repo),
        str(settings.feast_dir),
        settings.feast_project,
        settings.online_store,
        settings.redis_url,
        str(id(store)) if store is not None else "",
    )
    now = time.monotonic()
    mtime = _registry_mtime(settings)
    with _READERS_LOCK:
        cached = _READERS.get(key)
        if cached is not None:
            held_s = now - cached.loaded_at
            changed = cached.registry_mtime != mtime and held_s >= _READER_MIN_AGE_S
            if not changed and held_s < _READER_TTL_S:
                return cached
        try:
            if store is None:
                # A fresh store after the registry changed: its view (and table) may be new.
                store = open_store(settings)
            else:
                store.refresh_registry()  # type: ignore[no-untyped-call]
            view = _view_of(store)
        except Exception:
            if cached is None:
                raise
            cached.loaded_at = now
            return cached
        reader = _Reader(store=store, view=view, loaded_at=now, registry_mtime=mtime)
        _READERS[key] = reader
        return reader


def _entity_key(user_id: int) -> Any:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=int(user_id))])


def _read_rows(
    reader: _Reader, user_ids: Sequence[int]
) -> list[tuple[datetime | None, UserHistory]]:
    """The stored row time and history of each id (None and empty when absent)."""
    store = reader.store
    provider = store._get_provider()
    rows = provider.online_read(
        config=store.config,
        table=reader.view,
        entity_keys=[_entity_key(u) for u in user_ids],
        requested_features=list(HISTORY_COLUMNS),
    )
    out: list[tuple[datetime | None, UserHistory]] = []
    for ts, values in rows:
        if not values:
            out.append((None, UserHistory()))
            continue
        items = values.get(HISTORY_COLUMNS[0])
        stamps = values.get(HISTORY_COLUMNS[1])
        types = values.get(HISTORY_COLUMNS[2])
        history = UserHistory(
            item_ids=tuple(items.int64_list_val.val) if items is not None else (),
            timestamps_us=tuple(stamps.int64_list_val.val) if stamps is not None else (),
            event_types=tuple(types.string_list_val.val) if types is not None else (),
        )
        if ts is not None and ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        out.append((ts, history))
    return out


def read_histories(
    settings: Settings, user_ids: Sequence[int], *, store: FeatureStore | None = None
) -> dict[int, UserHistory]:
    """The online history of each user, in one online-store read.

    Args:
        settings: Whose dataset's online store.
        user_ids: The users (int64 ids).
        store: A feature store to read through; a cached one on ``settings`` when omitted.

    Returns:
        Every id of ``user_ids``, mapped to its history; a user with no row maps to an
        empty ``UserHistory``.
    """
    ids = list(dict.fromkeys(int(u) for u in user_ids))
    if not ids:
        return {}
    rows = _read_rows(_reader(settings, store), ids)
    return {uid: history for uid, (_, history) in zip(ids, rows, strict=True)}


def seen_item_ids(history: UserHistory, seen_types: Sequence[str]) -> list[int]:
    """The items the user has seen, most recent first, each once.

    Args:
        history: The user's history.
        seen_types: Event types that make an item seen; every type when empty.

    Returns:
        Item ids in order of their most recent seen event.
    """
    wanted = set(seen_types)
    out: dict[int, None] = {}
    for item, kind in zip(history.item_ids, history.event_types, strict=False):
        if not wanted or kind in wanted:
            out.setdefault(int(item), None)
    return list(out)


def _merge(history: UserHistory, new: list[tuple[int, int, str]], history_max: int) -> UserHistory:
    """``history`` with the ``new`` events (item, time, type), newest first, capped.

    Identical events count once. At equal times a later event of ``new`` comes first,
    then earlier ones, then what was stored.
    """
    stored = zip(history.item_ids, history.timestamps_us, history.event_types, strict=False)
    merged = dict.fromkeys([*reversed(new), *stored])
    events = sorted(merged, key=lambda e: -e[1])[:history_max]
    return UserHistory(
        item_ids=tuple(e[0] for e in events),
        timestamps_us=tuple(e[1] for e in events),
        event_types=tuple(e[2] for e in events),
    )


def append_events(
    settings: Settings, events: pd.DataFrame, *, store: FeatureStore | None = None
) -> dict[int, UserHistory]:
    """Merge events into their users' online histories and push them.

    Read, merge, cap and push happen under a per-dataset file lock, so concurrent
    writers (threads or processes on this host) never lose each other's events. Each
    pushed row is stamped at its newest event, or one microsecond after the row it
    replaces when that is not older, so the stores' keep-the-newer rule never drops it.

    Args:
        settings: Whose dataset's online store, and ``history_max``.
        events: Canonical rows (``recops.layout.INTERACTION_COLUMNS``, int64 ids).
        store: A feature store to write through; a cached one on ``settings`` when omitted.

    Returns:
        Each user's new history.

    Raises:
        DataError: A column is missing.
    """
    import pandas as pd
    from feast.data_source import PushMode

    needed = ["user_id", "item_id", "event_timestamp", "event_type"]
    lacking = [c for c in needed if c not in events.columns]
    if lacking:
        raise DataError(f"events lack the columns {lacking} the user history needs")
    if events.empty:
        return {}
    stamps = pd.to_datetime(events["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    by_user: dict[int, list[tuple[int, int, str]]] = {}
    for user, item, ts_us, kind in zip(
        events["user_id"].astype("int64"),
        events["item_id"].astype("int64"),
        stamps.astype("int64"),
        events["event_type"].astype(str),
        strict=True,
    ):
        by_user.setdefault(int(user), []).append((int(item), int(ts_us), str(kind)))
    users = list(by_user)
    with locked(history_lock_path(settings)):
        reader = _reader(settings, store)
        stored = _read_rows(reader, users)
        out: dict[int, UserHistory] = {}
        rows: list[dict[str, Any]] = []
        for user, (row_ts, history) in zip(users, stored, strict=True):
            merged = _merge(history, by_user[user], settings.history_max)
            out[user] = merged
            stamp = pd.Timestamp(merged.timestamps_us[0], unit="us", tz="UTC")
            if row_ts is not None and pd.Timestamp(row_ts) >= stamp:
                # Strictly newer than the stored row: Redis drops a write whose time is
                # not above the stored one, and the merge already holds that row.
                stamp = pd.Timestamp(row_ts) + pd.Timedelta(microseconds=1)
            rows.append(
                {
                    "user_id": user,
                    "event_timestamp": stamp,
                    HISTORY_COLUMNS[0]: list(merged.item_ids),
                    HISTORY_COLUMNS[1]: list(merged.timestamps_us),
                    HISTORY_COLUMNS[2]: list(merged.event_types),
                }
            )
        frame = pd.DataFrame(rows)
        frame["user_id"] = frame["user_id"].astype("int64")
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        reader.store.push(HISTORY_PUSH_SOURCE, frame, to=PushMode.ONLINE)
    return out
