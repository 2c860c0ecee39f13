"""Feast lineage linked to the model versions trained on each feature service.

Feast 0.67 models the MLflow side of its lineage like this (``feast/ui_server.py``):

- the Feast UI reads MLflow only when the repo config has ``mlflow: {enabled: true}``;
- its lineage view (``/api/mlflow-runs``) draws one "MLflow Run" node per run of the
  experiment named after the Feast project that carries the tags ``feast.project`` and
  ``feast.retrieval_type``, with an edge from the feature service named by the run's
  ``feast.feature_service`` tag; the node opens the run in the MLflow UI (``ui_url``);
- a "Registered Model" node hangs off a run only when that run is the run of a model's
  latest version;
- the features list (``/api/mlflow-feature-models``) maps each ``view:feature`` to the
  registered models whose latest version's run carries ``feast.project`` and
  ``feast.feature_refs``; ``feast.mlflow``'s model resolver reads a version's
  ``feast.feature_service`` tag.

``record_model_lineage`` writes all of that when a version is registered: Feast's tags on
the version and on its run, and, because the version's run lives in the nightly's
experiment rather than the project's, one lineage run per (version, feature service) in
the project's experiment, named after the version, whose description links the version,
its training run and its Airflow run. Online reads never see any of it: only the Feast
UI opens the repo with MLflow enabled (``feast_repo.ui_yaml``), so serving never imports MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.errors import PermanentError
from recops.features.feast_repo import open_store
from recops.links import MLFLOW_NOTE_TAG, airflow_run_url, mlflow_run_url, mlflow_version_url

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "FEAST_MODEL_NAME_TAG",
    "FEAST_MODEL_VERSION_TAG",
    "LineageError",
    "feature_service_refs",
    "model_lineage",
    "record_model_lineage",
]

#: Feast's own tags (``feast.mlflow_integration``): what its UI and resolver read.
FEAST_PROJECT_TAG = "feast.project"
FEAST_SERVICE_TAG = "feast.feature_service"
FEAST_VIEWS_TAG = "feast.feature_views"
FEAST_REFS_TAG = "feast.feature_refs"
FEAST_COUNT_TAG = "feast.feature_count"
FEAST_RETRIEVAL_TAG = "feast.retrieval_type"
FEAST_MODEL_NAME_TAG = "feast.model_name"
FEAST_MODEL_VERSION_TAG = "feast.model_version"
FEAST_TRAINING_RUN_TAG = "feast.training_run_id"
#: MLflow's tag limit is 5,000 characters; Feast truncates its own tags the same way.
TAG_LIMIT = 4990


class LineageError(PermanentError, LookupError):
    """The feature service is not in the Feast registry, or the version is unknown."""


def feature_service_refs(settings: Settings, feature_service: str) -> list[str]:
    """``view:feature`` of every feature the service serves, from the Feast registry.

    Raises:
        LineageError: The registry has no such feature service.
    """
    from feast.errors import FeatureServiceNotFoundException

    store = open_store(settings)
    try:
        service = store.get_feature_service(feature_service)
    except FeatureServiceNotFoundException as exc:
        raise LineageError(
            f"feature service {feature_service!r} is not in Feast project "
            f"{settings.feast_project!r}\nhint: the features step applies the repo first"
        ) from exc
    return [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]


def _feast_tags(settings: Settings, feature_service: str, refs: Sequence[str]) -> dict[str, str]:
    views = sorted({r.split(":", 1)[0] for r in refs if ":" in r})
    return {
        FEAST_PROJECT_TAG: settings.feast_project,
        FEAST_SERVICE_TAG: feature_service,
        # What a training set is in Feast's words: a historical retrieval.
        FEAST_RETRIEVAL_TAG: "historical",
        FEAST_VIEWS_TAG: ",".join(views)[:TAG_LIMIT],
        FEAST_REFS_TAG: ",".join(refs)[:TAG_LIMIT],
        FEAST_COUNT_TAG: str(len(refs)),
    }


def _note(
    model_name: str,
    version: int,
    feature_service: str,
    run: Any,
    airflow_run: Mapping[str, Any] | None,
) -> str:
    lines = [
        f"Model version [{model_name} v{version}]({mlflow_version_url(model_name, version)}) "
        f"was trained on Feast feature service `{feature_service}`.",
        "",
        f"- training run: [{run.info.run_name or run.info.run_id}]"
        f"({mlflow_run_url(run.info.experiment_id, run.info.run_id)})",
    ]
    if airflow_run and airflow_run.get("dag_id") and airflow_run.get("run_id"):
        dag_id, run_id = str(airflow_run["dag_id"]), str(airflow_run["run_id"])
        lines.append(f"- Airflow run: [{dag_id} {run_id}]({airflow_run_url(dag_id, run_id)})")
    return "\n".join(lines)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _lineage_runs(
    client: MlflowClient, experiment_id: str, filters: Mapping[str, str]
) -> list[Any]:
    query = " AND ".join(f"tags.`{k}` = {_quote(v)}" for k, v in filters.items())
    return sorted(
        client.search_runs([experiment_id], query, max_results=1000),
        key=lambda r: (r.info.start_time or 0, r.info.run_id),
    )


def record_model_lineage(
    settings: Settings,
    feature_service: str,
    model_name: str,
    version: int,
    run_id: str,
    *,
    feature_refs: Sequence[str] | None = None,
    airflow_run: Mapping[str, Any] | None = None,
) -> str:
    """Link a registered model version to the Feast feature service it was trained on.

    Idempotent: a retried task finds what it wrote. Writes Feast's tags on the version
    (``feast.feature_service``, ``feast.project``) and on its run (unless that run already
    names another feature service), and the lineage run the Feast UI draws (see the
    module docstring).

    Args:
        settings: Deployment settings (the Feast project, the MLflow server).
        feature_service: The Feast feature service the version's training set came from.
        model_name: The registered model.
        version: Its version.
        run_id: The version's MLflow run.
        feature_refs: ``view:feature`` names; read from the Feast registry when omitted.
        airflow_run: ``{"dag_id", "run_id"}`` of the DAG run that registered it, linked
            from the lineage run's description.

    Returns:
        The id of the run the Feast UI shows for this version (the lineage run, or the
        version's own run when that is already in the project's experiment).

    Raises:
        LineageError: Unknown feature service (when read from Feast) or model version.
    """
    from mlflow.exceptions import MlflowException

    from recops.registry import experiment_id_for, mlflow_client

    client = mlflow_client(settings)
    refs = list(feature_refs) if feature_refs is not None else None
    if refs is None:
        refs = feature_service_refs(settings, feature_service)
    tags = _feast_tags(settings, feature_service, refs)
    try:
        client.get_model_version(model_name, str(int(version)))
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise LineageError(f"{model_name} v{version} (run {run_id}) is not registered") from exc
    # Feast's resolver reads the version's tag first (models:/name/version -> service).
    for key in (FEAST_SERVICE_TAG, FEAST_PROJECT_TAG):
        client.set_model_version_tag(model_name, str(int(version)), key, tags[key])
    # One feature service per run in Feast's model: never overwrite another one's.
    if run.data.tags.get(FEAST_SERVICE_TAG) in (None, feature_service):
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    experiment_id = experiment_id_for(client, settings, settings.feast_project)
    if run.info.experiment_id == experiment_id:
        return run_id
    identity = {
        FEAST_MODEL_NAME_TAG: model_name,
        FEAST_MODEL_VERSION_TAG: str(int(version)),
        FEAST_SERVICE_TAG: feature_service,
    }
    found = _lineage_runs(client, experiment_id, identity)
    if found:
        return str(found[0].info.run_id)
    created = client.create_run(
        experiment_id,
        run_name=f"{model_name} v{int(version)}",
        tags={
            **tags,
            **identity,
            FEAST_TRAINING_RUN_TAG: run_id,
            MLFLOW_NOTE_TAG: _note(model_name, int(version), feature_service, run, airflow_run),
        },
    )
    client.set_terminated(created.info.run_id)
    return str(created.info.run_id)


def model_lineage(settings: Settings, feature_service: str) -> list[dict[str, Any]]:
    """The model versions recorded as trained on ``feature_service``, oldest first.

    Returns:
        ``{"model_name", "version", "run_id", "lineage_run_id"}`` per version.
    """
    from recops.registry import mlflow_client

    client = mlflow_client(settings)
    experiment = client.get_experiment_by_name(settings.feast_project)
    if experiment is None:
        return []
    runs = _lineage_runs(
        client, str(experiment.experiment_id), {FEAST_SERVICE_TAG: feature_service}
    )
    return [
        {
            "model_name": r.data.tags.get(FEAST_MODEL_NAME_TAG),
            "version": int(r.data.tags[FEAST_MODEL_VERSION_TAG]),
            "run_id": r.data.tags.get(FEAST_TRAINING_RUN_TAG, r.info.run_id),
            "lineage_run_id": r.info.run_id,
        }
        for r in runs
        if r.data.tags.get(FEAST_MODEL_VERSION_TAG)
    ]
