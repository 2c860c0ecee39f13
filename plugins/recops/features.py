"""The features stage: ``feast apply``, materialization, and point-in-time training sets.

Training rows come only from ``get_historical_features`` on a versioned feature service,
with the interactions as the entity dataframe, so each row carries the feature values that
were valid at its own event time and never a later one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.data import DataError, list_partitions, read_interactions, sha256_file
from recops.records import Record

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

#: Where materialization starts the first time (the profile tables carry old timestamps).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RESULT_FILE = "result.json"
_SUCCESS = "_SUCCESS"


@dataclass(frozen=True, kw_only=True)
class FeaturesConfig(Record):
    """Inputs of the features stage.

    Attributes:
        interval_start: Start of the data interval (inclusive).
        interval_end: End of the data interval (exclusive); the training set's as-of time.
        output_dir: Folder for this interval's outputs (one per data interval).
        feature_service: The versioned Feast feature service the model pins.
        materialize: Whether to push features up to ``interval_end`` to the online store.
    """

    interval_start: datetime
    interval_end: datetime
    output_dir: str
    feature_service: str = "retrieval_v1"
    materialize: bool = True


@dataclass(frozen=True, kw_only=True)
class FeaturesResult(Record):
    """Where the point-in-time training set and the as-of profile snapshots are."""

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



@contextlib.contextmanager
def _recops_home_env(settings: Settings) -> Iterator[None]:
    # feature_store.yaml and the definitions read RECOPS_HOME; pin it to the resolved
    # home for the duration of the call, then put back whatever was there.
    old = os.environ.get("RECOPS_HOME")
    os.environ["RECOPS_HOME"] = str(settings.home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("RECOPS_HOME", None)
        else:
            os.environ["RECOPS_HOME"] = old


def apply_repo(settings: Settings) -> FeatureStore:
    """Run ``feast apply`` on the feature repo and return the store.

    Args:
        settings: Deployment settings (the repo folder and RECOPS_HOME).

    Returns:
        A ``FeatureStore`` whose registry holds the repo's current definitions.
    """
    from feast import FeatureStore
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    repo = settings.feature_repo
    yaml_path = repo / "feature_store.yaml"
    if not yaml_path.is_file():
        raise FileNotFoundError(f"Feast repo config {yaml_path} is missing")
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
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
            return FeatureStore(repo_path=str(repo))
    finally:
        sys.path.remove(str(repo))
        os.chdir(cwd)


def materialize(store: FeatureStore, end: datetime) -> dict[str, str]:
    """Materialize every feature view up to ``end``, incrementally after the first time.

    An interval older than what a view already holds is skipped: the SQLite online store
    upserts without comparing event times, so re-running an old interval would otherwise
    put older values over newer ones.

    Returns:
        For each feature view, the end time its online data now reaches.
    """
    reached: dict[str, str] = {}
    for view in store.list_feature_views():
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
    return reached


def _fingerprint(settings: Settings, partitions: list[Path], feature_service: str) -> tuple[str, dict[str, str]]:
    hashes = {p.parent.name: sha256_file(p) for p in partitions}
    digest = hashlib.sha256()
    for name, value in sorted(hashes.items()):
        digest.update(f"{name}={value}\n".encode())
    for extra in (settings.users_path, settings.items_path):
        digest.update(f"{extra.name}={sha256_file(extra)}\n".encode())
    for definition in sorted(settings.feature_repo.glob("*.py")) + [
        settings.feature_repo / "feature_store.yaml"
    ]:
        digest.update(f"{definition.name}={sha256_file(definition)}\n".encode())
    digest.update(feature_service.encode())
    return digest.hexdigest(), hashes


def _as_of_snapshot(
    store: FeatureStore, keys: pd.DataFrame, refs: list[str], as_of: datetime
) -> pd.DataFrame:
    frame = keys.assign(event_timestamp=as_of)
    out = store.get_historical_features(entity_df=frame, features=refs).to_df()
    out["event_timestamp"] = out["event_timestamp"].astype("datetime64[us, UTC]")
    return out.sort_values(keys.columns[0]).reset_index(drop=True)


def point_in_time_join(store: FeatureStore, entity_df: pd.DataFrame, service_name: str) -> pd.DataFrame:
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
    service = store.get_feature_service(service_name)
    out = entity_df.copy()
    out["event_timestamp"] = out["event_timestamp"].astype("datetime64[ns, UTC]")
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        keys = [store.get_entity(name).join_key for name in view.entities]
        refs = [f"{projection.name}:{f.name}" for f in projection.features]
        unique = out[keys + ["event_timestamp"]].drop_duplicates().reset_index(drop=True)
        joined = store.get_historical_features(entity_df=unique, features=refs).to_df()
        joined["event_timestamp"] = joined["event_timestamp"].astype("datetime64[ns, UTC]")
        out = out.merge(joined, on=keys + ["event_timestamp"], how="left", validate="many_to_one")
    if len(out) != len(entity_df):
        raise RuntimeError(f"point-in-time join changed the row count {len(entity_df)} -> {len(out)}")
    return out


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, path, compression="zstd")


def build_features(config: FeaturesConfig, settings: Settings | None = None) -> FeaturesResult:
    """Apply the feature repo, materialize online, and build the training set as of the interval end.

    Args:
        config: The data interval and where to write.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        URIs of the training set and of the as-of user and item snapshots, with hashes.

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
        raise DataError(f"no published interactions partitions before {as_of.isoformat()} in {settings.interactions_dir}")
    fingerprint, partition_hashes = _fingerprint(settings, partitions, config.feature_service)

    out = Path(config.output_dir)
    done = out / _SUCCESS
    result_path = out / _RESULT_FILE
    store = apply_repo(settings)
    materialized = materialize(store, as_of) if config.materialize else {}
    if done.exists() and result_path.exists():
        previous = json.loads(result_path.read_text())
        if previous.get("fingerprint") == fingerprint:
            return FeaturesResult.from_dict({**previous, "materialized": materialized})

    entity_df = read_interactions(partitions)
    entity_df = entity_df[entity_df["event_timestamp"] < pd.Timestamp(as_of)]
    with _recops_home_env(settings):
        training = point_in_time_join(store, entity_df, config.feature_service)
    feature_cols = [c for c in training.columns if c not in entity_df.columns]
    missing = training[feature_cols].isna().any(axis=1)
    if missing.any():
        sample = training.loc[missing, ["user_id", "item_id"]].head(3).to_dict("records")
        raise DataError(
            f"{int(missing.sum())} training rows found no profile in {config.feature_service} "
            f"(unknown user or item ids), e.g. {sample}"
        )
    training = training.sort_values(["event_timestamp", "user_id", "item_id"]).reset_index(drop=True)
    for col in ("age", "release_year", "genre_mask", "rating"):
        if col in training:
            training[col] = training[col].astype("int64")

    users = pd.read_parquet(settings.users_path, columns=["user_id"])
    items = pd.read_parquet(settings.items_path, columns=["item_id"])
    with _recops_home_env(settings):
        users_snap = _as_of_snapshot(
            store, users, ["user_profile:age", "user_profile:gender", "user_profile:occupation"], as_of
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
    _write_parquet(training, tmp / "training_set.parquet")
    _write_parquet(users_snap, tmp / "users.parquet")
    _write_parquet(items_snap, tmp / "items.parquet")
    result = FeaturesResult(
        training_set_uri=str(out / "training_set.parquet"),
        users_uri=str(out / "users.parquet"),
        items_uri=str(out / "items.parquet"),
        feature_service=config.feature_service,
        as_of=as_of.isoformat(),
        n_rows=len(training),
        n_users=int(training["user_id"].nunique()),
        n_items=int(training["item_id"].nunique()),
        fingerprint=fingerprint,
        training_set_sha256=sha256_file(tmp / "training_set.parquet"),
        partition_hashes=partition_hashes,
        materialized=materialized,
    )
    (tmp / _RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    (tmp / _SUCCESS).touch()
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return result


def online_user_features(user_ids: list[int], settings: Settings | None = None) -> list[dict[str, Any]]:
    """Read user profile features from the online store (what serving needs per request).

    Args:
        user_ids: The users to look up.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        One dict per user with ``user_id``, ``age``, ``gender`` and ``occupation``.

    Raises:
        KeyError: A user has no online profile (never materialized or unknown).
    """
    from feast import FeatureStore

    settings = settings or Settings.from_env()
    with _recops_home_env(settings):
        store = FeatureStore(repo_path=str(settings.feature_repo))
        rows = store.get_online_features(
            features=["user_profile:age", "user_profile:gender", "user_profile:occupation"],
            entity_rows=[{"user_id": int(u)} for u in user_ids],
        ).to_dict()
    out = []
    for i, uid in enumerate(user_ids):
        record = {"user_id": int(uid), **{k: rows[k][i] for k in ("age", "gender", "occupation")}}
        if any(record[k] is None for k in ("age", "gender", "occupation")):
            raise KeyError(f"user_id {uid} has no online profile in {settings.feast_dir}")
        out.append(record)
    return out
