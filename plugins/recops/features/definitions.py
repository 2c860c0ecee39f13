"""The Feast objects of one dataset, generated from its layout (and so from its spec).

``feature_repo/recops_features.py`` binds what ``feast_definitions`` returns to module
names, which is where ``feast apply`` finds them; no column is written there by hand.

- Entities ``user`` (``user_id``) and ``item`` (``item_id``): int64 join keys for every
  dataset, since the import interns string keys to stable ids (``recops.data.keys``).
- ``user_profile`` / ``item_profile``: one field per attribute of the spec, String for
  categorical, multi-valued (joined with the separator) and text attributes, Float64 for
  numeric and timestamp ones. A side without attributes has no profile view.
- ``user_activity`` / ``item_popularity``: the daily rolling snapshots
  (``recops.features.rolling``), the same for every dataset.
- ``user_history``: each user's most recent events (item ids, times, event types, most
  recent first), batch-loaded from the snapshot the features stage writes
  (``recops.features.history``) and fed live through the push source
  ``user_history_push``.
- ``retrieval_v1`` (the profiles), ``ranking_v1`` (the profiles and the rolling views) and
  ``history_v1`` (the user history).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from recops.config import Settings
from recops.errors import DataError
from recops.features.feast_repo import (
    RANKING_SERVICE,
    RETRIEVAL_SERVICE,
    rolling_source_path,
)
from recops.features.history import (
    HISTORY_PUSH_SOURCE,
    HISTORY_SERVICE,
    HISTORY_VIEW,
    history_source_path,
)
from recops.features.rolling import ROLLING_COUNTS, ROLLING_FEATURES

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureView, PushSource
    from feast.data_source import DataSource
    from recops_models.feature_defs import FeatureDef

    from recops.layout import Layout

__all__ = [
    "PROFILE_VIEWS",
    "RESERVED_NAMES",
    "ROLLING_TTL",
    "FeastDefinitions",
    "feast_definitions",
    "feast_dtype_name",
]

#: Rolling snapshots are written daily; two days lets one late run still find yesterday's
#: value, and anything older is stale and must read as missing rather than as current.
ROLLING_TTL = timedelta(days=2)
#: The profile views, keyed by the join key they are read by.
PROFILE_VIEWS: dict[str, str] = {"user_id": "user_profile", "item_id": "item_profile"}
#: Column names an attribute cannot take: the training and ranking sets hold them too.
RESERVED_NAMES: frozenset[str] = frozenset(
    {"user_id", "item_id", "event_timestamp", "event_type", "weight"}
    | {name for names in ROLLING_FEATURES.values() for name in names}
)


@dataclass(frozen=True)
class FeastDefinitions:
    """Every Feast object of one dataset's project.

    Attributes:
        user: The user entity (join key ``user_id``).
        item: The item entity (join key ``item_id``).
        users_source: The published users table.
        items_source: The published items table.
        user_activity_source: The ``user_activity`` rolling snapshots.
        item_popularity_source: The ``item_popularity`` rolling snapshots.

    The sources are ``FileSource`` on the DuckDB and pandas engines and ``SparkSource``
    on the Spark engine (Feast's Spark offline store reads no other kind); both name the
    same parquet.
        user_profile: The user attributes; None when the spec declares none.
        item_profile: The item attributes; None when the spec declares none.
        user_activity: The users' rolling features.
        item_popularity: The items' rolling features.
        retrieval: ``retrieval_v1``: what the retrieval model reads.
        ranking: ``ranking_v1``: what the ranking model reads.
    """

    user: Entity
    item: Entity
    users_source: DataSource
    items_source: DataSource
    user_activity_source: DataSource
    item_popularity_source: DataSource
    user_profile: FeatureView | None
    item_profile: FeatureView | None
    user_activity: FeatureView
    item_popularity: FeatureView
    retrieval: FeatureService
    ranking: FeatureService
    user_history_source: DataSource
    user_history_push: PushSource
    user_history: FeatureView
    history: FeatureService

    def feature_views(self) -> tuple[FeatureView, ...]:
        """The views the models' training sets read, profiles first (not ``user_history``)."""
        views = (self.user_profile, self.item_profile, self.user_activity, self.item_popularity)
        return tuple(v for v in views if v is not None)


def feast_dtype_name(feature: FeatureDef) -> str:
    """``String`` or ``Float64``: the Feast type of an attribute (see the layout's dtypes)."""
    from recops_models.feature_defs import STRING_KINDS

    return "String" if feature.kind in STRING_KINDS else "Float64"


def _check_names(layout: Layout) -> None:
    for side, features in (("users", layout.user_features), ("items", layout.item_features)):
        for i, feature in enumerate(features):
            if feature.name in RESERVED_NAMES:
                raise DataError(
                    f"dataset spec {layout.name!r}: {side}.attributes[{i}].name is "
                    f"{feature.name!r}, a column the training or ranking sets already have\n"
                    f"hint: rename the attribute (reserved: {', '.join(sorted(RESERVED_NAMES))})"
                )


def _source(name: str, path: str, engine: str) -> DataSource:
    """The offline source of one parquet table for ``engine``'s offline store.

    The Spark engine's store (``feature_store.spark*.yaml``) accepts only ``SparkSource``;
    the DuckDB store (the pandas engine's too) reads ``FileSource``.
    """
    if engine == "spark":
        import warnings

        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
            SparkSource,
        )

        with warnings.catch_warnings():
            # Feast warns on every SparkSource that the API is "alpha"; the Spark engine
            # is opt-in and docs/engines.md says so once, rather than on every parse.
            warnings.filterwarnings(
                "ignore", message="The spark data source API is an experimental feature"
            )
            return SparkSource(
                name=name, path=path, file_format="parquet", timestamp_field="event_timestamp"
            )
    from feast import FileSource

    return FileSource(name=name, path=path, timestamp_field="event_timestamp")


