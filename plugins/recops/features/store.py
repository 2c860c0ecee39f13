"""The Feast store: ``feast apply``, ordered incremental materialization, online reads.

Materialization is incremental and ordered: an interval that ends before what a view
already holds is skipped, and the SQLite online store refuses row by row to replace a
value with an older one (Feast's SQLite store upserts blindly; Redis compares itself).
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.errors import PermanentError
from recops.features.definitions import PROFILE_VIEWS
from recops.features.feast_repo import (
    ROLLING_VIEWS,
    FeatureRepoError,
    open_store,
    recops_home_env,
    rolling_source_path,
    sqlite_path,
    yaml_path,
)
from recops.features.history import HISTORY_VIEW, ensure_history_source

if TYPE_CHECKING:
    from feast import FeatureStore

#: Rows of the history view written to the online store per batch (``materialize``).
MATERIALIZE_BATCH_ROWS = 20_000

__all__ = [
    "EPOCH",
    "MissingOnlineProfileError",
    "OnlineFeaturesError",
    "apply_repo",
    "dump_online_store",
    "guard_sqlite_order",
    "materialize",
    "materialize_views",
    "online_features",
    "online_user_features",
    "redis_client",
]

#: Where materialization starts the first time (the profile tables carry old timestamps).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OnlineFeaturesError(PermanentError, ValueError):
    """A feature service has no view keyed on the entity asked for (a ``ValueError``)."""


class MissingOnlineProfileError(PermanentError, KeyError):
    """A user has no online profile: never materialized, or an unknown id.

    A ``KeyError`` too, as before this class existed: serving turns it into a hint.
    """


def apply_repo(settings: Settings) -> FeatureStore:
    """Run ``feast apply`` on the feature repo and return the store.

    Args:
        settings: Deployment settings (the repo folder, RECOPS_HOME, the online store).

    Returns:
        A ``FeatureStore`` whose registry holds the repo's current definitions.

    Raises:
        FeatureRepoError: The repo's yaml or a rolling source is missing.
    """
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    repo = settings.feature_repo
    path = yaml_path(settings)
    if not path.is_file():
        raise FeatureRepoError(f"Feast repo config {path} is missing")
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    # The history view needs its source to exist; the features stage writes the real
    # snapshot first, any other caller gets an empty one (nothing to materialize).
    ensure_history_source(settings)
    for view in ROLLING_VIEWS:
        if not rolling_source_path(settings, view).is_file():
            raise FeatureRepoError(
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
        with recops_home_env(settings):
            config = load_repo_config(repo, path)
            apply_total(config, repo, skip_source_validation=False)
            store = open_store(settings)
    finally:
        sys.path.remove(str(repo))
        os.chdir(cwd)
    if settings.online_store == "sqlite":
        guard_sqlite_order(settings, store)
    return store


def guard_sqlite_order(settings: Settings, store: FeatureStore) -> None:
    """Make the SQLite online store drop a write older than the row it would replace.

    Feast's SQLite store upserts without comparing event_ts, so an older write replaces
    a newer value. A BEFORE UPDATE trigger makes the store itself drop such a write,
    row by row, as Redis does; equal times still write (a corrected snapshot goes in).
    Tables are recreated by apply when a view changes, so this runs after every apply.
    """
    conn = sqlite3.connect(sqlite_path(settings))
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
    store: FeatureStore,
    end: datetime,
    *,
    on_view_done: Callable[[str], None] | None = None,
    views: Collection[str] | None = None,
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
        views: Only these views (by name); every view when omitted.

    Returns:
        For each feature view, the end time its online data now reaches.
    """
    reached: dict[str, str] = {}
    for view in sorted(store.list_feature_views(), key=lambda v: v.name):
        if views is not None and view.name not in views:
            continue
        last = view.most_recent_end_time
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        if view.name == HISTORY_VIEW and (last is None or last < end):
            _materialize_in_batches(store, view, last or EPOCH, end)
        elif last is None:
            # First time: materialize_incremental would start at now - ttl and miss
            # history older than that, so bootstrap with an explicit window.
            store.materialize(start_date=EPOCH, end_date=end, feature_views=[view.name])
        elif last < end:
            store.materialize_incremental(end_date=end, feature_views=[view.name])
        reached[view.name] = max(end, last).isoformat() if last else end.isoformat()
        if on_view_done is not None:
            on_view_done(view.name)
    return reached


def materialize_views(settings: Settings, end: datetime) -> dict[str, str]:
    """``materialize`` on a store of its own: the features stage runs it in a child process.

    Args:
        settings: Deployment settings (picklable; the child opens the store from them).
        end: Materialize events up to this time (inclusive).

    Returns:
        ``materialize``'s answer: each view's end time.
    """
    with recops_home_env(settings):
        return materialize(open_store(settings), end)


