"""The features stage's entry point: ``build_features`` and its config and result.

One call computes the rolling sources and the user-history snapshot, applies the repo,
materializes up to the interval end (in a child process, beside the joins), and (unless
the same inputs were already built) writes both point-in-time training sets and the as-of
profile snapshots into the interval's output folder, which appears whole or not at all.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from recops.config import Settings
from recops.errors import DataError
from recops.features.definitions import PROFILE_VIEWS
from recops.features.feast_repo import (
    RANKING_SERVICE,
    RETRIEVAL_SERVICE,
    open_store,
    recops_home_env,
)
from recops.features.history import write_history_source, write_history_table
from recops.features.materialize_child import MaterializeProcess, writer_lock
from recops.features.rolling import RollingConfig, compute_rolling_features
from recops.features.store import apply_repo, materialize
from recops.features.training_sets import (
    TRAINING_SET_CHUNK_ROWS,
    arrow_schema,
    as_of_snapshot,
    features_fingerprint,
    write_parquet,
    write_training_sets,
)
from recops.io import SUCCESS_MARKER, publish_dir, sha256_file, staging_dir
from recops.records import Record

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

    from recops.features.entity_rows import EntityRows
    from recops.layout import Layout

__all__ = ["FeaturesConfig", "FeaturesResult", "build_features"]

_RESULT_FILE = "result.json"


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
    feature_service: str = RETRIEVAL_SERVICE
    ranking_service: str = RANKING_SERVICE
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


def _profile_snapshot(
    store: FeatureStore, path: Path, layout: Layout, key: str, as_of: datetime
) -> pd.DataFrame:
    """Every entity's profile as of ``as_of``, in the published table's columns.

    One row per entity whose profile is valid at ``as_of`` (valid-from at or before it),
    read through the profile view so it equals what the point-in-time join gives; the
    attributes keep their published dtypes, nulls included.
    """
    import pandas as pd

    from recops.features.training_sets import finish_training_set

    features = layout.user_features if key == "user_id" else layout.item_features
    table = pd.read_parquet(path, columns=[key, "event_timestamp"])
    valid = table.groupby(key)["event_timestamp"].min()
    keys = valid[valid <= pd.Timestamp(as_of)].index.to_frame(index=False).astype({key: "int64"})
    refs = [f"{PROFILE_VIEWS[key]}:{f.name}" for f in features]
    if refs:
        snap = as_of_snapshot(store, keys, refs, as_of)
    else:
        snap = keys.sort_values(key).reset_index(drop=True)
        snap["event_timestamp"] = as_of
    snap = finish_training_set(snap, layout)
    columns = layout.user_columns if key == "user_id" else layout.item_columns
    return snap[list(columns)]


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
            found no item row (item ids outside the catalogue).
    """
    # recops.data pulls in the layout (numpy); the features package stays light to import.
    from recops.data import list_partitions
    from recops.layout import INTERACTION_COLUMNS, active_layout

    settings = settings or Settings.from_env()
    layout = active_layout(settings)
    as_of = config.interval_end.astimezone(UTC)
    last_day = (as_of - timedelta(microseconds=1)).date()
    partitions = list_partitions(settings, until=(last_day + timedelta(days=1)).isoformat())
    if not partitions:
        raise DataError(
            f"no published interactions partitions before {as_of.isoformat()} "
            f"in {settings.interactions_dir}"
        )
    services = [config.feature_service] + (
        [config.ranking_service] if config.ranking_service else []
    )
    fingerprint, partition_hashes = features_fingerprint(settings, partitions, services)
    rolling = compute_rolling_features(RollingConfig(interval_end=as_of), settings)
    if settings.engine == "pandas":
        return _build(
            config, settings, layout, as_of, _PandasRows(partitions, as_of), fingerprint,
            partition_hashes, rolling.uris,
        )  # fmt: skip
    # DuckDB reads the partitions: the history never sits whole in pandas.
    from recops.features.entity_rows import EntityRows

    with EntityRows(partitions, as_of, INTERACTION_COLUMNS) as rows:
        return _build(
            config, settings, layout, as_of, rows, fingerprint, partition_hashes,
            rolling.uris,
        )  # fmt: skip


class _PandasRows:
    """The reference engine's entity rows: the whole history in pandas, sorted stably."""

    def __init__(self, partitions: list[Path], as_of: datetime) -> None:
        import pandas as pd

        from recops.data import read_interactions
        from recops.features.entity_rows import lacking_columns_error
        from recops.layout import INTERACTION_COLUMNS

        frame = read_interactions(partitions)
        lacking = [c for c in INTERACTION_COLUMNS if c not in frame.columns]
        if lacking:
            raise lacking_columns_error(partitions, lacking, list(frame.columns))
        # Exactly the layout's columns, so the sets' columns are the layout's too.
        frame = frame.loc[frame["event_timestamp"] < pd.Timestamp(as_of), list(INTERACTION_COLUMNS)]
        order = ["event_timestamp", "user_id", "item_id"]
        self.frame = frame.sort_values(order, kind="stable").reset_index(drop=True)

    def counts(self) -> tuple[int, int, int]:
        return (
            len(self.frame),
            int(self.frame["user_id"].nunique()),
            int(self.frame["item_id"].nunique()),
        )

    def write_history(self, settings: Settings) -> None:
        write_history_source(settings, self.frame)

    def slices(self, rows: int) -> pd.DataFrame:
        del rows  # write_training_sets slices a frame itself
        return self.frame


