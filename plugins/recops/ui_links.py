"""Airflow extra links to MLflow: "MLflow run" and "Model version" on recops' tasks.

Airflow 3.3 computes a plugin's *global* operator extra links on the API server, when the
UI opens a task instance (``GET /dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/
links`` calls ``link.get_link(operator, ti_key=...)``); the worker stores only the links
an operator declares itself. So these links are looked up at the moment someone asks,
in the MLflow registry as it is then: a run that was deleted since, or never existed,
gives no link (an empty URL, which the UI does not show), never a 404.

Which MLflow run a task links to, first match wins:

1. the task's own nested run (tags ``airflow.dag_id``, ``airflow.run_id`` and
   ``airflow.task_id``; for a mapped task the one whose ``airflow.map_index`` matches,
   when runs carry that tag);
2. the DAG run's own run (the same tags, without ``airflow.task_id``);
3. a run named ``<dag_id>/<run_id>`` (what registration names its runs);
4. the run of a model version the DAG run registered (``recops.lineage.dag_id`` /
   ``recops.lineage.run_id`` version tags) or, for ``recsys_promote``, promoted (read from
   the ``promote`` / ``resolve`` tasks' XCom).

"Model version" is the version the DAG run registered (the ranking model's on the
``rank`` task, the retrieval model's elsewhere), or the one ``recsys_promote`` served.

This module imports neither Airflow nor MLflow at import time: the plugin loads in every
Airflow process, and only the API server ever asks for a link.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.links import (
    AIRFLOW_DAG_ID_TAG,
    AIRFLOW_RUN_ID_TAG,
    AIRFLOW_TASK_ID_TAG,
    mlflow_run_url,
    mlflow_version_url,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "AIRFLOW_MAP_INDEX_TAG",
    "LINKED_DAG_PREFIX",
    "find_run",
    "find_version",
    "lookup",
    "promoted_versions",
    "run_link",
    "version_link",
]

log = logging.getLogger(__name__)

#: Only recops' DAGs get the links (a global link is offered on every task of every DAG).
LINKED_DAG_PREFIX = "recsys_"
#: Tag a mapped task's nested run may carry to tell its map indexes apart.
AIRFLOW_MAP_INDEX_TAG = "airflow.map_index"
LINEAGE_DAG_TAG = "recops.lineage.dag_id"
LINEAGE_RUN_TAG = "recops.lineage.run_id"
#: Only the ranking version's lineage names the retrieval version it was validated with.
RANKING_MARK_TAG = "recops.lineage.retrieval_version"
#: Airflow's run and task ids are word characters plus ``.~:+-`` (and ``/`` in old runs);
#: anything else (a quote above all) never reaches an MLflow filter string.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.~:+/@ -]{1,250}$")

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _safe(value: str) -> bool:
    return bool(_SAFE_ID.match(value))


def _active(run: Run) -> bool:
    return str(run.info.lifecycle_stage) == "active"


def _experiment_ids(client: MlflowClient) -> list[str]:
    # Active experiments only: a deleted experiment's runs must not be linked.
    return [str(e.experiment_id) for e in client.search_experiments()]


def _runs(client: MlflowClient, filter_string: str) -> list[Run]:
    ids = _experiment_ids(client)
    if not ids:
        return []
    # run_view_type 1: ACTIVE_ONLY (deleted runs are not offered).
    runs = client.search_runs(ids, filter_string=filter_string, run_view_type=1, max_results=200)
    return [r for r in runs if _active(r)]


def find_run(
    client: MlflowClient,
    dag_id: str,
    run_id: str,
    task_id: str | None = None,
    map_index: int = -1,
) -> Run | None:
    """The MLflow run a task (or, without ``task_id``, a DAG run) links to.

    Args:
        client: An MLflow client on the deployment's tracking store.
        dag_id: The Airflow DAG.
        run_id: The Airflow DAG run.
        task_id: The task; its own nested run wins over the DAG run's run.
        map_index: The mapped task's index (``-1``: not mapped).

    Returns:
        An active run (steps 1-3 of the module docstring), or None.
    """
    if not (_safe(dag_id) and _safe(run_id)):
        return None
    tagged = _runs(
        client,
        f"tags.`{AIRFLOW_DAG_ID_TAG}` = '{dag_id}' and tags.`{AIRFLOW_RUN_ID_TAG}` = '{run_id}'",
    )
    if task_id:
        own = [r for r in tagged if r.data.tags.get(AIRFLOW_TASK_ID_TAG) == task_id]
        indexed = [r for r in own if r.data.tags.get(AIRFLOW_MAP_INDEX_TAG) == str(map_index)]
        if indexed or own:
            return _latest(indexed or own)
    parents = [r for r in tagged if AIRFLOW_TASK_ID_TAG not in r.data.tags]
    if parents:
        return _latest(parents)
    named = _runs(client, f"attributes.run_name = '{dag_id}/{run_id}'")
    return _latest(named) if named else None


def _latest(runs: Sequence[Run]) -> Run:
    # A retried task may have left one run per try: the newest is the one that counts.
    return max(runs, key=lambda r: int(r.info.start_time or 0))


def _versions_of_run(client: MlflowClient, dag_id: str, run_id: str) -> list[ModelVersion]:
    found = client.search_model_versions(f"tags.`{LINEAGE_RUN_TAG}` = '{run_id}'")
    return [v for v in found if v.tags.get(LINEAGE_DAG_TAG, dag_id) == dag_id]


def find_version(
    client: MlflowClient,
    dag_id: str,
    run_id: str,
    task_id: str | None = None,
    promoted: Iterable[tuple[str, int]] = (),
) -> ModelVersion | None:
    """The model version a task's "Model version" link opens, if it still exists.

    Args:
        client: An MLflow client.
        dag_id: The Airflow DAG.
        run_id: The Airflow DAG run.
        task_id: ``rank`` prefers the ranking model's version, other tasks the retrieval
            model's.
        promoted: ``(model_name, version)`` pairs a promotion run served (tried first).

    Returns:
        The version, or None when the run registered (or promoted) none that exists.
    """
    for name, number in promoted:
        version = _existing_version(client, name, number)
        if version is not None:
            return version
    if not (_safe(dag_id) and _safe(run_id)):
        return None
    versions = _versions_of_run(client, dag_id, run_id)
    if not versions:
        return None
    ranking = [v for v in versions if RANKING_MARK_TAG in v.tags]
    retrieval = [v for v in versions if RANKING_MARK_TAG not in v.tags]
    preferred = (ranking or retrieval) if task_id == "rank" else (retrieval or ranking)
    return max(preferred, key=lambda v: int(v.version))


def _existing_version(client: MlflowClient, name: str, number: int) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(number))
    except MlflowException:
        return None


def _run_of_version(client: MlflowClient, version: ModelVersion | None) -> Run | None:
    from mlflow.exceptions import MlflowException

    if version is None or not version.run_id:
        return None
    try:
        run = client.get_run(str(version.run_id))
    except MlflowException:
        return None
    return run if _active(run) else None


def promoted_versions(values: Iterable[Any]) -> list[tuple[str, int]]:
    """``(model_name, version)`` pairs from ``recsys_promote``'s task results.

    Args:
        values: The ``promote`` task's return value, then ``resolve``'s (lists of dicts
            with ``model_name`` and ``version``; a version None means an alias not yet
            resolved, and is skipped).
    """
    out: list[tuple[str, int]] = []
    for value in values:
        for item in value if isinstance(value, list) else []:
            if not isinstance(item, Mapping):
                continue
            name, version = item.get("model_name"), item.get("version")
            if isinstance(name, str) and isinstance(version, int) and not isinstance(version, bool):
                if (name, version) not in out:
                    out.append((name, version))
    return out


def run_link(
    client: MlflowClient,
    dag_id: str,
    run_id: str,
    task_id: str | None = None,
    map_index: int = -1,
    promoted: Sequence[tuple[str, int]] = (),
) -> str:
    """The "MLflow run" URL of a task, or ``""`` when no such run exists (no link)."""
    run = find_run(client, dag_id, run_id, task_id, map_index)
    if run is None:
        run = _run_of_version(client, find_version(client, dag_id, run_id, task_id, promoted))
    if run is None:
        return ""
    return mlflow_run_url(str(run.info.experiment_id), str(run.info.run_id))


def version_link(
    client: MlflowClient,
    dag_id: str,
    run_id: str,
    task_id: str | None = None,
    promoted: Sequence[tuple[str, int]] = (),
) -> str:
    """The "Model version" URL of a task, or ``""`` when the run registered none."""
    version = find_version(client, dag_id, run_id, task_id, promoted)
    return "" if version is None else mlflow_version_url(str(version.name), str(version.version))


# --------------------------------------------------------------------------- Airflow side


def _client() -> MlflowClient | None:
    """The deployment's MLflow client, one per API-server process; None without a store.

    An embedded (SQLite) store that does not exist yet has no runs: it is not created by
    looking for a link.
    """
    from recops.config import Settings

    settings = Settings.from_env()
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    with _clients_lock:
        if uri not in _clients:
            from recops.registry import mlflow_client

            _clients[uri] = mlflow_client(settings)
        return _clients[uri]  # type: ignore[no-any-return]


def _xcom_results(dag_id: str, run_id: str, task_ids: Sequence[str]) -> list[Any]:
    """Return values of a DAG run's tasks (API server side: read from Airflow's DB)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    values: list[Any] = []
    with create_session() as session:
        for task_id in task_ids:
            row = session.execute(
                XComModel.get_many(
                    key="return_value",
                    run_id=run_id,
                    dag_ids=dag_id,
                    task_ids=task_id,
                    map_indexes=-1,
                ).with_only_columns(XComModel.value)
            ).first()
            if row is None:
                continue
            value = row[0]
            try:
                values.append(json.loads(value) if isinstance(value, str | bytes) else value)
            except ValueError:
                continue
    return values


def lookup(ti_key: Any, which: str) -> str:
    """The URL of link ``which`` (``run`` or ``version``) for a task instance, or ``""``.

    Args:
        ti_key: Airflow's ``TaskInstanceKey`` (dag_id, task_id, run_id, map_index...).
        which: ``run`` ("MLflow run") or ``version`` ("Model version").
    """
    dag_id, run_id = str(ti_key.dag_id), str(ti_key.run_id)
    if not dag_id.startswith(LINKED_DAG_PREFIX):
        return ""
    try:
        client = _client()
        if client is None:
            return ""
        promoted: list[tuple[str, int]] = []
        if dag_id == "recsys_promote":
            promoted = promoted_versions(_xcom_results(dag_id, run_id, ("promote", "resolve")))
        task_id = str(ti_key.task_id)
        if which == "run":
            return run_link(client, dag_id, run_id, task_id, int(ti_key.map_index), promoted)
        return version_link(client, dag_id, run_id, task_id, promoted)
    except Exception as exc:  # a registry that does not answer must not break the task page
        log.warning("recops %s link for %s/%s: %s", which, dag_id, run_id, exc)
        return ""
