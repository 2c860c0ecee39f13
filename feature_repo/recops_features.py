"""Feature definitions for recops (applied with ``feast apply`` or by the features stage).

Generated from the spec of the dataset ``RECOPS_DATASET`` names (the copy its import kept
in ``RECOPS_HOME/data/<dataset>/spec.yaml``, else the shipped ``datasets/<dataset>.yaml``),
so no column is written here: ``recops.features.feast_definitions`` makes one field per
user and item attribute. Each dataset is its own Feast project (feature_store*.yaml).

The offline sources are the published tables under the dataset's data folder;
interactions are not a feature source but the entity dataframe (labels with their event
times), so every training row gets the feature values that were valid at its own
timestamp.

The rolling sources (``features/*.parquet``) are written by
``recops.features.compute_rolling_features``: one row per entity per UTC day, stamped at
the end of that day and computed only from events before that stamp, so an interaction
joins values built from events strictly before the start of its own day.
"""

from __future__ import annotations

from recops.config import Settings
from recops.features import feast_definitions
from recops.layout import active_layout

_settings = Settings.from_env()
_definitions = feast_definitions(active_layout(_settings), _settings)

# Users and items are the two join keys every recommender needs (int64: string keys are
# interned at import).
user = _definitions.user
item = _definitions.item

# Profiles change rarely; each row says from when it is valid (event_timestamp).
users_source = _definitions.users_source
items_source = _definitions.items_source

# Daily end-of-day snapshots computed from published interactions (see module docstring).
user_activity_source = _definitions.user_activity_source
item_popularity_source = _definitions.item_popularity_source

# The towers' side features: every attribute the spec declares, as String or Float64.
# None (so not applied) for a side whose spec declares no attribute.
user_profile_fv = _definitions.user_profile
item_profile_fv = _definitions.item_profile

# How active a user is lately and how strongly they engage (mean event weight): a ranker
# needs recency, which static profiles cannot give.
user_activity_fv = _definitions.user_activity

# How popular and how strongly engaged with an item is lately: the strongest single
# ranking signal, and one that moves daily, so it cannot live in the item profile.
item_popularity_fv = _definitions.item_popularity

# What the two-tower retrieval model v1 reads; models pin a service, not loose views,
# so a new feature means a new service version and never a silent change.
retrieval_v1 = _definitions.retrieval

# What a ranking model v1 reads: the profiles plus the daily rolling activity of both
# sides. Kept apart from retrieval_v1 so adding rolling features never changes the
# columns the served retrieval model was trained on.
ranking_v1 = _definitions.ranking

# Each user's most recent events (item ids, times, types; most recent first): serving
# excludes them from recommendations and the user tower reads them. The nightly loads
# the snapshot of the published interactions; live events arrive through the push source.
user_history_source = _definitions.user_history_source
user_history_push = _definitions.user_history_push
user_history_fv = _definitions.user_history

# What serving reads per request besides the profile: kept apart from retrieval_v1 and
# ranking_v1 so the history never changes the columns a trained model pins.
history_v1 = _definitions.history
