"""recops.ui_links: Airflow's extra links open MLflow runs and versions that exist.

One real MLflow store (SQLite in the test's folder) holds what the nightly leaves there:
a DAG-run run with nested task runs (today's tracking), or only registration runs named
``<dag_id>/<run_id>`` with versions carrying lineage tags (before it). Links must follow
the run as it is when asked: a deleted run gives no link.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.models.taskinstancekey import TaskInstanceKey
from recops import ui_links
from recops.links import AIRFLOW_DAG_ID_TAG, AIRFLOW_RUN_ID_TAG, AIRFLOW_TASK_ID_TAG

DAG = "recsys_nightly"
RUN = "manual__2026-01-01T00:00:00+00:00"
UI = "http://mlflow.test:1"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    yield client


@pytest.fixture(autouse=True)
def _ui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOPS_MLFLOW_UI_URL", UI)


def _run(client: Any, experiment: str, name: str, tags: dict[str, str]) -> Any:
    found = client.get_experiment_by_name(experiment)
    exp = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(exp, run_name=name, tags=tags)
    client.set_terminated(run.info.run_id)
    return client.get_run(run.info.run_id)


def _version(client: Any, model: str, run: Any, tags: dict[str, str], tmp: Path) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(model)
    except MlflowException:
        pass
    source = tmp / model / run.info.run_id
    source.mkdir(parents=True, exist_ok=True)
    return client.create_model_version(model, str(source), run_id=run.info.run_id, tags=tags)


def _found(client: Any, run_id: str, task_id: str, map_index: int = -1) -> str | None:
    run = ui_links.find_run(client, DAG, run_id, task_id, map_index)
    return None if run is None else str(run.info.run_id)


def test_task_runs_win_over_the_dag_run_run(store: Any) -> None:
    tags = {AIRFLOW_DAG_ID_TAG: DAG, AIRFLOW_RUN_ID_TAG: RUN}
    parent = _run(store, "nested", RUN, tags)
    train = _run(
        store,
        "nested",
        "train",
        {**tags, AIRFLOW_TASK_ID_TAG: "train", "mlflow.parentRunId": parent.info.run_id},
    )
    variants = [
        _run(
            store,
            "nested",
            f"compress[{i}]",
            {**tags, AIRFLOW_TASK_ID_TAG: "compress", ui_links.AIRFLOW_MAP_INDEX_TAG: str(i)},
        )
        for i in range(2)
    ]
    assert _found(store, RUN, "train") == train.info.run_id
    assert _found(store, RUN, "compress", 1) == variants[1].info.run_id
    # A task without a run of its own (validate) opens the DAG run's run.
    url = ui_links.run_link(store, DAG, RUN, "validate")
    assert url == f"{UI}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
    # Deleted: no link to it, ever (the DAG run's run is what is left).
    store.delete_run(train.info.run_id)
    assert _found(store, RUN, "train") == parent.info.run_id
    store.delete_run(parent.info.run_id)
    for run in variants:
        store.delete_run(run.info.run_id)
    assert ui_links.find_run(store, DAG, RUN, "train") is None
    assert ui_links.run_link(store, DAG, RUN, "train") == ""


def test_registration_runs_and_versions_before_tracking(store: Any, tmp_path: Path) -> None:
    run_id = "scheduled__2026-02-02T00:00:00+00:00"
    name = f"{DAG}/{run_id}"
    retrieval_run = _run(store, "recsys_nightly", name, {})
    ranking_run = _run(store, "recsys_nightly_ranking", name, {})
    lineage = {"recops.lineage.dag_id": DAG, "recops.lineage.run_id": run_id}
    retrieval = _version(store, "links_retrieval", retrieval_run, lineage, tmp_path)
    ranking = _version(
        store,
        "links_ranking",
        ranking_run,
        {**lineage, ui_links.RANKING_MARK_TAG: str(retrieval.version)},
        tmp_path,
    )
    assert ui_links.find_run(store, DAG, run_id, "register") is not None
    assert ui_links.version_link(store, DAG, run_id, "register") == (
        f"{UI}/#/models/links_retrieval/versions/{retrieval.version}"
    )
    assert ui_links.version_link(store, DAG, run_id, "rank") == (
        f"{UI}/#/models/links_ranking/versions/{ranking.version}"
    )
    # Another DAG run registered nothing: no version link, no run link.
    assert ui_links.version_link(store, DAG, "manual__other", "register") == ""
    assert ui_links.run_link(store, DAG, "manual__other", "register") == ""
    # The registration runs gone, the link falls back to nothing, not to a dead page.
    store.delete_run(retrieval_run.info.run_id)
    store.delete_run(ranking_run.info.run_id)
    assert ui_links.run_link(store, DAG, run_id, "register") == ""


def test_promotions_link_the_version_they_served(store: Any, tmp_path: Path) -> None:
    run = _run(store, "promoted", "v", {})
    version = _version(store, "links_promoted", run, {}, tmp_path)
    results = [
        [{"model_name": "links_promoted", "version": int(version.version), "outcome": "ok"}],
        [{"model_name": "links_promoted", "version": None}, "junk", {"version": True}],
    ]
    promoted = ui_links.promoted_versions(results)
    assert promoted == [("links_promoted", int(version.version))]
    assert ui_links.version_link(store, "recsys_promote", "manual__p", "promote", promoted) == (
        f"{UI}/#/models/links_promoted/versions/{version.version}"
    )
    assert ui_links.run_link(store, "recsys_promote", "manual__p", "promote", -1, promoted) == (
        f"{UI}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )
    # A version deleted from the registry is not linked.
    store.delete_model_version("links_promoted", version.version)
    assert ui_links.version_link(store, "recsys_promote", "manual__p", "promote", promoted) == ""


def test_unsafe_ids_and_other_dags_get_no_link(
    store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert ui_links.find_run(store, DAG, "x' or '1'='1") is None
    assert ui_links.find_version(store, DAG, "x' or '1'='1") is None
    # Not a recops DAG: no lookup at all. A recops DAG without an MLflow store yet: no
    # link, and looking does not create the store.
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    other = TaskInstanceKey(dag_id="example", task_id="t", run_id=RUN)
    assert ui_links.lookup(other, "run") == ""
    ours = TaskInstanceKey(dag_id=DAG, task_id="train", run_id=RUN)
    assert ui_links.lookup(ours, "run") == ui_links.lookup(ours, "version") == ""
    assert not (tmp_path / "home" / "mlflow").exists()


def test_the_plugin_offers_both_links() -> None:
    from recops.airflow_plugin import MlflowRunLink, ModelVersionLink, RecopsPlugin

    names = [link.name for link in RecopsPlugin.global_operator_extra_links]
    assert names == ["MLflow run", "Model version"]
    key = TaskInstanceKey(dag_id="example", task_id="t", run_id=RUN)
    assert MlflowRunLink().get_link(None, ti_key=key) == ""
    assert ModelVersionLink().get_link(None, ti_key=key) == ""