def _profile_view(
    name: str, entity: Entity, features: Iterable[FeatureDef], source: DataSource
) -> FeatureView | None:
    from feast import FeatureView, Field
    from feast.types import Float64, String

    types = {"String": String, "Float64": Float64}
    schema = [Field(name=f.name, dtype=types[feast_dtype_name(f)]) for f in features]
    if not schema:
        # Feast would infer a view's fields from its source when none are given; a side
        # without attributes simply has no profile view.
        return None
    # ttl=0: a profile never expires, it is only replaced by a newer row.
    return FeatureView(
        name=name, entities=[entity], ttl=timedelta(0), schema=schema, source=source, online=True
    )


def _rolling_view(view: str, entity: Entity, source: DataSource) -> FeatureView:
    from feast import FeatureView, Field
    from feast.types import Float64, Int64

    schema = [
        Field(name=name, dtype=Int64 if name in ROLLING_COUNTS else Float64)
        for name in ROLLING_FEATURES[view]
    ]
    return FeatureView(
        name=view, entities=[entity], ttl=ROLLING_TTL, schema=schema, source=source, online=True
    )


def _history_view(entity: Entity, source: DataSource) -> tuple[PushSource, FeatureView]:
    from feast import FeatureView, Field, PushSource
    from feast.types import Array, Int64, String

    push = PushSource(name=HISTORY_PUSH_SOURCE, batch_source=source)
    schema = [
        Field(name="history_item_ids", dtype=Array(Int64)),
        Field(name="history_timestamps", dtype=Array(Int64)),
        Field(name="history_event_types", dtype=Array(String)),
    ]
    # ttl=0: a history never expires; a newer row (a push or a later snapshot) replaces it.
    view = FeatureView(
        name=HISTORY_VIEW, entities=[entity], ttl=timedelta(0), schema=schema, source=push,
        online=True,
    )  # fmt: skip
    return push, view


def feast_definitions(layout: Layout, settings: Settings) -> FeastDefinitions:
    """Generate the Feast objects of the dataset ``layout`` describes.

    Args:
        layout: The dataset's published layout (``recops.layout.active_layout``).
        settings: Where its tables and rolling sources are (``settings.dataset``'s folder).

    Returns:
        The entities, sources, views and services, ready to bind to module names.

    Raises:
        DataError: An attribute takes a name the training sets already use.
    """
    from feast import Entity, FeatureService, ValueType

    _check_names(layout)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    engine = settings.engine
    users_source = _source("users_source", str(settings.users_path), engine)
    items_source = _source("items_source", str(settings.items_path), engine)
    activity_source = _source(
        "user_activity_source", str(rolling_source_path(settings, "user_activity")), engine
    )
    popularity_source = _source(
        "item_popularity_source", str(rolling_source_path(settings, "item_popularity")), engine
    )
    user_profile = _profile_view("user_profile", user, layout.user_features, users_source)
    item_profile = _profile_view("item_profile", item, layout.item_features, items_source)
    user_activity = _rolling_view("user_activity", user, activity_source)
    item_popularity = _rolling_view("item_popularity", item, popularity_source)
    history_source = _source("user_history_source", str(history_source_path(settings)), engine)
    history_push, user_history = _history_view(user, history_source)
    profiles = [v for v in (user_profile, item_profile) if v is not None]
    retrieval = FeatureService(
        name=RETRIEVAL_SERVICE,
        features=list(profiles),
        description="What the two-tower retrieval model reads: every user and item attribute.",
    )
    ranking = FeatureService(
        name=RANKING_SERVICE,
        features=[*profiles, user_activity, item_popularity],
        description="What the ranker reads: the profiles plus the daily rolling activity.",
    )
    return FeastDefinitions(
        user=user,
        item=item,
        users_source=users_source,
        items_source=items_source,
        user_activity_source=activity_source,
        item_popularity_source=popularity_source,
        user_profile=user_profile,
        item_profile=item_profile,
        user_activity=user_activity,
        item_popularity=item_popularity,
        retrieval=retrieval,
        ranking=ranking,
        user_history_source=history_source,
        user_history_push=history_push,
        user_history=user_history,
        history=FeatureService(
            name=HISTORY_SERVICE,
            features=[user_history],
            description="What serving reads to exclude each user's seen items.",
        ),
    )
