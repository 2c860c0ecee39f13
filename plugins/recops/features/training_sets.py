"""Point-in-time training sets: ``get_historical_features`` joins, written in slices.

Training rows come only from ``get_historical_features`` on a versioned feature service,
with the interactions as the entity dataframe, so each row carries the feature values that
were valid at its own event time and never a later one.

Columns and dtypes follow the dataset's layout (``recops.layout``): the interaction
columns, then the user and item attributes (strings for categorical, multi-valued and text
attributes, float64 for numeric and timestamp ones), then, in the ranking set, the
rolling features.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.errors import DataError, PermanentError
from recops.features.feast_repo import recops_home_env, yaml_path
from recops.features.rolling import ROLLING_COUNTS, ROLLING_FEATURES, ROLLING_VERSION
from recops.features.time_classes import JoinSide, join_by_time_class, join_sides
from recops.io import sha256_file

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from feast import FeatureStore

    from recops.layout import Layout

__all__ = [
    "TRAINING_SET_CHUNK_ROWS",
    "PointInTimeJoinError",
    "arrow_schema",
    "as_of_snapshot",
    "features_fingerprint",
    "finish_ranking_set",
    "finish_training_set",
    "missing_profiles",
    "point_in_time_join",
    "ranking_set_columns",
    "write_parquet",
    "write_training_sets",
]

#: Entity rows joined and written per slice. The joined sets hold some twenty columns
#: and pass through pandas, so a slice bounds memory whatever the history's length
#: (a whole 5M-row history took 8 GiB in one piece on Feast's former file store).
TRAINING_SET_CHUNK_ROWS = 1_000_000

#: Rolling features in the order the ranking set holds them (user side first).
_ROLLING_COLUMNS: tuple[str, ...] = (
    *ROLLING_FEATURES["user_activity"],
    *ROLLING_FEATURES["item_popularity"],
)


#: The row number a join carries so its result can be put back in the entity order.
_ROW = "__recops_row"


class PointInTimeJoinError(PermanentError, RuntimeError):
    """A join changed the number of entity rows (a bug, not bad data; a ``RuntimeError``)."""


def features_fingerprint(
    settings: Settings, partitions: list[Path], services: list[str]
) -> tuple[str, dict[str, str]]:
    """Hash of everything a training set depends on, and each partition's own hash.

    Covers the partitions, the profile tables, the dataset's spec (the definitions are
    generated from it), the repo's definitions and yaml, the rolling computation's
    version and the feature services asked for.
    """
    from recops.layout import spec_path

    hashes = {p.parent.name: sha256_file(p) for p in partitions}
    digest = hashlib.sha256()
    for name, value in sorted(hashes.items()):
        digest.update(f"{name}={value}\n".encode())
    for extra in (settings.users_path, settings.items_path, spec_path(settings)):
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
    stamps = out["event_timestamp"]
    if getattr(stamps.dtype, "tz", None) is None:
        # Spark's offline store hands the times back naive (in its UTC session zone).
        stamps = stamps.dt.tz_localize("UTC")
    out["event_timestamp"] = stamps.astype("datetime64[us, UTC]")
    return out.sort_values(keys.columns[0]).reset_index(drop=True)


def point_in_time_join(
    store: FeatureStore,
    entity_df: pd.DataFrame,
    service_name: str,
    *,
    sides: list[JoinSide] | None = None,
) -> pd.DataFrame:
    """Join a feature service onto ``entity_df`` as of each row's ``event_timestamp``.

    Feast's offline store (DuckDB in the embedded profile) answers, once per join key and
    time class (``recops.features.time_classes``): rows of a key between two change
    points of its views get the same answer, so they are one question. Every entity row
    comes back, rows sharing a key and a timestamp included, in ``entity_df``'s order.

    Args:
        store: The feature store.
        entity_df: Rows with the join keys and ``event_timestamp``; other columns are kept.
        service_name: The feature service whose projections to join.
        sides: ``join_sides(store, service_name)``, when the caller joins many slices
            (the change points are read once); computed here when omitted.

    Returns:
        ``entity_df`` with one column per feature, row count and order unchanged.

    Raises:
        PointInTimeJoinError: The join changed the row count.
    """
    asked = entity_df.copy()
    asked["event_timestamp"] = asked["event_timestamp"].astype("datetime64[ns, UTC]")
    if sides is None:
        sides = join_sides(store, service_name)
    if sides is not None:
        try:
            joined = join_by_time_class(store, asked, sides)
        except RuntimeError as exc:
            raise PointInTimeJoinError(f"point-in-time join of {service_name}: {exc}") from exc
        return joined
    # A service that renames join keys: one plain call on every row.
    service = store.get_feature_service(service_name)
    asked[_ROW] = range(len(asked))
    joined = store.get_historical_features(entity_df=asked, features=service).to_df()
    if len(joined) != len(entity_df):
        raise PointInTimeJoinError(
            f"point-in-time join changed the row count {len(entity_df)} -> {len(joined)}"
        )
    joined = joined.sort_values(_ROW).drop(columns=_ROW).reset_index(drop=True)
    joined.index = entity_df.index
    joined["event_timestamp"] = asked["event_timestamp"]
    return joined


def _covers(store: FeatureStore, wider: str, narrower: str) -> bool:
    """Whether service ``wider`` holds every feature of ``narrower``, and besides them only
    the rolling features (so ``narrower``'s join is ``wider``'s minus those columns)."""
    refs = {
        name: {
            (p.name, f.name)
            for p in store.get_feature_service(name).feature_view_projections
            for f in p.features
        }
        for name in (wider, narrower)
    }
    extra = {feature for _, feature in refs[wider] - refs[narrower]}
    return refs[narrower] <= refs[wider] and extra <= set(_ROLLING_COLUMNS)


def ranking_set_columns(layout: Layout) -> tuple[str, ...]:
    """Columns of the ranking set: the training set's, then the rolling features."""
    return (*layout.training_set_columns, *_ROLLING_COLUMNS)


