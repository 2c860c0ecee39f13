"""Feature definitions for recops (applied with ``feast apply`` or by the features stage).

The offline sources are the published tables under ``RECOPS_HOME/data``; interactions are
not a feature source but the entity dataframe (labels with their event times), so every
training row gets the profile values that were valid at its own timestamp.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Int64, String
from recops.config import Settings

_settings = Settings.from_env()

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

# What the two-tower retrieval model v1 reads; models pin a service, not loose views,
# so a new feature means a new service version and never a silent change.
retrieval_v1 = FeatureService(
    name="retrieval_v1",
    features=[
        user_profile_fv[["age", "gender", "occupation"]],
        item_profile_fv[["release_year", "genre_mask"]],
    ],
)
