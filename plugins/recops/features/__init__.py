"""The features stage: rolling features, ``feast apply``, materialization, training sets.

Submodules, one concern each:

- ``feast_repo``: the repo on disk (which yaml, rolling source paths, the pinned
  environment: one Feast project per dataset), ``open_store`` and the ``feast ui``
  command line.
- ``rolling``: the daily ``user_activity`` / ``item_popularity`` snapshots and their
  manifest (incremental, byte-identical on reruns), the same for every dataset; the
  computation runs on the settings' engine: ``rolling_sql`` (DuckDB, the default),
  ``rolling_spark`` (Spark SQL, the same query) or the pandas reference in ``rolling``.
- ``definitions``: the Feast objects generated from the dataset's layout (one profile
  field per spec attribute), which ``feature_repo/recops_features.py`` binds.
- ``store``: ``feast apply``, ordered incremental materialization (an older interval
  never overwrites newer values), online reads and the online store dump.
- ``training_sets``: point-in-time joins with ``get_historical_features`` on Feast's
  DuckDB offline store (Spark's with the ``spark`` engine), every entity row kept, and
  the retrieval and ranking sets written in slices.
- ``build``: ``build_features``, the stage's entry point, with its config and result.
"""

from __future__ import annotations

from recops.features.build import FeaturesConfig, FeaturesResult, build_features
from recops.features.definitions import (
    PROFILE_VIEWS,
    FeastDefinitions,
    feast_definitions,
)
from recops.features.feast_repo import (
    RANKING_SERVICE,
    RETRIEVAL_SERVICE,
    ROLLING_VIEWS,
    FeatureRepoError,
    feast_env,
    feast_ui_command,
    open_store,
    recops_home_env,
    rolling_source_path,
    yaml_path,
)
from recops.features.rolling import (
    LONG_WINDOW_DAYS,
    ROLLING_COUNTS,
    ROLLING_FEATURES,
    ROLLING_VERSION,
    SHORT_WINDOW_DAYS,
    RollingConfig,
    RollingResult,
    compute_rolling_features,
)
from recops.features.store import (
    EPOCH,
    MissingOnlineProfileError,
    OnlineFeaturesError,
    apply_repo,
    dump_online_store,
    materialize,
    online_features,
    online_user_features,
)
from recops.features.training_sets import (
    PointInTimeJoinError,
    finish_ranking_set,
    finish_training_set,
    point_in_time_join,
    ranking_set_columns,
)

__all__ = [
    "EPOCH",
    "LONG_WINDOW_DAYS",
    "PROFILE_VIEWS",
    "RANKING_SERVICE",
    "RETRIEVAL_SERVICE",
    "ROLLING_COUNTS",
    "ROLLING_FEATURES",
    "ROLLING_VERSION",
    "ROLLING_VIEWS",
    "SHORT_WINDOW_DAYS",
    "FeastDefinitions",
    "FeatureRepoError",
    "FeaturesConfig",
    "FeaturesResult",
    "MissingOnlineProfileError",
    "OnlineFeaturesError",
    "PointInTimeJoinError",
    "RollingConfig",
    "RollingResult",
    "apply_repo",
    "build_features",
    "compute_rolling_features",
    "dump_online_store",
    "feast_definitions",
    "feast_env",
    "feast_ui_command",
    "finish_ranking_set",
    "finish_training_set",
    "materialize",
    "online_features",
    "online_user_features",
    "open_store",
    "point_in_time_join",
    "ranking_set_columns",
    "recops_home_env",
    "rolling_source_path",
    "yaml_path",
]
