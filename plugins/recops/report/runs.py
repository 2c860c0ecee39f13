"""Which MLflow runs belong to one Airflow DAG run: the report reads only those.

A report is keyed on its Airflow run. Its MLflow runs are found by the tags of
``recops.links``:

- the DAG run's own MLflow run (``airflow.dag_id`` and ``airflow.run_id``, no parent);
- its nested task runs (``mlflow.parentRunId``, each with ``airflow.task_id``), where the
  train and rank tasks log their per-epoch metrics;
- the run a model version was registered from belongs to the DAG run when its tags (or
  the version's ``recops.lineage.run_id``) name it. A re-run whose registration found
  an identical version already registered (same model key) did not register it: that
  version and its run belong to the earlier run, and the report says so instead of
  showing that run's records as this one's.

The report's own records (``report/inputs.json``, the page) go to the "home" run: the DAG
run's MLflow run when there is one, else the version's run when it belongs to this DAG
run, else a small run created here with the same tags (so the next search finds it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recops.links import (
    AIRFLOW_DAG_ID_TAG,
    AIRFLOW_RUN_ID_TAG,
    AIRFLOW_RUN_URL_TAG,
    AIRFLOW_TASK_ID_TAG,
    airflow_run_url,
)
from recops.report.spec import check_ids
from recops.tracking import KIND_TAG, PARENT_TAG, search_tagged

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = [
    "LINEAGE_RUN_ID_TAG",
    "PARENT_TAG",
    "DagRunRuns",
    "dag_run_runs",
    "home_run",
    "registered_by",
]

#: The version tag ``register`` writes from the DAG run's lineage.
LINEAGE_RUN_ID_TAG = "recops.lineage.run_id"
#: Where a run is created when the DAG run has no MLflow run of its own yet.
FALLBACK_EXPERIMENT = "recsys_nightly"


@dataclass(frozen=True)
class DagRunRuns:
    """The MLflow runs of one Airflow DAG run.

    Attributes:
        parent: The DAG run's own MLflow run, or None (not tracked per DAG run).
        tasks: Its nested runs by Airflow task id (a mapped task's runs share one id),
            oldest first.
    """

    parent: Run | None = None
    tasks: dict[str, list[Run]] = field(default_factory=dict)


def dag_run_runs(client: MlflowClient, dag_id: str, run_id: str) -> DagRunRuns:
    """The DAG run's MLflow run and its task runs (empty when it has none)."""
    check_ids(dag_id, run_id)
    tagged = search_tagged(client, {AIRFLOW_DAG_ID_TAG: dag_id, AIRFLOW_RUN_ID_TAG: run_id})
    parents = [
        r
        for r in tagged
        if PARENT_TAG not in r.data.tags and AIRFLOW_TASK_ID_TAG not in r.data.tags
    ]
    # The tracking code marks its DAG-run runs; such a run wins over any other tagged one.
    parents.sort(key=lambda r: r.data.tags.get(KIND_TAG) != "dag_run")
    if not parents:
        return DagRunRuns()
    parent = parents[0]
    tasks: dict[str, list[Run]] = {}
    for run in search_tagged(client, {PARENT_TAG: parent.info.run_id}):
        task = run.data.tags.get(AIRFLOW_TASK_ID_TAG)
        if task:
            tasks.setdefault(task, []).append(run)
    return DagRunRuns(parent=parent, tasks=tasks)


def registered_by(run: Run | None, version_tags: Mapping[str, str] | None) -> str | None:
    """The Airflow run id a model's MLflow run was logged by, when anything records it."""
    if run is not None and run.data.tags.get(AIRFLOW_RUN_ID_TAG):
        return str(run.data.tags[AIRFLOW_RUN_ID_TAG])
    value = (version_tags or {}).get(LINEAGE_RUN_ID_TAG)
    return str(value) if value else None


def home_run(
    client: MlflowClient,
    dag_id: str,
    run_id: str,
    registered: Mapping[str, Any] | None = None,
    experiment_id: str | None = None,
) -> str:
    """The MLflow run the DAG run's report is recorded in (found or created, see above).

    Args:
        client: The tracking client.
        dag_id: The Airflow DAG.
        run_id: The Airflow run.
        registered: The register step's result (``{"retrieval": RegisterResult dict}``).
        experiment_id: Where a new run goes; ``recsys_nightly`` when omitted.

    Returns:
        The MLflow run id.
    """
    runs = dag_run_runs(client, dag_id, run_id)
    if runs.parent is not None:
        return str(runs.parent.info.run_id)
    retrieval = (registered or {}).get("retrieval") or {}
    model_run = str(retrieval.get("run_id") or "")
    if model_run:
        run = client.get_run(model_run)
        version = None
        if retrieval.get("model_name") and retrieval.get("version") is not None:
            version = client.get_model_version(
                str(retrieval["model_name"]), str(int(retrieval["version"]))
            )
        owner = registered_by(run, version.tags if version is not None else None)
        if owner == run_id or (owner is None and retrieval.get("created")):
            return model_run
    if experiment_id is None:
        found = client.get_experiment_by_name(FALLBACK_EXPERIMENT)
        experiment_id = (
            found.experiment_id
            if found is not None
            else client.create_experiment(FALLBACK_EXPERIMENT)
        )
    created = client.create_run(
        experiment_id,
        run_name=run_id,
        tags={
            AIRFLOW_DAG_ID_TAG: dag_id,
            AIRFLOW_RUN_ID_TAG: run_id,
            AIRFLOW_RUN_URL_TAG: airflow_run_url(dag_id, run_id),
        },
    )
    client.set_terminated(created.info.run_id)
    return str(created.info.run_id)