def _materialize_in_batches(store: FeatureStore, view: Any, start: datetime, end: datetime) -> None:
    """Write a one-row-per-entity view's rows stamped in ``[start, end]``, a batch at a time.

    The history view's rows hold lists of up to ``RECOPS_HISTORY_MAX`` events, and
    Feast's materialization converts a whole view in one piece: 5.4 GiB more at 200k
    users. Its source already holds one row per user (their latest), so "the latest row
    per entity in the window" is every row in it, and writing them in batches through
    ``write_to_online_store`` gives the same online rows. The end is recorded once all
    are written, as Feast's own materialization does, so a killed run is redone whole.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    stamp = pa.timestamp("us", tz="UTC")
    lo, hi = pa.scalar(start, type=stamp), pa.scalar(end, type=stamp)
    for batch in pq.ParquetFile(view.batch_source.path).iter_batches(
        batch_size=MATERIALIZE_BATCH_ROWS
    ):
        when = batch.column("event_timestamp").cast(stamp)
        rows = batch.filter(pc.and_(pc.greater_equal(when, lo), pc.less_equal(when, hi)))
        if rows.num_rows:
            store.write_to_online_store(view.name, rows.to_pandas())
    store.registry.apply_materialization(view, store.project, start, end)


def redis_client(settings: Settings) -> Any:
    """A ``redis.Redis`` client on Feast's connection string (``host:port,db=N,...``)."""
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

    Reads the store's own tables (SQLite) or hashes (Redis, the keys of the settings'
    dataset's project only), so two dumps are equal exactly when the stores hold the same
    bytes and event times.

    Args:
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        ``{"<table or key>/<field>": "<value hex>@<event time>"}`` in key order.
    """
    settings = settings or Settings.from_env()
    rows: dict[str, str] = {}
    if settings.online_store == "redis":
        client = redis_client(settings)
        try:
            # Feast keys a Redis hash by the serialized entity key followed by the project,
            # so each dataset's project dumps only its own rows.
            suffix = settings.feast_project.encode()
            for key in sorted(k for k in client.scan_iter(count=1000) if k.endswith(suffix)):
                for name, value in sorted(client.hgetall(key).items()):
                    rows[f"{key.hex()}/{name.hex()}"] = value.hex()
        finally:
            client.close()
        return rows
    path = sqlite_path(settings)
    if not path.exists():
        return rows
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE ? ORDER BY name",
                (f"{settings.feast_project}_%",),
            )
        ]
        for table in tables:
            query = (
                f'SELECT entity_key, feature_name, value, event_ts FROM "{table}" '
                "ORDER BY entity_key, feature_name"
            )
            for key, feature, value, ts in conn.execute(query):
                rows[f"{table}/{bytes(key).hex()}/{feature}"] = f"{bytes(value).hex()}@{ts}"
    finally:
        conn.close()
    return rows


def _online_read(
    entity: str, ids: list[int], refs: list[str], settings: Settings
) -> tuple[list[dict[str, Any]], list[bool]]:
    """Rows for ``ids`` (join key + each feature of ``refs``) and whether each was found.

    An id counts as found when the store holds any of the features for it: attributes
    may be null, so a null value alone never means a missing entity; Feast's per-value
    status says whether the store had a row at all.
    """
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    with recops_home_env(settings):
        store = open_store(settings)
        response = store.get_online_features(
            features=refs, entity_rows=[{entity: int(i)} for i in ids]
        )
    values = response.to_dict()
    names = [r.split(":", 1)[1] for r in refs]
    found = [False] * len(ids)
    returned = list(response.proto.metadata.feature_names.val)
    for name in names:
        statuses = response.proto.results[returned.index(name)].statuses
        for i, status in enumerate(statuses):
            found[i] = found[i] or status != FieldStatus.NOT_FOUND
    rows = [
        {entity: int(uid), **{name: values[name][i] for name in names}} for i, uid in enumerate(ids)
    ]
    return rows, found


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
        nothing for that id). String attributes come back as ``str``, numeric ones as
        ``float``.

    Raises:
        OnlineFeaturesError: The feature service has no view keyed on ``entity``.
    """
    settings = settings or Settings.from_env()
    if isinstance(features, str):
        with recops_home_env(settings):
            store = open_store(settings)
            service = store.get_feature_service(features)
            refs = []
            for projection in service.feature_view_projections:
                view = store.get_feature_view(projection.name)
                if [store.get_entity(e).join_key for e in view.entities] == [entity]:
                    refs += [f"{projection.name}:{f.name}" for f in projection.features]
        if not refs:
            raise OnlineFeaturesError(
                f"feature service {features!r} has no view keyed on {entity!r}"
            )
    else:
        refs = list(features)
    return _online_read(entity, ids, refs, settings)[0]


#: (spec path, its mtime) -> the user attribute names: serving reads them per request,
#: and parsing and checking the spec each time would cost more than the online read.
_USER_ATTRIBUTES: dict[tuple[str, int], tuple[str, ...]] = {}


def _user_attributes(settings: Settings) -> tuple[str, ...]:
    """The user attribute names of the settings' dataset, in spec order."""
    from recops.layout import layout_from_spec, spec_path

    path = spec_path(settings)
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _USER_ATTRIBUTES:
        from recops.dataset_spec import load_spec

        layout = layout_from_spec(load_spec(path))
        _USER_ATTRIBUTES[key] = tuple(f.name for f in layout.user_features)
    return _USER_ATTRIBUTES[key]


def online_user_features(
    user_ids: list[int], settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Read every user attribute of the dataset's spec from the online store.

    What serving needs per request: the user tower's inputs. A null attribute is ``None``
    (strings) or NaN / ``None`` (numbers); the model treats both as missing.

    Args:
        user_ids: The users to look up (int64 ids, as the import interned them).
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        One dict per user with ``user_id`` and each user attribute, in spec order.

    Raises:
        MissingOnlineProfileError: A user has no online profile (never materialized or
            unknown); a ``KeyError``.
    """
    settings = settings or Settings.from_env()
    names = _user_attributes(settings)
    if names:
        refs = [f"{PROFILE_VIEWS['user_id']}:{n}" for n in names]
        out, found = _online_read("user_id", user_ids, refs, settings)
    else:
        # No attributes, so no profile view: a known user is one the users table holds.
        import pandas as pd

        known = set(pd.read_parquet(settings.users_path, columns=["user_id"])["user_id"])
        out = [{"user_id": int(u)} for u in user_ids]
        found = [int(u) in known for u in user_ids]
    for record, present in zip(out, found, strict=True):
        if not present:
            raise MissingOnlineProfileError(
                f"user_id {record['user_id']} has no online profile in {settings.feast_dir}"
            )
    return out
