"""The DAG-run run and its task runs, on real MLflow (SQLite backend, local artifacts).

The Airflow task is given as an ``AirflowTask`` (what ``current_task`` reads from Airflow's
context inside a task); the whole nightly under Airflow is tests/integration's.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from recops.config import Settings
from recops.errors import DataError
from recops.links import (
    AIRFLOW_DAG_ID_TAG,
    AIRFLOW_RUN_ID_TAG,
    AIRFLOW_RUN_URL_TAG,
    AIRFLOW_TASK_ID_TAG,
    MLFLOW_NOTE_TAG,
    airflow_run_url,
    airflow_task_url,
)
from recops.registry import mlflow_client
from recops.tracking import (
    DATASET_TAG,
    PARENT_TAG,
    TRY_NUMBER_TAG,
    AirflowTask,
    current_task,
    dag_run_run,
    end_dag_run_run,
    failure_callback,
    log_dataset_inputs,
    log_here,
    task_run,
    task_runs,
)
from recops.tracking_epochs import epoch_logger, tracked_run_id

RUN_ID = "manual__2026-01-01T00:00:00+00:00"


def _task(task_id: str, run_id: str = RUN_ID, **kw: int) -> AirflowTask:
    return AirflowTask(dag_id="recsys_nightly", run_id=run_id, task_id=task_id, **kw)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # One store for the module: creating an MLflow SQLite store costs seconds. Each test
    # uses DAG runs of its own.
    home = tmp_path_factory.mktemp("tracking") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECOPS_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return Settings.from_env()


def _all_runs(settings: Settings) -> int:
    client = mlflow_client(settings)
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids)) if ids else 0


def test_outside_airflow_nothing_is_tracked(settings: Settings) -> None:
    assert current_task() is None
    before = _all_runs(settings)
    with task_run(settings, params={"epochs": 2}) as run_id:
        assert run_id is None and tracked_run_id() is None
        assert epoch_logger("train.") is None
    assert end_dag_run_run(settings) is None
    assert _all_runs(settings) == before


def test_one_dag_run_run_with_a_nested_run_per_task_try(settings: Settings) -> None:
    client = mlflow_client(settings)
    with task_run(settings, task=_task("validate"), run_params={"epochs": 2}) as first:
        assert first is not None and mlflow.active_run().info.run_id == first  # type: ignore[union-attr]
    parent = dag_run_run(client, "recsys_nightly", RUN_ID)
    assert parent is not None and parent.info.run_name == RUN_ID
    assert parent.data.tags[AIRFLOW_DAG_ID_TAG] == "recsys_nightly"
    assert parent.data.tags[AIRFLOW_RUN_ID_TAG] == RUN_ID
    assert parent.data.tags[AIRFLOW_RUN_URL_TAG] == airflow_run_url("recsys_nightly", RUN_ID)
    # The description (Markdown in the MLflow UI) links back to the Airflow run.
    assert f"({airflow_run_url('recsys_nightly', RUN_ID)})" in parent.data.tags[MLFLOW_NOTE_TAG]
    assert parent.data.tags[DATASET_TAG] == settings.dataset
    assert parent.data.params == {"epochs": "2"}

    # A second task, and a mapped one, attach to the same DAG-run run.
    with task_run(settings, task=_task("train"), params={"epochs": 2}) as train:
        assert tracked_run_id() == (train, settings.mlflow_tracking_uri)
        log_here({"loss": 0.5, "bad": float("nan"), "flag": True}, {"recops.x": "y"})
    with task_run(settings, task=_task("compress", map_index=1), label="compress pq8"):
        pass
    assert tracked_run_id() is None  # the task's environment is restored
    runs = task_runs(client, parent.info.run_id)
    assert [r.info.run_name for r in runs] == ["validate", "train", "compress pq8"]
    assert {r.data.tags[PARENT_TAG] for r in runs} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    by_name = {r.info.run_name: r for r in runs}
    train_run = by_name["train"]
    assert train_run.data.params == {"epochs": "2"}
    assert train_run.data.metrics == {"loss": 0.5}
    assert train_run.data.tags["recops.x"] == "y"
    assert train_run.data.tags[AIRFLOW_TASK_ID_TAG] == "train"
    assert train_run.data.tags[AIRFLOW_RUN_URL_TAG] == airflow_task_url(
        "recsys_nightly", RUN_ID, "train"
    )
    assert (
        f"({airflow_task_url('recsys_nightly', RUN_ID, 'train')})"
        in (train_run.data.tags[MLFLOW_NOTE_TAG])
    )
    assert by_name["compress pq8"].data.tags["airflow.map_index"] == "1"

    # A retryable failure on a try that will be retried fails the task run only.
    with pytest.raises(OSError), task_run(settings, task=_task("rank", max_tries=1)):
        raise OSError("transient")
    assert client.get_run(parent.info.run_id).info.status == "RUNNING"
    # The retry is a run of its own; its permanent failure fails the DAG-run run too.
    retry = _task("rank", try_number=2, max_tries=1)
    with pytest.raises(DataError), task_run(settings, task=retry):
        raise DataError("bad rows")
    ranks = [r for r in task_runs(client, parent.info.run_id) if r.info.run_name.startswith("rank")]
    assert [(r.info.run_name, r.info.status, r.data.tags[TRY_NUMBER_TAG]) for r in ranks] == [
        ("rank", "FAILED", "1"),
        ("rank (try 2)", "FAILED", "2"),
    ]
    assert client.get_run(parent.info.run_id).info.status == "FAILED"

    # A clear and re-run finds the same DAG-run run; the last task's success ends it.
    with task_run(settings, task=_task("report", try_number=2)):
        pass
    assert end_dag_run_run(settings, task=_task("report", try_number=2)) == parent.info.run_id
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert len(task_runs(client, parent.info.run_id)) == len(runs) + 3


def test_epochs_are_logged_live_to_the_task_run(settings: Settings) -> None:
    client = mlflow_client(settings)
    with task_run(settings, task=_task("train", "epochs")) as run_id:
        assert run_id is not None
        assert epoch_logger("train.", chief=False) is None  # MultiWorker: the chief logs
        logger = epoch_logger("train.")
        for epoch, loss in enumerate((0.9, 0.7, 0.6)):
            logger.on_epoch_end(epoch, {"loss": loss, "valid_ndcg_at_10": 0.1 * epoch})
    history = client.get_metric_history(run_id, "train.loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.7), (2, 0.6)]
    assert len(client.get_metric_history(run_id, "train.valid_ndcg_at_10")) == 3


def test_dataset_inputs_carry_digest_schema_and_context(settings: Settings, tmp_path: Path) -> None:
    from recops.io import sha256_file

    path = tmp_path / "training_set.parquet"
    pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4], "rating": [4.0, 5.0]}).to_parquet(path)
    client = mlflow_client(settings)
    with task_run(settings, task=_task("train", "inputs")) as run_id:
        assert run_id is not None
        log_dataset_inputs(
            client,
            run_id,
            [
                ("training_set", str(path), "", "training"),
                ("missing", str(tmp_path / "nope.parquet"), "", "evaluation"),
            ],
        )
    inputs = client.get_run(run_id).inputs
    assert inputs is not None
    (got,) = inputs.dataset_inputs
    sha = sha256_file(path)
    assert got.dataset.name == "training_set" and got.dataset.digest == sha[:16]
    assert {t.key: t.value for t in got.tags} == {
        "mlflow.data.context": "training",
        "recops.sha256": sha,
    }
    schema = str(got.dataset.schema)
    assert all(f'"{column}"' in schema for column in ("user_id", "item_id", "rating"))
    assert path.name in got.dataset.source


def test_the_failure_callback_closes_a_killed_tasks_runs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = mlflow_client(settings)
    killed = _task("train", "killed", map_index=0)
    with task_run(settings, task=killed) as run_id:
        assert run_id is not None
    # What a killed process leaves behind: its run, and the DAG run's, still RUNNING.
    client.update_run(run_id, status="RUNNING")
    assert client.get_run(run_id).data.tags["airflow.map_index"] == "0"
    parent = dag_run_run(client, "recsys_nightly", "killed")
    assert parent is not None and parent.info.status == "RUNNING"
    monkeypatch.setenv("RECOPS_HOME", str(settings.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    failure_callback({"ti": killed, "params": {}})
    assert client.get_run(run_id).info.status == "FAILED"
    assert client.get_run(parent.info.run_id).info.status == "FAILED"
    failure_callback({})  # a context without a task instance is only logged
