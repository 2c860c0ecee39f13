"""Point-in-time training sets: ``get_historical_features`` joins, written in slices.

Training rows come only from ``get_historical_features`` on a versioned feature service,
with the interactions as the entity dataframe, so each row carries the feature values that
were valid at its own event time and never a later one.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.errors import DataError, PermanentError
from recops.features.feast_repo import ROLLING_VIEWS, recops_home_env, yaml_path
from recops.features.rolling import ROLLING_VERSION
from recops.io import sha256_file

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

__all__ = [
    "TRAINING_SET_CHUNK_ROWS",
    "PointInTimeJoinError",
    "as_of_snapshot",
    "features_fingerprint",
    "finish_ranking_set",
    "point_in_time_join",
    "write_parquet",
    "write_training_sets",
]

#: Entity rows joined and written per slice. The joined sets hold some twenty columns
#: and Feast's file store joins with several copies, so a whole 5M-row history took
#: 8 GiB in one piece; a slice bounds that whatever the history's length.
TRAINING_SET_CHUNK_ROWS = 1_000_000

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


class PointInTimeJoinError(PermanentError, RuntimeError):
    """A join changed the number of entity rows (a bug, not bad data; a ``RuntimeError``)."""


def features_fingerprint(
    settings: Settings, partitions: list[Path], services: list[str]
) -> tuple[str, dict[str, str]]:
    """Hash of everything a training set depends on, and each partition's own hash.

    Covers the partitions, the profile tables, the repo's definitions and yaml, the
    rolling computation's version and the feature services asked for.
    """
    hashes = {p.parent.name: sha256_file(p) for p in partitions}
    digest = hashlib.sha256()
    for name, value in sorted(hashes.items()):
        digest.update(f"{name}={value}\n".encode())
    for extra in (settings.users_path, settings.items_path):
        digest.update(f"{extra.name}={sha256_file(extra)}\n".encode())
    for definition in sorted(settings.feature_repo.glob("*.py")) + [yaml_path(settings)]:
        digest.update(f"{definition.name}={sha256_file(definition)}\n".encode())
    digest.update(f"rolling={ROLLING_VERSION}\n".encode())
    digest.update(",".join(services).encode())
    return digest.hexdigest(), hashes


def as_of_snapshot(
    store: FeatureStore, keys: pd.DataFrame, refs: list[str], as_of: datetime
) -> pd.DataFrame:
    """The features ``refs`` of every key as of one time, sorted by the key."""
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

    Raises:
        PointInTimeJoinError: The join changed the row count.
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
        raise PointInTimeJoinError(
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


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as zstd parquet without pandas metadata (stable bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, path, compression="zstd")


def write_training_sets(
    store: FeatureStore,
    settings: Settings,
    entity_df: pd.DataFrame,
    folder: Path,
    *,
    feature_service: str,
    ranking_service: str,
) -> None:
    """Join and write ``training_set.parquet`` (and ``ranking_set.parquet``) slice by slice.

    ``entity_df`` is already in the published order (time, user, item), and a join keeps
    row order, so the slices written one after the other are the sorted whole: each slice
    becomes a row group of the same file.

    Args:
        store: The feature store (applied and materialized).
        settings: Deployment settings (the environment the repo yaml expands).
        entity_df: The interactions, sorted by time, user and item.
        folder: Where the two files go.
        feature_service: The retrieval set's feature service.
        ranking_service: The ranking set's feature service; empty to skip that set.

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
            with recops_home_env(settings):
                training = point_in_time_join(store, chunk, feature_service)
                ranking = (
                    point_in_time_join(store, chunk, ranking_service) if ranking_service else None
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
            f"{missing_rows} training rows found no profile in {feature_service} "
            f"(unknown user or item ids), e.g. {samples[:3]}"
        )
