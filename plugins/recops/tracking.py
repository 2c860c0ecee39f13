"""One MLflow run per Airflow DAG run, with one nested run per task.

Inside an Airflow task (``airflow.sdk.get_current_context()`` answers) :func:`task_run`
finds or creates the **DAG-run run** of the task's DAG run, in the experiment named after
the DAG, found by its tags (``airflow.dag_id``, ``airflow.run_id``; it also carries
``airflow.run_url`` and ``recops.dataset``; its name is the Airflow run id), so a retry, a
clear or a second task never makes a second one. Under it each task try gets a **task
run** (``mlflow.parentRunId``), created when the task starts, named after the task (and
the variant of a mapped compress task), tagged with the task id, map index, try number
and the task's Airflow URL, and ended FINISHED or FAILED with the task. While it is open
it is MLflow's active run, and its id is exported for the Keras epoch logger
(``recops.tracking_epochs``), MultiWorker workers included.

The DAG-run run ends FINISHED when the run's last task (``report``) succeeds, and FAILED
when a task fails for good (a permanent error, or its last try): a failed DAG run never
leaves it RUNNING. A cleared and re-run DAG run keeps its run and its last verdict until
its last task ends it again (a task starting after another failed for good must not
make it RUNNING again: nothing would end it). A task whose process is killed cannot say
so itself: :func:`failure_callback`, as the DAG's ``on_failure_callback``, closes its runs.

Outside Airflow (the CLI, tests that call steps directly) there is no DAG run to attach
to: :func:`task_run` yields None and logs nothing, and ``register`` then records the
model in a standalone run of its own, as it always did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.links import (
    AIRFLOW_DAG_ID_TAG,
    AIRFLOW_RUN_ID_TAG,
    AIRFLOW_RUN_URL_TAG,
    AIRFLOW_TASK_ID_TAG,
    MLFLOW_NOTE_TAG,
    airflow_run_url,
    airflow_task_url,
    feast_ui_url,
)
from recops.tracking_epochs import RUN_ID_ENV, TRACKING_URI_ENV

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = [
    "DATASET_TAG",
    "KIND_TAG",
    "MAP_INDEX_TAG",
    "PARENT_TAG",
    "TRY_NUMBER_TAG",
    "AirflowTask",
    "current_task",
    "dag_run_run",
    "end_dag_run_run",
    "failure_callback",
    "log_dataset_inputs",
    "log_data_docs",
    "log_here",
    "log_history",
    "model_description",
    "record_training",
    "run_url",
    "search_tagged",
    "task_run",
    "task_runs",
]

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
DATASET_TAG = "recops.dataset"
#: ``dag_run`` on the DAG-run run, ``task`` on a task run.
KIND_TAG = "recops.run_kind"
MAP_INDEX_TAG = "airflow.map_index"
TRY_NUMBER_TAG = "airflow.try_number"
#: Seconds between system-metric samples on training runs (MLflow's default is 10 s,
#: which leaves a short task with no point at all).
SYSTEM_METRICS_INTERVAL_S = 2.0


@dataclass(frozen=True, kw_only=True)
class AirflowTask:
    """The Airflow task instance a step runs in."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = 1
    max_tries: int = 0

    @property
    def last_try(self) -> bool:
        """True when Airflow will not retry this try (``max_tries`` = retries)."""
        return self.try_number > self.max_tries


def current_task() -> AirflowTask | None:
    """The running Airflow task instance, or None outside one.

    Only asks Airflow when its task SDK is already loaded: a task always has it, and the
    CLI or a test never pays for importing Airflow just to learn it is not in a task.
    """
    if "airflow.sdk" not in sys.modules:
        return None
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
    except Exception:  # no context: not inside a running task
        return None
    return _task_of(ti)


def _task_of(ti: Any) -> AirflowTask:
    map_index = getattr(ti, "map_index", None)
    return AirflowTask(
        dag_id=str(ti.dag_id),
        run_id=str(ti.run_id),
        task_id=str(ti.task_id),
        map_index=int(map_index) if map_index is not None else -1,
        try_number=int(getattr(ti, "try_number", 1) or 1),
        max_tries=int(getattr(ti, "max_tries", 0) or 0),
    )


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _experiment_ids(client: MlflowClient) -> list[str]:
    return [str(e.experiment_id) for e in client.search_experiments()]


