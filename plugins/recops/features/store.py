"""The Feast store: ``feast apply``, ordered incremental materialization, online reads.

Materialization is incremental and ordered: an interval that ends before what a view
already holds is skipped, and the SQLite online store refuses row by row to replace a
value with an older one (Feast's SQLite store upserts blindly; Redis compares itself).
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.errors import PermanentError
from recops.features.feast_repo import (
    PROJECT,
    ROLLING_VIEWS,
    FeatureRepoError,
    open_store,
    recops_home_env,
    rolling_source_path,
    sqlite_path,
    yaml_path,
)

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = [
    "EPOCH",
    "MissingOnlineProfileError",
    "OnlineFeaturesError",
    "apply_repo",
    "dump_online_store",
    "guard_sqlite_order",
    "materialize",
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
            store.materialize(start_date=EPOCH, end_date=end, feature_views=[view.name])
        elif last < end:
            store.materialize_incremental(end_date=end, feature_views=[view.name])
        reached[view.name] = max(end, last).isoformat() if last else end.isoformat()
        if on_view_done is not None:
            on_view_done(view.name)
    return reached


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
        client = redis_client(settings)
        try:
            # Feast keys a Redis hash by the serialized entity key followed by the project.
            suffix = PROJECT.encode()
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
                (f"{PROJECT}_%",),
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

    Raises:
        OnlineFeaturesError: The feature service has no view keyed on ``entity``.
    """
    settings = settings or Settings.from_env()
    with recops_home_env(settings):
        store = open_store(settings)
        if isinstance(features, str):
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
        MissingOnlineProfileError: A user has no online profile (never materialized or
            unknown); a ``KeyError``.
    """
    settings = settings or Settings.from_env()
    names = ("age", "gender", "occupation")
    out = online_features("user_id", user_ids, [f"user_profile:{n}" for n in names], settings)
    for record in out:
        if any(record[k] is None for k in names):
            raise MissingOnlineProfileError(
                f"user_id {record['user_id']} has no online profile in {settings.feast_dir}"
            )
    return out
