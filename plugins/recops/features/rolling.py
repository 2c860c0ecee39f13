"""Rolling features: daily ``user_activity`` / ``item_popularity`` snapshots and their manifest.

They are computed from the published partitions, one snapshot per entity per UTC day
stamped at the end of that day: an interaction at time ``t`` can only join a snapshot
stamped at or before ``t``, which holds events from before the start of ``t``'s day, so a
label never sees itself. A manifest beside the sources records how far they reach and the
hash of every partition they read, so a call recomputes only what is new or changed.

The features are the same for every dataset, since they read only the canonical
interaction columns: how many events an entity had in the last 7 and 30 days, and the
mean ``weight`` of its last 30 days' events (the explicit value, such as a rating, when
the spec has one; else the event type's weight, so purchases count more than views).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.features.feast_repo import ROLLING_VIEWS, rolling_source_path
from recops.io import atomic_write_text, sha256_file, write_if_changed
from recops.records import Record

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "LONG_WINDOW_DAYS",
    "ROLLING_COUNTS",
    "ROLLING_FEATURES",
    "ROLLING_VERSION",
    "SHORT_WINDOW_DAYS",
    "RollingConfig",
    "RollingResult",
    "compute_rolling_features",
]

#: Bumped whenever the rolling computation changes, so cached outputs are rebuilt.
#: 2: the same features for every dataset, from the canonical ``weight``.
ROLLING_VERSION = "2"
#: The rolling windows, in days; a snapshot for day D covers days D-w+1 .. D.
SHORT_WINDOW_DAYS = 7
LONG_WINDOW_DAYS = 30
#: Each rolling view's features, in source column order (after the key and the stamp).
ROLLING_FEATURES: dict[str, tuple[str, ...]] = {
    "user_activity": ("user_events_7d", "user_events_30d", "user_weight_mean_30d"),
    "item_popularity": ("item_events_7d", "item_events_30d", "item_weight_mean_30d"),
}
#: The event counts (int64; 0 means no events in the window); the means are float64 and
#: NaN without events, since a mean of nothing is undefined.
ROLLING_COUNTS: frozenset[str] = frozenset(
    name for names in ROLLING_FEATURES.values() for name in names if "_events_" in name
)
_KEYS = {"user_activity": "user_id", "item_popularity": "item_id"}
_MANIFEST = "_manifest.json"


@dataclass(frozen=True, kw_only=True)
class RollingConfig(Record):
    """Inputs of the rolling-feature computation.

    Attributes:
        interval_end: Snapshots are computed for every day ending at or before this time
            (a UTC midnight; anything else is rounded down to one).
    """

    interval_end: datetime


@dataclass(frozen=True, kw_only=True)
class RollingResult(Record):
    """Where the rolling sources are and how far they reach.

    Attributes:
        uris: View name -> offline source parquet.
        sha256: View name -> hex sha256 of that parquet.
        through: The newest snapshot stamp the sources hold (ISO, UTC).
        recomputed_from: First day whose snapshots this call (re)wrote; empty if none.
        n_rows: View name -> rows in the source.
    """

    uris: dict[str, str]
    sha256: dict[str, str]
    through: str
    recomputed_from: str
    n_rows: dict[str, int]


def _day(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return datetime(ts.year, ts.month, ts.day, tzinfo=UTC)


def _windows(daily: np.ndarray, width: int) -> np.ndarray:
    """Trailing sums over ``width`` days along axis 1 (``daily[:, d]`` = day ``d``).

    Summed day by day in a fixed order (newest first) rather than as differences of a
    cumulative sum: float weights then round the same whatever day the grid starts on,
    so sources built in one step or incrementally are byte-identical.
    """
    import numpy as np

    sums = np.zeros_like(daily)
    for offset in range(min(width, daily.shape[1])):
        sums[:, offset:] += daily[:, : daily.shape[1] - offset]
    return sums


def _rolling_table(
    events: pd.DataFrame,
    view: str,
    grid_start: datetime,
    emit_from: datetime,
    emit_to: datetime,
) -> pa.Table:
    """Snapshots of ``view`` for the days ``[emit_from, emit_to)`` from events since ``grid_start``.

    An entity gets a row for day D while it had events in the 30 days up to D, and once
    more on the first day that window is empty, so a join inside the TTL reads zeros and
    not the last non-zero value.
    """
    import numpy as np
    import pyarrow as pa

    key = _KEYS[view]
    short_name, long_name, mean_name = ROLLING_FEATURES[view]
    n_days = (emit_to - grid_start).days
    first = (emit_from - grid_start).days
    day_idx = ((events["event_timestamp"] - grid_start).dt.days).to_numpy()
    keys, inv = np.unique(events[key].to_numpy(), return_inverse=True)
    counts = np.zeros((len(keys), n_days), dtype=np.int64)
    weights = np.zeros((len(keys), n_days), dtype=np.float64)
    np.add.at(counts, (inv, day_idx), 1)
    np.add.at(weights, (inv, day_idx), events["weight"].to_numpy(dtype=np.float64))
    short = _windows(counts, SHORT_WINDOW_DAYS)
    long = _windows(counts, LONG_WINDOW_DAYS)
    wsum = _windows(weights, LONG_WINDOW_DAYS)
    prev = np.concatenate([np.zeros((len(keys), 1), dtype=np.int64), long[:, :-1]], axis=1)
    emit = (long > 0) | (prev > 0)
    emit[:, :first] = False
    # Day-major order: rows sorted by (event_timestamp, key) without another sort.
    d_idx, k_idx = np.nonzero(emit.T)
    stamps = np.datetime64(grid_start.replace(tzinfo=None), "us") + (d_idx + 1).astype(
        "timedelta64[D]"
    )
    n_long = long[k_idx, d_idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_long > 0, wsum[k_idx, d_idx] / np.maximum(n_long, 1), np.nan)
    return pa.table(
        {
            key: pa.array(keys[k_idx].astype(np.int64)),
            "event_timestamp": pa.array(stamps, type=pa.timestamp("us", tz="UTC")),
            short_name: pa.array(short[k_idx, d_idx]),
            long_name: pa.array(n_long),
            mean_name: pa.array(mean, from_pandas=True),
        }
    )


def _empty_rolling(view: str) -> pa.Table:
    import pyarrow as pa

    fields = [
        pa.field(_KEYS[view], pa.int64()),
        pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
        *(
            pa.field(name, pa.int64() if name in ROLLING_COUNTS else pa.float64())
            for name in ROLLING_FEATURES[view]
        ),
    ]
    return pa.schema(fields).empty_table()


def _write_table(table: pa.Table, path: Path) -> bool:
    """Write ``table`` as zstd parquet unless ``path`` already holds these exact bytes."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(None), sink, compression="zstd")
    return write_if_changed(path, sink.getvalue())