def search_tagged(
    client: MlflowClient, tags: Mapping[str, str], *, experiment_ids: list[str] | None = None
) -> list[Run]:
    """Every run carrying all of ``tags``, oldest first.

    Args:
        client: MLflow client.
        tags: Tag name -> the exact value.
        experiment_ids: Where to look; every experiment when omitted.
    """
    ids = experiment_ids if experiment_ids is not None else _experiment_ids(client)
    if not ids:
        return []
    query = " and ".join(f"tags.`{k}` = '{_quote(v)}'" for k, v in tags.items())
    runs = client.search_runs(ids, filter_string=query, max_results=1000)
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def dag_run_run(
    client: MlflowClient, dag_id: str, run_id: str, *, experiment_ids: list[str] | None = None
) -> Run | None:
    """The MLflow run of one Airflow DAG run, or None when none was recorded.

    Args:
        client: MLflow client.
        dag_id: The Airflow DAG id.
        run_id: The Airflow run id.
        experiment_ids: Where to look; every experiment when omitted.
    """
    tags = {AIRFLOW_DAG_ID_TAG: dag_id, AIRFLOW_RUN_ID_TAG: run_id, KIND_TAG: "dag_run"}
    found = search_tagged(client, tags, experiment_ids=experiment_ids)
    return found[0] if found else None


def task_runs(client: MlflowClient, parent_run_id: str) -> list[Run]:
    """The task runs under a DAG-run run, oldest first (one per task try)."""
    parent = client.get_run(parent_run_id)
    return list(
        client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{_quote(parent_run_id)}'",
            order_by=["attributes.start_time ASC"],
        )
    )


def _ensure_dag_run_run(
    client: MlflowClient, settings: Settings, task: AirflowTask, params: Mapping[str, Any] | None
) -> Run:
    from recops.ledger import promotion_lock
    from recops.registry import experiment_id_for

    experiment_id = experiment_id_for(client, settings, task.dag_id)
    # Mapped compress tasks start together: one of them creates the run, the others find it.
    with promotion_lock(settings, "_mlflow_dag_run"):
        run = dag_run_run(client, task.dag_id, task.run_id, experiment_ids=[experiment_id])
        if run is None:
            run = client.create_run(
                experiment_id,
                run_name=task.run_id,
                tags={
                    AIRFLOW_DAG_ID_TAG: task.dag_id,
                    AIRFLOW_RUN_ID_TAG: task.run_id,
                    AIRFLOW_RUN_URL_TAG: airflow_run_url(task.dag_id, task.run_id),
                    DATASET_TAG: settings.dataset,
                    KIND_TAG: "dag_run",
                    # The run's description in the MLflow UI, where links are clickable.
                    MLFLOW_NOTE_TAG: (
                        f"Airflow run [`{task.run_id}`]"
                        f"({airflow_run_url(task.dag_id, task.run_id)}) of `{task.dag_id}`, "
                        f"dataset `{settings.dataset}`; its features in the "
                        f"[Feast UI]({feast_ui_url()})."
                    ),
                },
            )
            if params:
                _log_params(client, run.info.run_id, params)
    return run


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    logged = client.get_run(run_id).data.params
    fresh = [
        Param(str(k), str(v)[:500])
        for k, v in sorted(params.items())
        if str(k) not in logged  # MLflow refuses to change a logged param
    ]
    if fresh:
        client.log_batch(run_id, params=fresh)


def _task_run_id(
    client: MlflowClient, parent: Run, task: AirflowTask, name: str, settings: Settings
) -> str:
    tags = {
        PARENT_TAG: parent.info.run_id,
        AIRFLOW_DAG_ID_TAG: task.dag_id,
        AIRFLOW_RUN_ID_TAG: task.run_id,
        AIRFLOW_TASK_ID_TAG: task.task_id,
        AIRFLOW_RUN_URL_TAG: airflow_task_url(task.dag_id, task.run_id, task.task_id),
        MAP_INDEX_TAG: str(task.map_index),
        TRY_NUMBER_TAG: str(task.try_number),
        DATASET_TAG: settings.dataset,
        KIND_TAG: "task",
        MLFLOW_NOTE_TAG: (
            f"Airflow task [`{task.task_id}`]"
            f"({airflow_task_url(task.dag_id, task.run_id, task.task_id)}) (its log), "
            f"try {task.try_number}, of run [`{task.run_id}`]"
            f"({airflow_run_url(task.dag_id, task.run_id)})."
        ),
    }
    existing = [
        r
        for r in task_runs(client, parent.info.run_id)
        if all(r.data.tags.get(k) == tags[k] for k in (AIRFLOW_TASK_ID_TAG, MAP_INDEX_TAG))
        and r.data.tags.get(TRY_NUMBER_TAG) == tags[TRY_NUMBER_TAG]
    ]
    if existing:  # the same try, entered twice (a step wrapped inside another)
        return str(existing[0].info.run_id)
    if task.try_number > 1:
        name = f"{name} (try {task.try_number})"
    run = client.create_run(parent.info.experiment_id, run_name=name, tags=tags)
    return str(run.info.run_id)


