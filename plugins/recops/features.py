"""The features stage: rolling features, ``feast apply``, materialization, training sets.

Training rows come only from ``get_historical_features`` on a versioned feature service,
with the interactions as the entity dataframe, so each row carries the feature values that
were valid at its own event time and never a later one.

Rolling features (``user_activity``, ``item_popularity``) are computed here from the
published partitions, one snapshot per entity per UTC day stamped at the end of that day:
an interaction at time ``t`` can only join a snapshot stamped at or before ``t``, which
holds events from before the start of ``t``'s day, so a label never sees itself.

Materialization is incremental and ordered: an interval that ends before what a view
already holds is skipped, and the SQLite online store refuses row by row to replace a
value with an older one (Feast's SQLite store upserts blindly; Redis compares itself).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.data import GENRES, DataError, list_partitions, read_interactions, sha256_file
from recops.records import Record

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from feast import FeatureStore

#: Where materialization starts the first time (the profile tables carry old timestamps).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RESULT_FILE = "result.json"
_SUCCESS = "_SUCCESS"
#: Bumped whenever the rolling computation changes, so cached outputs are rebuilt.
ROLLING_VERSION = "1"
#: The rolling windows, in days; a snapshot for day D covers days D-w+1 .. D.
SHORT_WINDOW_DAYS = 7
LONG_WINDOW_DAYS = 30
ROLLING_VIEWS: tuple[str, ...] = ("user_activity", "item_popularity")
_MANIFEST = "_manifest.json"
#: The Feast project every feature_store*.yaml names.
_PROJECT = "recops"

#: Ranking-set fills where no snapshot is valid: no events in the window means counts of
#: 0, no top genre (-1) with a share of 0; the mean rating stays NaN (undefined).
_NO_EVENTS_FILL: dict[str, float] = {
    "user_events_7d": 0, "user_events_30d": 0, "item_events_7d": 0, "item_events_30d": 0,
    "user_top_genre_30d": -1, "user_top_genre_share_30d": 0.0,
}  # fmt: skip
_INT_COLUMNS: tuple[str, ...] = (
    "user_id", "item_id", "rating", "age", "release_year", "genre_mask", "user_events_7d",
    "user_events_30d", "item_events_7d", "item_events_30d", "user_top_genre_30d",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class FeaturesConfig(Record):
    """Inputs of the features stage.

    Attributes:
        interval_start: Start of the data interval (inclusive).
        interval_end: End of the data interval (exclusive); the training set's as-of time.
        output_dir: Folder for this interval's outputs (one per data interval).
        feature_service: The versioned Feast feature service the retrieval model pins.
        ranking_service: The feature service of the ranking set; empty to skip it.
        materialize: Whether to push features up to ``interval_end`` to the online store.
    """

    interval_start: datetime
    interval_end: datetime
    output_dir: str
    feature_service: str = "retrieval_v1"
    ranking_service: str = "ranking_v1"
    materialize: bool = True


@dataclass(frozen=True, kw_only=True)
class FeaturesResult(Record):
    """Where the point-in-time training sets and the as-of profile snapshots are."""

    training_set_uri: str
    users_uri: str
    items_uri: str
    feature_service: str
    as_of: str
    n_rows: int
    n_users: int
    n_items: int
    fingerprint: str
    training_set_sha256: str
    partition_hashes: dict[str, str] = field(default_factory=dict)
    materialized: dict[str, str] = field(default_factory=dict)
    ranking_set_uri: str = ""
    ranking_service: str = ""
    ranking_set_sha256: str = ""
    rolling: dict[str, str] = field(default_factory=dict)


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


# --- feast plumbing ---------------------------------------------------------------------


def rolling_source_path(settings: Settings, view: str) -> Path:
    """Offline source parquet of a rolling feature view (read by ``feature_repo``)."""
    return settings.data_dir / "features" / f"{view}.parquet"


def _yaml_path(settings: Settings) -> Path:
    if settings.online_store == "redis":
        name = (
            "feature_store.scale.yaml"
            if settings.profile == "scale"
            else "feature_store.redis.yaml"
        )
    else:
        name = "feature_store.yaml"
    return settings.feature_repo / name


@contextlib.contextmanager
def _recops_home_env(settings: Settings) -> Iterator[None]:
    # feature_store*.yaml and the definitions read these variables; pin them to the
    # resolved settings for the duration of the call, then put back whatever was there.
    wanted = {"RECOPS_HOME": str(settings.home), "RECOPS_REDIS_URL": settings.redis_url}
    old = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def open_store(settings: Settings) -> FeatureStore:
    """A ``FeatureStore`` on the repo, with the online store ``settings`` selects.

    The yaml is expanded with the settings' ``RECOPS_HOME`` and ``RECOPS_REDIS_URL``,
    whatever the process environment says.
    """
    from feast import FeatureStore

    yaml_path = _yaml_path(settings)
    if not yaml_path.is_file():
        raise FileNotFoundError(f"Feast repo config {yaml_path} is missing")
    with _recops_home_env(settings):
        return FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=yaml_path)


def feast_ui_command(settings: Settings, port: int) -> tuple[list[str], dict[str, str]]:
    """The ``feast ui`` command line and environment for the repo ``settings`` selects.

    Args:
        settings: Deployment settings (the repo, RECOPS_HOME, the online store).
        port: Port for the UI on 127.0.0.1.

    Returns:
        ``(argv, env)``: the argv runs the ``feast`` next to this Python; ``env`` holds
        the variables the repo yaml expands, to be merged into the process environment.

    Raises:
        FileNotFoundError: No features were built yet (the Feast registry is missing).
    """
    registry = settings.home / "feast" / "registry.db"
    if settings.profile != "scale" and not registry.is_file():
        raise FileNotFoundError(
            f"no Feast registry at {registry}: run the nightly (`recops demo`) first"
        )
    feast = Path(sys.executable).parent / "feast"
    argv = [
        str(feast), "-c", str(settings.feature_repo), "-f", str(_yaml_path(settings)),
        "ui", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    return argv, {"RECOPS_HOME": str(settings.home), "RECOPS_REDIS_URL": settings.redis_url}


def apply_repo(settings: Settings) -> FeatureStore:
    """Run ``feast apply`` on the feature repo and return the store.

    Args:
        settings: Deployment settings (the repo folder, RECOPS_HOME, the online store).

    Returns:
        A ``FeatureStore`` whose registry holds the repo's current definitions.
    """
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    repo = settings.feature_repo
    yaml_path = _yaml_path(settings)
    if not yaml_path.is_file():
        raise FileNotFoundError(f"Feast repo config {yaml_path} is missing")
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    for view in ROLLING_VIEWS:
        if not rolling_source_path(settings, view).is_file():
            raise FileNotFoundError(
                f"rolling source {rolling_source_path(settings, view)} is missing; "
                "run compute_rolling_features first"
            )
    # apply_total chdirs into the repo and imports its files by module name; keep our
    # cwd, make the import independent of it, and drop cached definition modules so a
    # changed RECOPS_HOME (their source paths) is picked up within one process.
    cwd = os.getcwd()
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(repo.resolve())):
            del sys.modules[name]
    sys.path.insert(0, str(repo))
    try:
        with _recops_home_env(settings):
            config = load_repo_config(repo, yaml_path)
            apply_total(config, repo, skip_source_validation=False)
            store = open_store(settings)
    finally:
        sys.path.remove(str(repo))
        os.chdir(cwd)
    if settings.online_store == "sqlite":
        _guard_sqlite_order(settings, store)
    return store


def _sqlite_path(settings: Settings) -> Path:
    return settings.feast_dir / "online_store.db"


def _guard_sqlite_order(settings: Settings, store: FeatureStore) -> None:
    # Feast's SQLite store upserts without comparing event_ts, so an older write replaces
    # a newer value. A BEFORE UPDATE trigger makes the store itself drop such a write,
    # row by row, as Redis does; equal times still write (a corrected snapshot goes in).
    # Tables are recreated by apply when a view changes, so this runs after every apply.
    path = _sqlite_path(settings)
    conn = sqlite3.connect(path)
    try:
        with conn:
            for view in store.list_feature_views():
                table = f"{store.project}_{view.name}"
                exists = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)
                ).fetchone()
                if not exists:
                    continue
                conn.execute(
                    f'CREATE TRIGGER IF NOT EXISTS "{table}__keep_newer" '
                    f'BEFORE UPDATE ON "{table}" FOR EACH ROW '
                    "WHEN NEW.event_ts < OLD.event_ts BEGIN SELECT RAISE(IGNORE); END"
                )
    finally:
        conn.close()


def materialize(
    store: FeatureStore, end: datetime, *, on_view_done: Callable[[str], None] | None = None
) -> dict[str, str]:
    """Materialize every feature view up to ``end``, incrementally after the first time.

    An interval older than what a view already holds is skipped; on SQLite a trigger
    (see ``apply_repo``) also drops any single row older than the stored one, so neither
    path can put older values over newer ones. Views are written one at a time and each
    records its end only once written, so a killed run is finished by a plain retry.

    Args:
        store: The feature store (from ``apply_repo``).
        end: Materialize events up to this time (inclusive).
        on_view_done: Called with each view's name once its data and end are recorded.

    Returns:
        For each feature view, the end time its online data now reaches.
    """
    reached: dict[str, str] = {}
    for view in sorted(store.list_feature_views(), key=lambda v: v.name):
        last = view.most_recent_end_time
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        if last is None:
            # First time: materialize_incremental would start at now - ttl and miss
            # history older than that, so bootstrap with an explicit window.
            store.materialize(start_date=_EPOCH, end_date=end, feature_views=[view.name])
        elif last < end:
            store.materialize_incremental(end_date=end, feature_views=[view.name])
        reached[view.name] = max(end, last).isoformat() if last else end.isoformat()
        if on_view_done is not None:
            on_view_done(view.name)
    return reached


def _redis_client(settings: Settings) -> Any:
    import redis

    host_port, *params = settings.redis_url.split(",")
    host, _, port = host_port.rpartition(":")
    kwargs: dict[str, Any] = {}
    for param in params:
        key, _, value = param.partition("=")
        kwargs[key.strip()] = int(value) if key.strip() == "db" else value
    return redis.Redis(host=host or "127.0.0.1", port=int(port or 6379), **kwargs)


def dump_online_store(settings: Settings | None = None) -> dict[str, str]:
    """Every row the online store holds, as a sorted, comparable dict.

    Reads the store's own tables (SQLite) or hashes (Redis, this project's keys only), so
    two dumps are equal exactly when the stores hold the same bytes and event times.

    Args:
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        ``{"<table or key>/<field>": "<value hex>@<event time>"}`` in key order.
    """
    settings = settings or Settings.from_env()
    rows: dict[str, str] = {}
    if settings.online_store == "redis":
        client = _redis_client(settings)
        try:
            # Feast keys a Redis hash by the serialized entity key followed by the project.
            suffix = _PROJECT.encode()
            for key in sorted(k for k in client.scan_iter(count=1000) if k.endswith(suffix)):
                for name, value in sorted(client.hgetall(key).items()):
                    rows[f"{key.hex()}/{name.hex()}"] = value.hex()
        finally:
            client.close()
        return rows
    path = _sqlite_path(settings)
    if not path.exists():
        return rows
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE ? ORDER BY name",
                (f"{_PROJECT}_%",),
            )
        ]
        for table in tables:
            query = f'SELECT entity_key, feature_name, value, event_ts FROM "{table}" ORDER BY entity_key, feature_name'
            for key, feature, value, ts in conn.execute(query):
                rows[f"{table}/{bytes(key).hex()}/{feature}"] = f"{bytes(value).hex()}@{ts}"
    finally:
        conn.close()
    return rows


# --- rolling features -------------------------------------------------------------------


def _day(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return datetime(ts.year, ts.month, ts.day, tzinfo=UTC)


def _windows(counts: np.ndarray, width: int) -> np.ndarray:
    """Trailing sums over ``width`` days along axis 1 (``counts[:, d]`` = day ``d``)."""
    import numpy as np

    pad = np.zeros((counts.shape[0], 1) + counts.shape[2:], dtype=counts.dtype)
    cs = np.concatenate([pad, counts.cumsum(axis=1)], axis=1)
    days = np.arange(counts.shape[1])
    return cs[:, days + 1] - cs[:, np.maximum(days + 1 - width, 0)]


def _rolling_table(
    events: pd.DataFrame,
    key: str,
    grid_start: datetime,
    emit_from: datetime,
    emit_to: datetime,
    genres: bool,
) -> pa.Table:
    """Snapshots for the days ``[emit_from, emit_to)``, from events since ``grid_start``.

    An entity gets a row for day D while it had events in the 30 days up to D, and once
    more on the first day that window is empty, so a join inside the TTL reads zeros and
    not the last non-zero value.
    """
    import numpy as np
    import pyarrow as pa

    n_days = (emit_to - grid_start).days
    first = (emit_from - grid_start).days
    day_idx = ((events["event_timestamp"] - grid_start).dt.days).to_numpy()
    keys, inv = np.unique(events[key].to_numpy(), return_inverse=True)
    counts = np.zeros((len(keys), n_days), dtype=np.int64)
    ratings = np.zeros((len(keys), n_days), dtype=np.int64)
    np.add.at(counts, (inv, day_idx), 1)
    np.add.at(ratings, (inv, day_idx), events["rating"].to_numpy())
    short = _windows(counts, SHORT_WINDOW_DAYS)
    long = _windows(counts, LONG_WINDOW_DAYS)
    rsum = _windows(ratings, LONG_WINDOW_DAYS)
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
        mean = np.where(n_long > 0, rsum[k_idx, d_idx] / np.maximum(n_long, 1), np.nan)
    prefix = "user" if key == "user_id" else "item"
    columns: dict[str, pa.Array] = {
        key: pa.array(keys[k_idx].astype(np.int64)),
        "event_timestamp": pa.array(stamps, type=pa.timestamp("us", tz="UTC")),
        f"{prefix}_events_7d": pa.array(short[k_idx, d_idx]),
        f"{prefix}_events_30d": pa.array(n_long),
        f"{prefix}_mean_rating_30d": pa.array(mean, from_pandas=True),
    }
    if genres:
        masks = events["genre_mask"].to_numpy().astype(np.int64)
        g_counts = np.zeros((len(keys), n_days, len(GENRES)), dtype=np.int64)
        for g in range(len(GENRES)):
            sel = (masks >> g) & 1 == 1
            np.add.at(g_counts[:, :, g], (inv[sel], day_idx[sel]), 1)
        g_long = _windows(g_counts, LONG_WINDOW_DAYS)[k_idx, d_idx]
        # argmax takes the lowest genre index on ties, so the choice is deterministic.
        top = np.where(n_long > 0, g_long.argmax(axis=1), -1)
        top_share = np.where(n_long > 0, g_long.max(axis=1) / np.maximum(n_long, 1), 0.0)
        columns["user_top_genre_30d"] = pa.array(top.astype(np.int64))
        columns["user_top_genre_share_30d"] = pa.array(top_share.astype(np.float64))
    return pa.table(columns)


def _empty_rolling(view: str) -> pa.Table:
    import pyarrow as pa

    key, prefix = ("user_id", "user") if view == "user_activity" else ("item_id", "item")
    fields = [
        pa.field(key, pa.int64()),
        pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
        pa.field(f"{prefix}_events_7d", pa.int64()),
        pa.field(f"{prefix}_events_30d", pa.int64()),
        pa.field(f"{prefix}_mean_rating_30d", pa.float64()),
    ]
    if view == "user_activity":
        fields.append(pa.field("user_top_genre_30d", pa.int64()))
        fields.append(pa.field("user_top_genre_share_30d", pa.float64()))
    return pa.schema(fields).empty_table()


def _write_table_atomic(table: pa.Table, path: Path) -> bool:
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(None), sink, compression="zstd")
    payload = sink.getvalue()
    if path.exists() and path.read_bytes() == payload:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return True


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
        DataError: A partition or the items table cannot be read.
    """
    import pandas as pd
    import pyarrow.parquet as pq

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
        events = (
            read_interactions(wanted)
            if wanted
            else pd.DataFrame(
                {
                    c: pd.Series(dtype=t)
                    for c, t in (
                        ("user_id", "int64"),
                        ("item_id", "int64"),
                        ("rating", "int64"),
                        ("event_timestamp", "datetime64[us, UTC]"),
                    )
                }
            )
        )
        events = events[events["event_timestamp"] < pd.Timestamp(target)]
        items = pd.read_parquet(
            settings.items_path, columns=["item_id", "genre_mask", "event_timestamp"]
        )
        # The genres an item had at each event's time (profiles are time-stamped too).
        events = pd.merge_asof(
            events.sort_values("event_timestamp"),
            items.sort_values("event_timestamp").astype({"event_timestamp": "datetime64[us, UTC]"}),
            on="event_timestamp",
            by="item_id",
            direction="backward",
        )
        events["genre_mask"] = events["genre_mask"].fillna(0).astype("int64")
        new = {
            "user_activity": _rolling_table(
                events, "user_id", grid_start, recompute, target, genres=True
            ),
            "item_popularity": _rolling_table(
                events, "item_id", grid_start, recompute, target, genres=False
            ),
        }
        for view, path in paths.items():
            import pyarrow as pa
            import pyarrow.compute as pc

            kept = pq.read_table(path) if manifest else _empty_rolling(view)
            cutoff = pa.scalar(recompute, type=pa.timestamp("us", tz="UTC"))
            kept = kept.filter(pc.less_equal(kept["event_timestamp"], cutoff))
            tables[view] = pa.concat_tables([kept, new[view].cast(kept.schema)])
            _write_table_atomic(tables[view], path)
        manifest = {"version": ROLLING_VERSION, "through": target.isoformat(), "partitions": hashes}
        tmp = manifest_path.with_name(f".{manifest_path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, manifest_path)
    elif not manifest:
        for view, path in paths.items():
            tables[view] = _empty_rolling(view)
            _write_table_atomic(tables[view], path)
    return RollingResult(
        uris={v: str(p) for v, p in paths.items()},
        sha256={v: sha256_file(p) for v, p in paths.items()},
        through=(old_through if recompute >= target and old_through else target).isoformat(),
        recomputed_from=recompute.isoformat() if recompute < target else "",
        n_rows={v: pq.ParquetFile(p).metadata.num_rows for v, p in paths.items()},
    )


# --- training sets ----------------------------------------------------------------------


def _fingerprint(
    settings: Settings, partitions: list[Path], services: list[str]
) -> tuple[str, dict[str, str]]:
    hashes = {p.parent.name: sha256_file(p) for p in partitions}
    digest = hashlib.sha256()
    for name, value in sorted(hashes.items()):
        digest.update(f"{name}={value}\n".encode())
    for extra in (settings.users_path, settings.items_path):
        digest.update(f"{extra.name}={sha256_file(extra)}\n".encode())
    for definition in sorted(settings.feature_repo.glob("*.py")) + [_yaml_path(settings)]:
        digest.update(f"{definition.name}={sha256_file(definition)}\n".encode())
    digest.update(f"rolling={ROLLING_VERSION}\n".encode())
    digest.update(",".join(services).encode())
    return digest.hexdigest(), hashes


def _as_of_snapshot(
    store: FeatureStore, keys: pd.DataFrame, refs: list[str], as_of: datetime
) -> pd.DataFrame:
    frame = keys.assign(event_timestamp=as_of)
    out = store.get_historical_features(entity_df=frame, features=refs).to_df()
    out["event_timestamp"] = out["event_timestamp"].astype("datetime64[us, UTC]")
    return out.sort_values(keys.columns[0]).reset_index(drop=True)


def point_in_time_join(
    store: FeatureStore, entity_df: pd.DataFrame, service_name: str
) -> pd.DataFrame:
    """Join a feature service onto ``entity_df`` as of each row's ``event_timestamp``.

    Feast's file (dask) offline store drops entity rows that share the first view's join
    key and timestamp (one user rating two items in the same second keeps one row), so
    each view is joined on its unique (key, timestamp) pairs and merged back.

    Args:
        store: The feature store.
        entity_df: Rows with the join keys and ``event_timestamp``; other columns are kept.
        service_name: The feature service whose projections to join.

    Returns:
        ``entity_df`` with one column per feature, row count unchanged.
    """
    import pandas as pd

    service = store.get_feature_service(service_name)
    out = entity_df.copy()
    out["event_timestamp"] = out["event_timestamp"].astype("datetime64[ns, UTC]")
    day = pd.Timedelta(days=1)
    start = out["event_timestamp"].dt.floor("D")
    # Rolling snapshots are stamped only at midnights and their TTL is whole days, so
    # asking at the last instant of an event's day (or at the event itself when it is a
    # midnight) selects exactly the same snapshot as asking at the event: no midnight lies
    # in between, and the TTL bound admits the same midnights. It collapses the entity
    # rows to one per key and day, which keeps the file store's per-key join small.
    day_end = out["event_timestamp"].where(
        out["event_timestamp"] == start, start + day - pd.Timedelta(microseconds=1)
    )
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        keys = [store.get_entity(name).join_key for name in view.entities]
        refs = [f"{projection.name}:{f.name}" for f in projection.features]
        collapse = (
            view.name in ROLLING_VIEWS and view.ttl is not None and view.ttl % day == timedelta(0)
        )
        when = day_end if collapse else out["event_timestamp"]
        asked = out[keys].assign(event_timestamp=when)
        unique = asked.drop_duplicates().reset_index(drop=True)
        joined = store.get_historical_features(entity_df=unique, features=refs).to_df()
        joined["event_timestamp"] = joined["event_timestamp"].astype("datetime64[ns, UTC]")
        values = asked.merge(
            joined, on=keys + ["event_timestamp"], how="left", validate="many_to_one"
        )
        for name in (f.name for f in projection.features):
            out[name] = values[name].to_numpy()
    if len(out) != len(entity_df):
        raise RuntimeError(
            f"point-in-time join changed the row count {len(entity_df)} -> {len(out)}"
        )
    return out


def finish_ranking_set(joined: pd.DataFrame) -> pd.DataFrame:
    """Give a ``ranking_v1`` join its published dtypes and fill what "no events" means.

    A missing snapshot means no events in the 30-day window (exact: a snapshot is written
    for every day an entity had events in the window, and one more day with zeros), so
    counts become 0, the top genre -1 and its share 0; the mean rating stays NaN, since a
    mean of nothing is undefined.
    """
    out = joined.fillna({k: v for k, v in _NO_EVENTS_FILL.items() if k in joined})
    for col in _INT_COLUMNS:
        if col in out:
            out[col] = out[col].astype("int64")
    for col in ("user_mean_rating_30d", "item_mean_rating_30d", "user_top_genre_share_30d"):
        if col in out:
            out[col] = out[col].astype("float64")
    out["event_timestamp"] = out["event_timestamp"].astype("datetime64[us, UTC]")
    return out


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, path, compression="zstd")


