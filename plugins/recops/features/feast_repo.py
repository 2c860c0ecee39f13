"""The Feast repo on disk: which yaml, which paths, which environment, and opening it.

``feature_repo/`` holds the definitions and one ``feature_store*.yaml`` per online store;
this module picks the yaml the settings select, pins the variables the yaml and the
definitions expand (``feast_env``), and opens a ``FeatureStore`` on it. Every dataset is
its own Feast project (``Settings.feast_project``) with its registry and SQLite online
store under ``Settings.feast_dir``, so datasets side by side never share a view. It is
the leaf of the features package, so it imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from recops.config import Settings
from recops.errors import PermanentError
from recops.links import mlflow_ui_url

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = [
    "RANKING_SERVICE",
    "RETRIEVAL_SERVICE",
    "ROLLING_VIEWS",
    "FeatureRepoError",
    "feast_env",
    "feast_ui_command",
    "registry_path",
    "open_store",
    "recops_home_env",
    "rolling_source_path",
    "sqlite_path",
    "ui_yaml",
    "yaml_path",
]

#: The feature service the retrieval model pins (every dataset's project defines it).
RETRIEVAL_SERVICE = "retrieval_v1"
#: The feature service of the ranking set: the profiles plus the rolling views.
RANKING_SERVICE = "ranking_v1"
#: The feature views whose offline sources ``compute_rolling_features`` writes.
ROLLING_VIEWS: tuple[str, ...] = ("user_activity", "item_popularity")


class FeatureRepoError(PermanentError, FileNotFoundError):
    """A file the Feast repo needs is missing: its yaml, a rolling source or the registry.

    A ``FileNotFoundError`` too, as before this class existed, so callers that caught that
    (the ``ui`` command opens the other UIs without Feast's) keep working.
    """


def rolling_source_path(settings: Settings, view: str) -> Path:
    """Offline source parquet of a rolling feature view (read by ``feature_repo``)."""
    return settings.data_dir / "features" / f"{view}.parquet"


def yaml_path(settings: Settings) -> Path:
    """The ``feature_store*.yaml`` for the settings' online store, profile and engine.

    ``feature_store.yaml`` (SQLite), ``feature_store.redis.yaml`` (Redis, file registry)
    and ``feature_store.scale.yaml`` (Redis, SQL registry) read with DuckDB; the Spark
    engine has the same three with Feast's Spark offline store, named with a ``spark.``
    infix (``feature_store.spark.yaml``, ``feature_store.spark.redis.yaml``,
    ``feature_store.spark.scale.yaml``).
    """
    if settings.online_store == "redis":
        suffix = "scale." if settings.profile == "scale" else "redis."
    else:
        suffix = ""
    engine = "spark." if settings.engine == "spark" else ""
    return settings.feature_repo / f"feature_store.{engine}{suffix}yaml"


def sqlite_path(settings: Settings) -> Path:
    """The SQLite online store file (what ``feature_store.yaml`` names)."""
    return settings.feast_dir / "online_store.db"


def registry_path(settings: Settings) -> Path:
    """The file registry of the embedded profile (what ``feature_store.yaml`` names)."""
    return settings.feast_dir / "registry.db"


def feast_env(settings: Settings) -> dict[str, str]:
    """The variables the repo's yaml and definitions expand, for ``settings``.

    ``RECOPS_HOME`` and ``RECOPS_DATASET`` let the definitions find the dataset's spec
    and tables; ``RECOPS_FEAST_PROJECT`` and ``RECOPS_FEAST_DIR`` name its project and
    folder in the yaml (derived here, so the yaml needs no string manipulation);
    ``RECOPS_ENGINE`` makes the definitions' sources ``SparkSource`` on the Spark engine,
    whose yaml reads ``RECOPS_SPARK_MASTER``.
    """
    return {
        "RECOPS_HOME": str(settings.home),
        "RECOPS_DATASET": settings.dataset,
        "RECOPS_FEAST_PROJECT": settings.feast_project,
        "RECOPS_FEAST_DIR": str(settings.feast_dir),
        "RECOPS_REDIS_URL": settings.redis_url,
        # The engine picks the sources' kind in the definitions; the Spark yaml reads
        # the master.
        "RECOPS_ENGINE": settings.engine,
        "RECOPS_SPARK_MASTER": settings.spark_master,
    }


@contextlib.contextmanager
def recops_home_env(settings: Settings) -> Iterator[None]:
    """Pin the variables of ``feast_env(settings)`` for the block.

    feature_store*.yaml and the definitions read these variables; whatever the process
    environment held before is put back afterwards.
    """
    import warnings

    wanted = feast_env(settings)
    old = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        with warnings.catch_warnings():
            # ibis (under Feast's DuckDB offline store) calls a DuckDB method deprecated
            # in DuckDB 2; it warns on every read and says nothing a user can act on.
            warnings.filterwarnings(
                "ignore",
                message=r"fetch_arrow_table\(\) is deprecated",
                category=DeprecationWarning,
            )
            yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def open_store(settings: Settings, *, pinned: bool = False) -> FeatureStore:
    """A ``FeatureStore`` on the repo, with the online store ``settings`` selects.

    The yaml is expanded with ``feast_env(settings)``, whatever the process environment
    says.

    Args:
        settings: Deployment settings.
        pinned: Read the registry once and never again (Feast's cache TTL of 0). The
            features stage joins on such a store while another store materializes: the
            file registry is rewritten in place at the end of each view, and a store that
            re-read it then could catch it half-written.

    Raises:
        FeatureRepoError: The repo's yaml is missing.
    """
    if settings.engine == "spark":
        import warnings

        # Feast warns that its Spark source and store are alpha on every SparkSource it
        # builds (the registry's own included) and every store it opens: docs/engines.md
        # says it once instead.
        warnings.filterwarnings(
            "ignore",
            message="The spark (data source API|offline store) is an experimental feature",
            category=RuntimeWarning,
        )
    from feast import FeatureStore

    path = yaml_path(settings)
    if not path.is_file():
        raise FeatureRepoError(f"Feast repo config {path} is missing")
    with recops_home_env(settings):
        if not pinned:
            return FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=path)
        from feast.repo_config import load_repo_config

        config = load_repo_config(settings.feature_repo, path)
        registry = config.registry_config
        if isinstance(registry, str):
            registry = {"path": registry}
        elif not isinstance(registry, dict):
            registry = registry.model_dump()
        config.registry_config = {**registry, "cache_ttl_seconds": 0}
        return FeatureStore(config=config)


def ui_yaml(settings: Settings) -> Path:
    """The Feast UI's repo config: the repo's yaml plus MLflow, for the lineage view.

    Written under the dataset's Feast folder. The tracking URI and the MLflow UI's base
    (``recops.links``) are written as literals; the rest of the repo's yaml, with its
    variables, is kept as it is.

    Raises:
        FeatureRepoError: The repo's yaml is missing.
    """
    source = yaml_path(settings)
    if not source.is_file():
        raise FeatureRepoError(f"Feast repo config {source} is missing")
    text = source.read_text(encoding="utf-8")
    block = {
        "enabled": True,
        "tracking_uri": settings.mlflow_tracking_uri,
        "ui_url": mlflow_ui_url(),
        # The UI only reads MLflow; nothing it does is logged.
        "auto_log": False,
        "log_operations": False,
    }
    lines = [line for line in text.splitlines() if not line.startswith("mlflow:")]
    # JSON strings are YAML strings: every value stays one scalar, whatever it holds.
    body = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in block.items())
    path = settings.feast_dir / "feature_store.ui.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + f"\nmlflow:\n{body}\n", encoding="utf-8")
    return path


def feast_ui_command(settings: Settings, port: int) -> tuple[list[str], dict[str, str]]:
    """The ``feast ui`` command line and environment for the repo ``settings`` selects.

    The UI reads the repo through ``ui_yaml`` (the repo's yaml with MLflow
    enabled), so its lineage view shows the model versions trained on each service.

    Args:
        settings: Deployment settings (the repo, the dataset, the online store).
        port: Port for the UI on 127.0.0.1.

    Returns:
        ``(argv, env)``: the argv runs the ``feast`` next to this Python; ``env`` holds
        the variables the repo yaml expands, to be merged into the process environment.

    Raises:
        FeatureRepoError: No features were built yet (the Feast registry is missing).
    """
    registry = registry_path(settings)
    if settings.profile != "scale" and not registry.is_file():
        raise FeatureRepoError(
            f"no Feast registry for dataset {settings.dataset!r} at {registry}: run its "
            f"nightly first (`recops run --dataset {settings.dataset}`, or `recops demo`)"
        )
    feast = Path(sys.executable).parent / "feast"
    # The UI's own yaml enables Feast's MLflow integration, which its lineage view reads
    # (the model versions trained on each feature service); serving's yaml does not.
    argv = [
        str(feast), "-c", str(settings.feature_repo), "-f", str(ui_yaml(settings)),
        "ui", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    return argv, feast_env(settings)