def _empty_events() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            c: pd.Series(dtype=t)
            for c, t in (
                ("user_id", "int64"),
                ("item_id", "int64"),
                ("event_timestamp", "datetime64[us, UTC]"),
                ("weight", "float64"),
            )
        }
    )


def _snapshots(
    settings: Settings,
    partitions: list[Path],
    grid_start: datetime,
    emit_from: datetime,
    emit_to: datetime,
) -> dict[str, pa.Table]:
    """Each view's snapshots for ``[emit_from, emit_to)``, on the settings' engine."""
    if settings.engine in ("duckdb", "spark"):
        import functools

        from recops.features.rolling_spark import rolling_tables_spark
        from recops.features.rolling_sql import RollingGrid, rolling_tables_duckdb

        # The same query on either engine; Spark also needs the settings (its master).
        compute = (
            rolling_tables_duckdb
            if settings.engine == "duckdb"
            else functools.partial(rolling_tables_spark, settings)
        )
        grid = RollingGrid(
            grid_start=grid_start,
            emit_from=emit_from,
            emit_to=emit_to,
            short_days=SHORT_WINDOW_DAYS,
            long_days=LONG_WINDOW_DAYS,
        )
        return compute(partitions, ROLLING_FEATURES, grid)
    import pandas as pd

    # recops.data pulls in the layout (numpy); the features package stays light to import.
    from recops.data import read_interactions

    events = read_interactions(partitions) if partitions else _empty_events()
    events = events[events["event_timestamp"] < pd.Timestamp(emit_to)]
    return {
        view: _rolling_table(events, view, grid_start, emit_from, emit_to) for view in ROLLING_VIEWS
    }