def _arrow_type(name: str, layout: Layout) -> pa.DataType:
    import pyarrow as pa
    from recops_models.feature_defs import STRING_KINDS

    fixed = {
        "user_id": pa.int64(),
        "item_id": pa.int64(),
        "event_timestamp": pa.timestamp("us", tz="UTC"),
        "event_type": pa.string(),
        "weight": pa.float64(),
    }
    if name in fixed:
        return fixed[name]
    if name in ROLLING_COUNTS:
        return pa.int64()
    if name in _ROLLING_COLUMNS:
        return pa.float64()
    try:
        kind = layout.feature(name).kind
    except KeyError:
        raise DataError(
            f"column {name!r} is neither an interaction column, a rolling feature nor an "
            f"attribute of dataset {layout.name!r}"
        ) from None
    return pa.string() if kind in STRING_KINDS else pa.float64()


def arrow_schema(columns: list[str], layout: Layout) -> pa.Schema:
    """The published Arrow schema of a training or ranking set with ``columns``.

    Written explicitly rather than inferred, so a slice whose string attribute happens to
    be all null still writes a string column, and every slice has the first one's schema.
    """
    import pyarrow as pa

    return pa.schema([pa.field(c, _arrow_type(c, layout)) for c in columns])


def _ordered(frame: pd.DataFrame, canonical: tuple[str, ...]) -> pd.DataFrame:
    """``frame``'s columns in the canonical order, any others after them."""
    known = [c for c in canonical if c in frame.columns]
    return frame[known + [c for c in frame.columns if c not in canonical]]