#: Entity rows joined and written per slice. The joined sets hold some twenty columns
#: and Feast's file store joins with several copies, so a whole 5M-row history took
#: 8 GiB in one piece; a slice bounds that whatever the history's length.
TRAINING_SET_CHUNK_ROWS = 1_000_000


def _write_training_sets(
    store: FeatureStore,
    settings: Settings,
    config: FeaturesConfig,
    entity_df: pd.DataFrame,
    folder: Path,
) -> None:
    """Join and write ``training_set.parquet`` (and ``ranking_set.parquet``) slice by slice.

    ``entity_df`` is already in the published order (time, user, item), and a join keeps
    row order, so the slices written one after the other are the sorted whole: each slice
    becomes a row group of the same file.

    Raises:
        DataError: Training rows found no profile (unknown user or item ids); all slices
            are checked, so the count is the whole set's.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    writers: dict[str, pq.ParquetWriter] = {}
    missing_rows = 0
    samples: list[dict[str, Any]] = []

    def write(name: str, frame: pd.DataFrame) -> None:
        writer = writers.get(name)
        schema = writer.schema if writer is not None else None
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        if writer is None:
            table = table.replace_schema_metadata(None)
            writer = writers[name] = pq.ParquetWriter(
                folder / name, table.schema, compression="zstd"
            )
        writer.write_table(table, row_group_size=TRAINING_SET_CHUNK_ROWS)

    try:
        # At least one pass, so an empty history still gives files with the full schema.
        for start in range(0, max(len(entity_df), 1), TRAINING_SET_CHUNK_ROWS):
            chunk = entity_df.iloc[start : start + TRAINING_SET_CHUNK_ROWS]
            with _recops_home_env(settings):
                training = point_in_time_join(store, chunk, config.feature_service)
                ranking = (
                    point_in_time_join(store, chunk, config.ranking_service)
                    if config.ranking_service
                    else None
                )
            feature_cols = [c for c in training.columns if c not in chunk.columns]
            missing = training[feature_cols].isna().any(axis=1)
            if missing.any():
                missing_rows += int(missing.sum())
                samples += training.loc[missing, ["user_id", "item_id"]].head(3).to_dict("records")
                continue
            if missing_rows:
                continue  # the set fails anyway; keep counting, stop writing
            for col in ("age", "release_year", "genre_mask", "rating"):
                if col in training:
                    training[col] = training[col].astype("int64")
            write("training_set.parquet", training)
            if ranking is not None:
                write("ranking_set.parquet", finish_ranking_set(ranking))
    finally:
        for writer in writers.values():
            writer.close()
    if missing_rows:
        raise DataError(
            f"{missing_rows} training rows found no profile in {config.feature_service} "
            f"(unknown user or item ids), e.g. {samples[:3]}"
        )


def build_features(config: FeaturesConfig, settings: Settings | None = None) -> FeaturesResult:
    """Compute rolling features, apply the repo, materialize, and build both training sets.

    Args:
        config: The data interval and where to write.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        URIs of the retrieval and ranking training sets and of the as-of user and item
        snapshots, with hashes.

    Raises:
        DataError: No published partition precedes the interval end, or training rows
            found no profile (unknown user or item ids).
    """
    import pandas as pd

    settings = settings or Settings.from_env()
    as_of = config.interval_end.astimezone(UTC)
    last_day = (as_of - timedelta(microseconds=1)).date()
    partitions = list_partitions(settings, until=(last_day + timedelta(days=1)).isoformat())
    if not partitions:
        raise DataError(
            f"no published interactions partitions before {as_of.isoformat()} in {settings.interactions_dir}"
        )
    services = [config.feature_service] + (
        [config.ranking_service] if config.ranking_service else []
    )
    fingerprint, partition_hashes = _fingerprint(settings, partitions, services)

    out = Path(config.output_dir)
    done = out / _SUCCESS
    result_path = out / _RESULT_FILE
    rolling = compute_rolling_features(RollingConfig(interval_end=as_of), settings)
    store = apply_repo(settings)
    with _recops_home_env(settings):
        materialized = materialize(store, as_of) if config.materialize else {}
    if done.exists() and result_path.exists():
        previous = json.loads(result_path.read_text())
        if previous.get("fingerprint") == fingerprint:
            return FeaturesResult.from_dict({**previous, "materialized": materialized})

    # Entity rows are small (four numbers each); the joined sets are not, so they are
    # joined and written a slice of rows at a time (see TRAINING_SET_CHUNK_ROWS).
    entity_df = read_interactions(partitions)
    entity_df = entity_df[entity_df["event_timestamp"] < pd.Timestamp(as_of)]
    order = ["event_timestamp", "user_id", "item_id"]
    entity_df = entity_df.sort_values(order, kind="stable").reset_index(drop=True)

    users = pd.read_parquet(settings.users_path, columns=["user_id"])
    items = pd.read_parquet(settings.items_path, columns=["item_id"])
    with _recops_home_env(settings):
        users_snap = _as_of_snapshot(
            store,
            users,
            ["user_profile:age", "user_profile:gender", "user_profile:occupation"],
            as_of,
        )
        items_snap = _as_of_snapshot(
            store, items, ["item_profile:release_year", "item_profile:genre_mask"], as_of
        )
    # Snapshots keep only rows valid at the as-of time, with the published dtypes.
    users_snap = users_snap.dropna().astype({"age": "int64"})
    items_snap = items_snap.dropna().astype({"release_year": "int64", "genre_mask": "int64"})

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_training_sets(store, settings, config, entity_df, tmp)
        _write_parquet(users_snap, tmp / "users.parquet")
        _write_parquet(items_snap, tmp / "items.parquet")
    except BaseException:
        # Nothing half-written survives a failed join (or a killed task's retry).
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ranking_written = bool(config.ranking_service)
    result = FeaturesResult(
        training_set_uri=str(out / "training_set.parquet"),
        users_uri=str(out / "users.parquet"),
        items_uri=str(out / "items.parquet"),
        feature_service=config.feature_service,
        as_of=as_of.isoformat(),
        n_rows=len(entity_df),
        n_users=int(entity_df["user_id"].nunique()),
        n_items=int(entity_df["item_id"].nunique()),
        fingerprint=fingerprint,
        training_set_sha256=sha256_file(tmp / "training_set.parquet"),
        partition_hashes=partition_hashes,
        materialized=materialized,
        ranking_set_uri=str(out / "ranking_set.parquet") if ranking_written else "",
        ranking_service=config.ranking_service,
        ranking_set_sha256=sha256_file(tmp / "ranking_set.parquet") if ranking_written else "",
        rolling=rolling.uris,
    )
    (tmp / _RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    (tmp / _SUCCESS).touch()
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return result


# --- online reads -----------------------------------------------------------------------


def online_features(
    entity: str, ids: list[int], features: str | list[str], settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Read features for one entity type from the online store.

    Args:
        entity: The join key, ``user_id`` or ``item_id``.
        ids: The entity ids to look up.
        features: A feature service name (its views keyed on ``entity`` are read) or
            ``view:feature`` references.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        One dict per id with the join key and each feature (``None`` where the store holds
        nothing for that id).
    """
    settings = settings or Settings.from_env()
    with _recops_home_env(settings):
        store = open_store(settings)
        if isinstance(features, str):
            service = store.get_feature_service(features)
            refs = []
            for projection in service.feature_view_projections:
                view = store.get_feature_view(projection.name)
                if [store.get_entity(e).join_key for e in view.entities] == [entity]:
                    refs += [f"{projection.name}:{f.name}" for f in projection.features]
            if not refs:
                raise ValueError(f"feature service {features!r} has no view keyed on {entity!r}")
        else:
            refs = list(features)
        rows = store.get_online_features(
            features=refs, entity_rows=[{entity: int(i)} for i in ids]
        ).to_dict()
    names = [r.split(":", 1)[1] for r in refs]
    return [
        {entity: int(uid), **{name: rows[name][i] for name in names}} for i, uid in enumerate(ids)
    ]


def online_user_features(
    user_ids: list[int], settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Read user profile features from the online store (what serving needs per request).

    Args:
        user_ids: The users to look up.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        One dict per user with ``user_id``, ``age``, ``gender`` and ``occupation``.

    Raises:
        KeyError: A user has no online profile (never materialized or unknown).
    """
    settings = settings or Settings.from_env()
    names = ("age", "gender", "occupation")
    out = online_features("user_id", user_ids, [f"user_profile:{n}" for n in names], settings)
    for record in out:
        if any(record[k] is None for k in names):
            raise KeyError(
                f"user_id {record['user_id']} has no online profile in {settings.feast_dir}"
            )
    return out
