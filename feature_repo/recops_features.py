"""Feature definitions for recops (applied with ``feast apply`` or by the features stage).

The offline sources are the published tables under ``RECOPS_HOME/data``; interactions are
not a feature source but the entity dataframe (labels with their event times), so every
training row gets the feature values that were valid at its own timestamp.

The rolling sources (``data/features/*.parquet``) are written by
``recops.features.compute_rolling_features``: one row per entity per UTC day, stamped at
the end of that day and computed only from events before that stamp, so an interaction
joins values built from events strictly before the start of its own day.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String
from recops.config import Settings
from recops.features import rolling_source_path

_settings = Settings.from_env()

#: Rolling snapshots are written daily; two days lets one late run still find yesterday's
#: value, and anything older is stale and must read as missing rather than as current.
_ROLLING_TTL = timedelta(days=2)

# Users and items are the two join keys every recommender needs.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)

# Profiles change rarely; each row says from when it is valid (event_timestamp).
users_source = FileSource(
    name="users_source",
    path=str(_settings.users_path),
    timestamp_field="event_timestamp",
)
items_source = FileSource(
    name="items_source",
    path=str(_settings.items_path),
    timestamp_field="event_timestamp",
)

# Daily end-of-day snapshots computed from published interactions (see module docstring).
user_activity_source = FileSource(
    name="user_activity_source",
    path=str(rolling_source_path(_settings, "user_activity")),
    timestamp_field="event_timestamp",
)
item_popularity_source = FileSource(
    name="item_popularity_source",
    path=str(rolling_source_path(_settings, "item_popularity")),
    timestamp_field="event_timestamp",
)

# The user tower's side features. ttl=0: a profile never expires, it is only replaced.
user_profile_fv = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name="age", dtype=Int64),
        Field(name="gender", dtype=String),
        Field(name="occupation", dtype=String),
        Field(name="zip_code", dtype=String),
    ],
    source=users_source,
    online=True,
)

# The item tower's side features; genres travel as one bit mask (see recops.data.GENRES).
item_profile_fv = FeatureView(
    name="item_profile",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="release_year", dtype=Int64),
        Field(name="genre_mask", dtype=Int64),
    ],
    source=items_source,
    online=True,
)

# How active a user is lately and what they watch: a ranker needs recency and taste drift,
# which static profiles cannot give. Genre affinity is the genre (index into
# recops.data.GENRES) most of the user's last-30-day events carry, and the share of events
# that carry it; scalars, because list features cost the file offline store ~10x per join.
user_activity_fv = FeatureView(
    name="user_activity",
    entities=[user],
    ttl=_ROLLING_TTL,
    schema=[
        Field(name="user_events_7d", dtype=Int64),
        Field(name="user_events_30d", dtype=Int64),
        Field(name="user_mean_rating_30d", dtype=Float64),
        Field(name="user_top_genre_30d", dtype=Int64),
        Field(name="user_top_genre_share_30d", dtype=Float64),
    ],
    source=user_activity_source,
    online=True,
)

# How popular and how well liked an item is lately: the strongest single ranking signal
# on MovieLens, and one that moves daily, so it cannot live in the item profile.
item_popularity_fv = FeatureView(
    name="item_popularity",
    entities=[item],
    ttl=_ROLLING_TTL,
    schema=[
        Field(name="item_events_7d", dtype=Int64),
        Field(name="item_events_30d", dtype=Int64),
        Field(name="item_mean_rating_30d", dtype=Float64),
    ],
    source=item_popularity_source,
    online=True,
)

# What the two-tower retrieval model v1 reads; models pin a service, not loose views,
# so a new feature means a new service version and never a silent change.
retrieval_v1 = FeatureService(
    name="retrieval_v1",
    features=[
        user_profile_fv[["age", "gender", "occupation"]],
        item_profile_fv[["release_year", "genre_mask"]],
    ],
)

# What a ranking model v1 reads: the profiles plus the daily rolling activity of both
# sides. Kept apart from retrieval_v1 so adding rolling features never changes the
# columns the served retrieval model was trained on.
ranking_v1 = FeatureService(
    name="ranking_v1",
    features=[
        user_profile_fv[["age", "gender", "occupation", "zip_code"]],
        item_profile_fv[["release_year", "genre_mask"]],
        user_activity_fv,
        item_popularity_fv,
    ],
)