def finish_training_set(joined: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Give a joined set its published column order and dtypes, from the layout.

    Strings stay strings (``None`` where missing, whatever the offline store returned
    for a null); numeric and timestamp attributes are float64 (NaN where missing).
    """
    import pandas as pd
    from recops_models.feature_defs import STRING_KINDS

    out = _ordered(joined, ranking_set_columns(layout)).copy()
    for col in ("user_id", "item_id"):
        if col in out:
            out[col] = out[col].astype("int64")
    if "weight" in out:
        out["weight"] = out["weight"].astype("float64")
    for feature in (*layout.user_features, *layout.item_features):
        if feature.name not in out:
            continue
        values = out[feature.name]
        if feature.kind in STRING_KINDS:
            # The published tables hold strings, so Feast returns str; only its nulls vary
            # (None or NaN), and the sets keep None.
            out[feature.name] = values.astype(object).where(values.notna(), None)
        else:
            out[feature.name] = pd.to_numeric(values, errors="coerce").astype("float64")
    out["event_timestamp"] = out["event_timestamp"].astype("datetime64[us, UTC]")
    return out


def finish_ranking_set(joined: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Give a ``ranking_v1`` join its published dtypes and fill what "no events" means.

    A missing snapshot means no events in the 30-day window (exact: a snapshot is written
    for every day an entity had events in the window, and one more day with zeros), so
    counts become 0; the mean weights stay NaN, since a mean of nothing is undefined.
    """
    out = finish_training_set(joined, layout)
    for col in _ROLLING_COLUMNS:
        if col not in out:
            continue
        if col in ROLLING_COUNTS:
            out[col] = out[col].fillna(0).astype("int64")
        else:
            out[col] = out[col].astype("float64")
    return out


def missing_profiles(entity_df: pd.DataFrame, valid_from: dict[str, pd.Series]) -> pd.Series:
    """Which entity rows find no profile valid at their ``event_timestamp``.

    Profiles never expire (their views' ttl is 0), so a row finds one exactly when its
    key has a profile row valid from at or before the row's time. Checked on the tables
    rather than on the joined values, since an attribute may legitimately be null.

    Args:
        entity_df: Rows with the join keys and ``event_timestamp``.
        valid_from: Join key -> the earliest valid-from time of each key's profile
            (indexed by the key); a side without a profile table is left out.

    Returns:
        A boolean Series aligned with ``entity_df``.
    """
    import pandas as pd

    missing = pd.Series(False, index=entity_df.index)
    when = entity_df["event_timestamp"].astype("datetime64[ns, UTC]")
    for key, first in valid_from.items():
        since = entity_df[key].map(first.astype("datetime64[ns, UTC]"))
        missing |= since.isna() | (since > when)
    return missing


def _valid_from(path: Path, key: str) -> pd.Series:
    """The earliest valid-from time of each key in a profile table."""
    import pandas as pd

    table = pd.read_parquet(path, columns=[key, "event_timestamp"])
    return table.groupby(key)["event_timestamp"].min()


def write_parquet(frame: pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> None:
    """Write ``frame`` as zstd parquet without pandas metadata (stable bytes).

    Args:
        frame: The rows.
        path: The file to write.
        schema: The Arrow schema to write (``arrow_schema``); inferred when omitted.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(None), path, compression="zstd")


def _slices(entity_df: pd.DataFrame | Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    import pandas as pd

    if not isinstance(entity_df, pd.DataFrame):
        yield from entity_df
        return
    # At least one pass, so an empty history still gives files with the full schema.
    for start in range(0, max(len(entity_df), 1), TRAINING_SET_CHUNK_ROWS):
        yield entity_df.iloc[start : start + TRAINING_SET_CHUNK_ROWS]


def write_training_sets(
    store: FeatureStore,
    settings: Settings,
    entity_df: pd.DataFrame | Iterable[pd.DataFrame],
    folder: Path,
    *,
    layout: Layout,
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
        entity_df: The interactions, sorted by time, user and item; or those rows as
            slices of at most ``TRAINING_SET_CHUNK_ROWS`` (at least one, maybe empty),
            so the whole history never sits in memory.
        folder: Where the two files go.
        layout: The dataset's layout: the sets' columns and dtypes.
        feature_service: The retrieval set's feature service.
        ranking_service: The ranking set's feature service; empty to skip that set.

    Raises:
        DataError: Training rows found no item row (item ids outside the catalogue, or events
            before its row is valid); all slices are checked, so the count is the
            whole set's.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    writers: dict[str, pq.ParquetWriter] = {}
    missing_rows = 0
    samples: list[dict[str, Any]] = []
    # Items only: an item needs its catalogue row, while a user may have events and no
    # profile row (new since the users file, or first seen by POST /v1/events), whose
    # rows join missing attributes, as a row with empty attributes would.
    valid_from = {"item_id": _valid_from(settings.items_path, "item_id")}

    def table(frame: pd.DataFrame) -> pa.Table:
        schema = arrow_schema(list(frame.columns), layout)
        return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)

    def write(name: str, table: pa.Table) -> None:
        writer = writers.get(name)
        if writer is None:
            writer = writers[name] = pq.ParquetWriter(
                folder / name, table.schema, compression="zstd"
            )
        writer.write_table(table, row_group_size=TRAINING_SET_CHUNK_ROWS)

    one_join = bool(ranking_service) and _covers(store, ranking_service, feature_service)
    with recops_home_env(settings):
        # Each service's change points are read once, not once per slice.
        sides = {s: join_sides(store, s) for s in (feature_service, ranking_service) if s}
    try:
        for chunk in _slices(entity_df):
            missing = missing_profiles(chunk, valid_from)
            if missing.any():
                missing_rows += int(missing.sum())
                samples += chunk.loc[missing, ["user_id", "item_id"]].head(3).to_dict("records")
                continue
            if missing_rows:
                continue  # the set fails anyway; keep counting, stop writing

            def join(service: str, chunk: pd.DataFrame = chunk) -> pd.DataFrame:
                return point_in_time_join(store, chunk, service, sides=sides[service])

            with recops_home_env(settings):
                if one_join:
                    # The ranking service holds every feature of the retrieval one: one
                    # join gives both sets (the training set is its first columns, and
                    # finishing is column by column, so it is finished and converted once).
                    ranking = table(finish_ranking_set(join(ranking_service), layout))
                    rolling = set(_ROLLING_COLUMNS)
                    training = ranking.select([c for c in ranking.column_names if c not in rolling])
                else:
                    training = table(finish_training_set(join(feature_service), layout))
                    ranking = (
                        table(finish_ranking_set(join(ranking_service), layout))
                        if ranking_service
                        else None
                    )
            write("training_set.parquet", training)
            if ranking is not None:
                write("ranking_set.parquet", ranking)
    finally:
        for writer in writers.values():
            writer.close()
    if missing_rows:
        raise DataError(
            f"{missing_rows} training rows found no item in {feature_service} "
            f"(item ids outside the catalogue, or events before the item's row is valid), "
            f"e.g. {samples[:3]}\n"
            f"hint: every item_id of the interactions needs a row in "
            f"{settings.items_path.name} valid from before it"
        )