def _build(
    config: FeaturesConfig,
    settings: Settings,
    layout: Layout,
    as_of: datetime,
    rows: _PandasRows | EntityRows,
    fingerprint: str,
    partition_hashes: dict[str, str],
    rolling_uris: dict[str, str],
) -> FeaturesResult:
    out = Path(config.output_dir)
    done = out / SUCCESS_MARKER
    result_path = out / _RESULT_FILE
    # The online history is built from the same events the rolling features see, and
    # materialized with the other views below.
    if isinstance(rows, _PandasRows):
        rows.write_history(settings)
    else:
        write_history_table(settings, rows.history_table(settings.history_max))
    # Under the lock: a killed try's materializing child may still be writing the registry.
    with writer_lock(settings) as lock, recops_home_env(settings):
        applied = apply_repo(settings)
        inline: dict[str, str] = {}
        child = None
        if config.materialize and settings.engine == "spark":
            # A second Spark application (the child's) could wait forever on a standalone
            # cluster for the executors this one holds: materialize here, first.
            inline = materialize(applied, as_of)
        elif config.materialize:
            child = MaterializeProcess(settings, as_of, lock=lock)
        with child or nullcontext():
            # Only the child writes the registry from here on, and the joins' store never
            # re-reads it (``pinned``); see ``recops.features.materialize_child``.
            store = open_store(settings, pinned=True)
            if done.exists() and result_path.exists():
                previous = json.loads(result_path.read_text())
                if previous.get("fingerprint") == fingerprint:
                    materialized = child.result() if child else inline
                    return FeaturesResult.from_dict({**previous, "materialized": materialized})
            return _write_sets(
                config, settings, layout, as_of, rows, fingerprint, partition_hashes,
                rolling_uris, store, child, inline,
            )  # fmt: skip


def _write_sets(
    config: FeaturesConfig,
    settings: Settings,
    layout: Layout,
    as_of: datetime,
    rows: _PandasRows | EntityRows,
    fingerprint: str,
    partition_hashes: dict[str, str],
    rolling_uris: dict[str, str],
    store: FeatureStore,
    child: MaterializeProcess | None,
    inline: dict[str, str],
) -> FeaturesResult:
    """Join and publish the training sets while ``child`` (if any) materializes the online
    store; ``inline`` is what was materialized here already, when there is no child."""
    out = Path(config.output_dir)
    n_rows, n_users, n_items = rows.counts()
    users_snap = _profile_snapshot(store, settings.users_path, layout, "user_id", as_of)
    items_snap = _profile_snapshot(store, settings.items_path, layout, "item_id", as_of)

    # Nothing half-written survives a failed join (or a killed task's retry): the folder
    # is built beside ``out`` and replaces it in one rename, marker included.
    with staging_dir(out) as tmp:
        write_training_sets(
            store,
            settings,
            rows.slices(TRAINING_SET_CHUNK_ROWS),
            tmp,
            layout=layout,
            feature_service=config.feature_service,
            ranking_service=config.ranking_service,
        )
        for name, snap in (("users.parquet", users_snap), ("items.parquet", items_snap)):
            write_parquet(snap, tmp / name, schema=arrow_schema(list(snap.columns), layout))
        ranking_written = bool(config.ranking_service)
        result = FeaturesResult(
            training_set_uri=str(out / "training_set.parquet"),
            users_uri=str(out / "users.parquet"),
            items_uri=str(out / "items.parquet"),
            feature_service=config.feature_service,
            as_of=as_of.isoformat(),
            n_rows=n_rows,
            n_users=n_users,
            n_items=n_items,
            fingerprint=fingerprint,
            training_set_sha256=sha256_file(tmp / "training_set.parquet"),
            partition_hashes=partition_hashes,
            # Published only once the online store is written too: a failed
            # materialization fails the stage before anything is published.
            materialized=child.result() if child else inline,
            ranking_set_uri=str(out / "ranking_set.parquet") if ranking_written else "",
            ranking_service=config.ranking_service,
            ranking_set_sha256=(
                sha256_file(tmp / "ranking_set.parquet") if ranking_written else ""
            ),
            rolling=rolling_uris,
        )
        (tmp / _RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        publish_dir(tmp, out, marker=True)
    return result
