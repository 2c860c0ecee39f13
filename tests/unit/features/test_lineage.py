"""Feast lineage linked to model versions (``recops.features.lineage``), on real MLflow and
the real Feast UI server app (its ``/api/mlflow-runs``, what the lineage view draws)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
from recops import links
from recops.config import Settings
from recops.errors import PermanentError
from recops.features.feast_repo import feast_ui_command, recops_home_env, ui_yaml, yaml_path
from recops.features.lineage import (
    LineageError,
    model_lineage,
    record_model_lineage,
)

REFS = ["user_profile:tier", "item_profile:category", "user_activity:events_7d"]
AIRFLOW_RUN = {"dag_id": "recsys_nightly", "run_id": "manual__2026-12-01T00:00:00+00:00"}


@dataclass(frozen=True)
class Registered:
    settings: Settings
    client: mlflow.MlflowClient
    runs: dict[int, str]
    lineage: dict[int, str]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """Two versions of one model, each with its training run, linked to retrieval_v1."""
    home = tmp_path_factory.mktemp("lineage") / "home"
    settings = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow' / 'db'}")
    from recops.registry import experiment_id_for, mlflow_client

    client = mlflow_client(settings)
    experiment = experiment_id_for(client, settings, "recsys_nightly")
    client.create_registered_model("recops_retrieval")
    runs, lineage = {}, {}
    for _ in range(2):
        run = client.create_run(experiment, run_name="train").info.run_id
        version = int(
            client.create_model_version(
                "recops_retrieval", source=f"runs:/{run}/model", run_id=run
            ).version
        )
        runs[version] = run
        lineage[version] = record_model_lineage(
            settings,
            "retrieval_v1",
            "recops_retrieval",
            version,
            run,
            feature_refs=REFS,
            airflow_run=AIRFLOW_RUN,
        )
    return Registered(settings=settings, client=client, runs=runs, lineage=lineage)


def test_each_version_gets_feasts_tags_and_a_lineage_run_in_the_projects_experiment(
    registered: Registered,
) -> None:
    settings, client = registered.settings, registered.client
    project = settings.feast_project
    for version, run_id in registered.runs.items():
        tags = client.get_model_version("recops_retrieval", str(version)).tags
        assert tags["feast.feature_service"] == "retrieval_v1"
        assert tags["feast.project"] == project
        run_tags = client.get_run(run_id).data.tags
        assert run_tags["feast.feature_refs"] == ",".join(REFS)
        assert run_tags["feast.feature_views"] == "item_profile,user_activity,user_profile"

        lineage = client.get_run(registered.lineage[version])
        assert lineage.info.run_id != run_id and lineage.info.status == "FINISHED"
        experiment = client.get_experiment(lineage.info.experiment_id)
        assert experiment.name == project  # the only experiment Feast's lineage reads
        assert lineage.info.run_name == f"recops_retrieval v{version}"
        assert lineage.data.tags["feast.training_run_id"] == run_id
        note = lineage.data.tags["mlflow.note.content"]
        assert links.mlflow_version_url("recops_retrieval", version) in note
        assert links.airflow_run_url(AIRFLOW_RUN["dag_id"], AIRFLOW_RUN["run_id"]) in note
    assert model_lineage(settings, "retrieval_v1") == [
        {
            "model_name": "recops_retrieval",
            "version": v,
            "run_id": registered.runs[v],
            "lineage_run_id": registered.lineage[v],
        }
        for v in (1, 2)
    ]
    assert model_lineage(settings, "ranking_v1") == []


def test_recording_again_is_idempotent_and_unknown_versions_are_refused(
    registered: Registered,
) -> None:
    again = record_model_lineage(
        registered.settings,
        "retrieval_v1",
        "recops_retrieval",
        2,
        registered.runs[2],
        feature_refs=REFS,
    )
    assert again == registered.lineage[2]
    assert len(model_lineage(registered.settings, "retrieval_v1")) == 2
    with pytest.raises(LineageError, match="recops_retrieval v9") as caught:
        record_model_lineage(
            registered.settings, "retrieval_v1", "recops_retrieval", 9, registered.runs[1],
            feature_refs=REFS,
        )  # fmt: skip
    assert isinstance(caught.value, PermanentError)


def test_the_feast_ui_draws_each_version_under_its_feature_service(
    registered: Registered, tmp_path: Path
) -> None:
    from feast import FeatureStore
    from feast.ui_server import get_app

    settings = registered.settings
    path = ui_yaml(settings)
    assert path.parent == settings.feast_dir
    # Serving's own yaml stays without MLflow: online reads never import it.
    assert "mlflow" not in yaml_path(settings).read_text()
    with recops_home_env(settings):
        store = FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=path)
    assert store.config.mlflow.enabled and not store.config.mlflow.auto_log
    app = get_app(store, settings.feast_project)

    async def fetch() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://feast") as http:
            response = await http.get("/api/mlflow-runs")
            response.raise_for_status()
            return response.json()

    answer = asyncio.run(fetch())
    assert answer["mlflow_uri"] == links.mlflow_ui_url()
    drawn = {r["run_id"]: r for r in answer["runs"]}
    assert set(drawn) == set(registered.lineage.values())
    for version, run_id in registered.lineage.items():
        node = drawn[run_id]
        assert node["feature_service"] == "retrieval_v1"  # the edge from the service node
        assert node["run_name"] == f"recops_retrieval v{version}"
        assert node["mlflow_url"].startswith(links.mlflow_ui_url())

    # `recops ui` starts the Feast UI on that yaml.
    settings.feast_dir.joinpath("registry.db").touch()
    argv, _ = feast_ui_command(settings, 8888)
    assert argv[argv.index("-f") + 1] == str(path)