def compute_rolling_features(
    config: RollingConfig, settings: Settings | None = None
) -> RollingResult:
    """Write the daily rolling snapshots up to ``config.interval_end`` (incremental, idempotent).

    Only days not yet computed, or whose 30-day window covers a partition whose bytes
    changed since the last call, are recomputed; the rest of each source is kept. An
    older interval than what the sources reach changes nothing (snapshots never go back),
    and the same inputs always give byte-identical parquet.

    Args:
        config: The interval end.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        The sources' URIs and hashes, and which days were recomputed.

    Raises:
        DataError: A partition cannot be read.
    """
    import pyarrow.parquet as pq

    from recops.data import list_partitions

    settings = settings or Settings.from_env()
    out_dir = settings.data_dir / "features"
    manifest_path = out_dir / _MANIFEST
    paths = {view: rolling_source_path(settings, view) for view in ROLLING_VIEWS}
    manifest: dict[str, Any] = {}
    if manifest_path.is_file() and all(p.is_file() for p in paths.values()):
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("version") != ROLLING_VERSION:
            manifest = {}
    old_through = datetime.fromisoformat(manifest["through"]) if manifest.get("through") else None
    target = _day(config.interval_end)
    if old_through is not None:
        target = max(target, old_through)

    partitions = list_partitions(settings, until=target.date().isoformat())
    hashes = {p.parent.name.removeprefix("date="): sha256_file(p) for p in partitions}
    old_hashes: dict[str, str] = manifest.get("partitions", {})
    changed = sorted(d for d in set(hashes) | set(old_hashes) if hashes.get(d) != old_hashes.get(d))
    first_data = _day(datetime.fromisoformat(min(hashes)).replace(tzinfo=UTC)) if hashes else target
    if old_through is None:
        recompute = first_data
    else:
        recompute = old_through
        if changed:
            recompute = min(recompute, datetime.fromisoformat(changed[0]).replace(tzinfo=UTC))
        recompute = max(recompute, first_data)

    tables: dict[str, pa.Table] = {}
    if recompute < target:
        # One extra day of history: the "window just emptied" row needs yesterday's count.
        grid_start = recompute - timedelta(days=LONG_WINDOW_DAYS + 1)
        wanted = [
            p
            for p in partitions
            if p.parent.name.removeprefix("date=") >= grid_start.date().isoformat()
        ]
        new = _snapshots(settings, wanted, grid_start, recompute, target)
        for view, path in paths.items():
            import pyarrow as pa
            import pyarrow.compute as pc

            kept = pq.read_table(path) if manifest else _empty_rolling(view)
            cutoff = pa.scalar(recompute, type=pa.timestamp("us", tz="UTC"))
            kept = kept.filter(pc.less_equal(kept["event_timestamp"], cutoff))
            tables[view] = pa.concat_tables([kept, new[view].cast(kept.schema)])
            _write_table(tables[view], path)
        manifest = {"version": ROLLING_VERSION, "through": target.isoformat(), "partitions": hashes}
        # The exact bytes the manifest always had (no final newline): reruns compare hashes.
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
    elif not manifest:
        for view, path in paths.items():
            tables[view] = _empty_rolling(view)
            _write_table(tables[view], path)
    return RollingResult(
        uris={v: str(p) for v, p in paths.items()},
        sha256={v: sha256_file(p) for v, p in paths.items()},
        through=(old_through if recompute >= target and old_through else target).isoformat(),
        recomputed_from=recompute.isoformat() if recompute < target else "",
        n_rows={v: pq.ParquetFile(p).metadata.num_rows for v, p in paths.items()},
    )