def _fails_for_good(task: AirflowTask, exc: BaseException) -> bool:
    from recops.errors import is_retryable

    return task.last_try or not is_retryable(exc)


@contextlib.contextmanager
def task_run(
    settings: Settings,
    *,
    label: str | None = None,
    params: Mapping[str, Any] | None = None,
    run_params: Mapping[str, Any] | None = None,
    system_metrics: bool = False,
    task: AirflowTask | None = None,
) -> Iterator[str | None]:
    """Track the running Airflow task as a nested MLflow run under its DAG-run run.

    Args:
        settings: The run's dataset settings (tracking server, dataset name).
        label: The run's name; the task id when omitted.
        params: Logged on the task run at its start (a retry keeps the first values).
        run_params: The DAG run's Params, logged on the DAG-run run when it is created.
        system_metrics: Sample CPU, memory (and GPU) into the run while it is open.
        task: The task instance; the running Airflow task's when omitted.

    Yields:
        The task run's id, or None outside an Airflow task (nothing is tracked).
    """
    task = task or current_task()
    if task is None:
        yield None
        return
    import mlflow

    from recops.registry import mlflow_client

    client = mlflow_client(settings)
    parent = _ensure_dag_run_run(client, settings, task, run_params)
    run_id = _task_run_id(client, parent, task, label or task.task_id, settings)
    if params:
        _log_params(client, run_id, params)
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)  # type: ignore[no-untyped-call]
        mlflow.set_system_metrics_samples_before_logging(1)  # type: ignore[no-untyped-call]
    saved = {k: os.environ.get(k) for k in (RUN_ID_ENV, TRACKING_URI_ENV)}
    os.environ[RUN_ID_ENV] = run_id
    os.environ[TRACKING_URI_ENV] = settings.mlflow_tracking_uri
    # Another step's run left active in this process (a test) would make start_run fail.
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
    try:
        yield run_id
    except BaseException as exc:
        mlflow.end_run(status="FAILED")
        if _fails_for_good(task, exc):
            client.set_terminated(parent.info.run_id, status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def end_dag_run_run(
    settings: Settings, status: str = "FINISHED", *, task: AirflowTask | None = None
) -> str | None:
    """End the running task's DAG-run run (the last task calls this once it succeeded).

    Returns:
        The DAG-run run's id, or None outside Airflow or when none was recorded.
    """
    task = task or current_task()
    if task is None:
        return None
    from recops.registry import mlflow_client

    client = mlflow_client(settings)
    run = dag_run_run(client, task.dag_id, task.run_id)
    if run is None:
        return None
    client.set_terminated(run.info.run_id, status=status)
    return str(run.info.run_id)


def failure_callback(context: Mapping[str, Any]) -> None:
    """An Airflow ``on_failure_callback``: close the MLflow runs of a task that failed for good.

    :func:`task_run` already does so when the step raises; this also covers a task whose
    process was killed (a timeout, the OOM killer), which would otherwise leave its run
    and the DAG run's RUNNING. Never raises: a callback's error helps nobody.
    """
    try:
        task = _task_of(context["ti"])
        params = context.get("params") or {}
        settings = Settings.from_env()
        if params.get("dataset"):
            settings = settings.for_dataset(str(params["dataset"]))
        from recops.registry import mlflow_client

        client = mlflow_client(settings)
        parent = dag_run_run(client, task.dag_id, task.run_id)
        if parent is None:
            return
        for run in task_runs(client, parent.info.run_id):
            tags = run.data.tags
            if tags.get(AIRFLOW_TASK_ID_TAG) == task.task_id and run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status="FAILED")
        client.set_terminated(parent.info.run_id, status="FAILED")
    except Exception as exc:
        log.warning("MLflow runs of the failed task not closed: %s: %s", type(exc).__name__, exc)


