"""Where each UI lives, and the tags by which Airflow, MLflow and Feast find each other.

A leaf module (standard library only): the tracking code that tags MLflow runs, the
Airflow extra links, the run report and the CLI all build their URLs here, so a link
written by one always opens in the other.

The UIs' addresses are deployment settings, each with an embedded default that matches
what ``recops ui`` starts:

- ``AIRFLOW__API__BASE_URL`` (Airflow's own setting), else ``http://127.0.0.1:`` plus
  ``AIRFLOW__API__PORT`` (default 8080);
- ``RECOPS_MLFLOW_UI_URL``, else ``http://127.0.0.1:`` plus ``RECOPS_MLFLOW_PORT``
  (default 5000);
- ``RECOPS_FEAST_UI_URL``, else ``http://127.0.0.1:`` plus ``RECOPS_FEAST_UI_PORT``
  (default 8888).
"""

from __future__ import annotations

import os
from urllib.parse import quote

__all__ = [
    "AIRFLOW_DAG_ID_TAG",
    "AIRFLOW_RUN_ID_TAG",
    "AIRFLOW_RUN_URL_TAG",
    "AIRFLOW_TASK_ID_TAG",
    "MLFLOW_NOTE_TAG",
    "airflow_run_url",
    "airflow_task_url",
    "airflow_url",
    "feast_ui_url",
    "mlflow_run_url",
    "mlflow_ui_url",
    "mlflow_version_url",
]

#: MLflow run tags naming the Airflow DAG run (and task) a run belongs to. The DAG run's
#: own MLflow run carries the first three; each task's nested run adds the task id.
AIRFLOW_DAG_ID_TAG = "airflow.dag_id"
AIRFLOW_RUN_ID_TAG = "airflow.run_id"
AIRFLOW_RUN_URL_TAG = "airflow.run_url"
AIRFLOW_TASK_ID_TAG = "airflow.task_id"
#: MLflow shows this tag as the run's description (Markdown, links clickable).
MLFLOW_NOTE_TAG = "mlflow.note.content"


def _base(url_var: str, port_var: str, port: int) -> str:
    url = os.environ.get(url_var, "").strip()
    if url:
        return url.rstrip("/")
    chosen = os.environ.get(port_var, "").strip() or str(port)
    return f"http://127.0.0.1:{chosen}"


def airflow_url() -> str:
    """The Airflow UI's base URL, without a trailing slash."""
    return _base("AIRFLOW__API__BASE_URL", "AIRFLOW__API__PORT", 8080)


def mlflow_ui_url() -> str:
    """The MLflow UI's base URL, without a trailing slash."""
    return _base("RECOPS_MLFLOW_UI_URL", "RECOPS_MLFLOW_PORT", 5000)


def feast_ui_url() -> str:
    """The Feast UI's base URL, without a trailing slash."""
    return _base("RECOPS_FEAST_UI_URL", "RECOPS_FEAST_UI_PORT", 8888)


def _part(value: str) -> str:
    # Run ids hold ':' and '+' (manual__2026-01-01T00:00:00+00:00): one path segment each.
    return quote(str(value), safe="")


def airflow_run_url(dag_id: str, run_id: str) -> str:
    """The Airflow UI page of one DAG run."""
    return f"{airflow_url()}/dags/{_part(dag_id)}/runs/{_part(run_id)}"


def airflow_task_url(dag_id: str, run_id: str, task_id: str) -> str:
    """The Airflow UI page of one task of a DAG run (its log is one tab there)."""
    return f"{airflow_run_url(dag_id, run_id)}/tasks/{_part(task_id)}"


def mlflow_run_url(experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run."""
    return f"{mlflow_ui_url()}/#/experiments/{_part(experiment_id)}/runs/{_part(run_id)}"


def mlflow_version_url(model_name: str, version: int | str) -> str:
    """The MLflow UI page of one registered model version."""
    return f"{mlflow_ui_url()}/#/models/{_part(model_name)}/versions/{_part(str(version))}"