def log_history(client: MlflowClient, run_id: str, series: Mapping[str, list[float]]) -> None:
    """Log per-epoch series (step = epoch) that the run does not hold yet.

    A task that found its output complete trained nothing, so no epoch was logged live;
    its run gets the stored history instead and still shows the model's curves.
    """
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(key=key, value=float(value), timestamp=now, step=step)
        for key, values in series.items()
        if values and not client.get_metric_history(run_id, key)
        for step, value in enumerate(values)
    ]
    if metrics:
        client.log_batch(run_id, metrics=metrics)


def log_dataset_inputs(
    client: MlflowClient, run_id: str, inputs: list[tuple[str, str, str, str]]
) -> None:
    """Log parquet files as MLflow dataset inputs with their digests and schemas.

    Args:
        client: MLflow client.
        run_id: The run that read them.
        inputs: ``(name, parquet path, sha256 or "" to compute it, context)`` each;
            context is ``training`` or ``evaluation``.

    MLflow keeps at most 36 characters of a digest; it gets the sha256's first 16 hex
    digits, and the whole sha256 is the input's ``recops.sha256`` tag.
    """
    import pyarrow.parquet as pq
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types.utils import _infer_schema

    from recops.io import sha256_file

    entries = []
    for name, uri, sha256, context in inputs:
        path = Path(uri)
        if not path.is_file():
            continue
        digest = sha256 or sha256_file(path)
        empty = pq.read_schema(path).empty_table().to_pandas()
        dataset = MetaDataset(  # type: ignore[abstract]
            source=resolve_dataset_source(path.resolve().as_uri()),
            name=name,
            digest=digest[:16],
            schema=_infer_schema(empty),
        )
        entries.append(
            DatasetInput(
                dataset=dataset._to_mlflow_entity(),
                tags=[
                    InputTag(key="mlflow.data.context", value=context),
                    InputTag(key="recops.sha256", value=digest),
                ],
            )
        )
    if entries:
        client.log_inputs(run_id, datasets=entries)


def record_training(
    settings: Settings,
    run_id: str | None,
    *,
    inputs: list[tuple[str, str, str, str]],
    history: Mapping[str, list[float]],
) -> None:
    """Log a training task's dataset inputs, and its curves when none were logged live."""
    if run_id is None:
        return
    from recops.registry import mlflow_client

    client = mlflow_client(settings)
    log_dataset_inputs(client, run_id, inputs)
    log_history(client, run_id, history)


def log_here(metrics: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> None:
    """Log finite numeric ``metrics`` (and ``tags``) to the open task run, if one is open."""
    import math

    import mlflow

    from recops.tracking_epochs import tracked_run_id

    if tracked_run_id() is None or mlflow.active_run() is None:
        return
    values = {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }
    if values:
        mlflow.log_metrics(values)
    if tags:
        mlflow.set_tags(dict(tags))


def log_data_docs(index_uri: str) -> None:
    """Log the GX Data Docs to the open task run, as the page MLflow's viewer renders.

    MLflow shows one HTML artifact in a sandboxed frame, where the static site's relative
    styles and links do not load; the one-file page (``recops.validation``'s
    ``self_contained_docs``) does.
    """
    import mlflow

    from recops.tracking_epochs import tracked_run_id
    from recops.validation.contract import SELF_CONTAINED_DOCS

    page = Path(index_uri).parent / SELF_CONTAINED_DOCS
    if tracked_run_id() is None or mlflow.active_run() is None or not page.is_file():
        return
    mlflow.log_artifact(str(page), "data_docs")


def run_url(run: Mapping[str, Any]) -> str:
    """The Airflow page of the DAG run ``run`` (a ``pipeline.run_ref``), or "" without ids."""
    if not run.get("dag_id") or not run.get("run_id"):
        return ""
    return airflow_run_url(str(run["dag_id"]), str(run["run_id"]))


def model_description(kind: str, settings: Settings, features: Mapping[str, Any]) -> str:
    """The registered model's description: what the model does, on which dataset."""
    if kind == "ranking":
        return (
            f"recops DCN-v2 ranking model for the {settings.dataset} dataset: scores each "
            "(user, candidate item) pair (rating and click heads) to re-rank the retrieval "
            f"model's candidates. Features: Feast service {features.get('ranking_service')}. "
            "Trained nightly by recsys_nightly; each version links to its training run."
        )
    return (
        f"recops two-tower retrieval model for the {settings.dataset} dataset: user and item "
        "towers; serving_default returns the top-k candidate items of a user. Features: "
        f"Feast service {features.get('feature_service')}. Trained nightly by "
        "recsys_nightly; each version links to its training run."
    )
