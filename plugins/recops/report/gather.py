"""Reading one run's record from MLflow, and recording what only the report needs.

``record_report_inputs`` logs, to the retrieval run, the training history and
``report/inputs.json``; ``gather`` reads back everything a page shows (the run's JSON and
PNG artifacts, metric histories, its registered model version and the ranker's run), so
the page can be rebuilt later without the nightly's XComs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.report.spec import MLFLOW_RUN_RE

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "INPUTS_ARTIFACT",
    "ROLLOUTS_ARTIFACT",
    "download_artifact",
    "feast_feature_refs",
    "first_json",
    "gather",
    "json_artifact",
    "log_json",
    "merge_rollout",
    "model_version",
    "png_artifact",
    "record_report_inputs",
]

#: What ``record_report_inputs`` logs beyond ``register``, and the promotion outcomes.
INPUTS_ARTIFACT = "report/inputs.json"
ROLLOUTS_ARTIFACT = "report/rollouts.json"


def record_report_inputs(
    mlflow_run_id: str,
    *,
    trained: Mapping[str, Any],
    features: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    ranked: Mapping[str, Any] | None = None,
    ranking_run_id: str | None = None,
    feature_refs: Mapping[str, Sequence[str]] | None = None,
    settings: Settings | None = None,
) -> None:
    """Log what the report needs beyond what ``register`` logs, to the retrieval run.

    - Per-epoch training history as MLflow metric steps (``train.valid_ndcg_at_10`` and,
      when training reports it, ``train.loss``), so the MLflow UI charts them too. A
      series already logged is not logged again (a retried task adds no duplicate steps).
    - ``report/inputs.json``: the training summary, the champion's metrics on this run's
      holdout (what the gate compared against), the feature names of each feature
      service, the ranker's figures and its MLflow run.

    Args:
        mlflow_run_id: The retrieval model's MLflow run.
        trained: The train step's result dict.
        features: The features step's result dict.
        evaluation: The evaluate step's result dict.
        ranked: The rank step's result dict.
        ranking_run_id: The ranker's MLflow run.
        feature_refs: ``{service: ["view:feature", ...]}``; read from the Feast registry
            when omitted.
        settings: Deployment settings; read from the environment when omitted.
    """
    from mlflow.entities import Metric

    from recops.registry import mlflow_client

    settings = settings or Settings.from_env()
    client = mlflow_client(settings)
    series = {
        "train.valid_ndcg_at_10": trained.get("valid_ndcg_at_10") or [],
        "train.loss": trained.get("loss_history") or [],
    }
    now = int(time.time() * 1000)
    metrics = [
        Metric(key=key, value=float(value), timestamp=now, step=step)
        for key, values in series.items()
        if values and not client.get_metric_history(mlflow_run_id, key)
        for step, value in enumerate(values)
    ]
    if metrics:
        client.log_batch(mlflow_run_id, metrics=metrics)
    services = {
        "retrieval": str(features.get("feature_service") or ""),
        "ranking": str(features.get("ranking_service") or ""),
    }
    if feature_refs is None:
        feature_refs = feast_feature_refs([s for s in services.values() if s], settings)
    summary_keys = (
        "strategy",
        "replicas",
        "epochs_run",
        "final_loss",
        "best_epoch",
        "seconds_per_epoch",
        "examples_per_s",
        "train_rows",
        "n_users",
        "n_items",
        "protocol",
        "stopped_early",
    )
    inputs = {
        "train": {k: trained.get(k) for k in summary_keys},
        "ranker": {
            k: (ranked or {}).get(k)
            for k in (
                "rmse",
                "valid_rmse",
                "click_auc",
                "click_logloss",
                "epochs_run",
                "best_epoch",
            )
        },
        "ranking_run_id": ranking_run_id,
        "champion": {
            "version": evaluation.get("baseline_version"),
            "metrics": evaluation.get("baseline_metrics"),
        },
        "selection": {
            k: evaluation.get(k) for k in ("selected", "selection_reason", "rerank_policy")
        },
        "feature_services": services,
        "feature_refs": {k: list(v) for k, v in feature_refs.items()},
        "features_as_of": features.get("as_of"),
        "training_rows": features.get("n_rows"),
    }
    client.log_dict(mlflow_run_id, inputs, INPUTS_ARTIFACT)


def feast_feature_refs(services: Iterable[str], settings: Settings) -> dict[str, list[str]]:
    """``{service: ["view:feature", ...]}`` from the Feast registry."""
    from recops.features.feast_repo import open_store

    store = open_store(settings)
    out: dict[str, list[str]] = {}
    for name in services:
        service = store.get_feature_service(name)
        out[name] = [
            f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features
        ]
    return out


def merge_rollout(existing: list[dict[str, Any]], entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``existing`` with ``entry`` replacing any record of the same model and version."""
    key = (str(entry.get("model_name")), int(entry.get("version") or 0))
    kept = [e for e in existing if (str(e.get("model_name")), int(e.get("version") or 0)) != key]
    return [*kept, dict(entry)]


def log_json(client: MlflowClient, run_id: str, payload: Any, artifact_file: str) -> None:
    """Log ``payload`` as the JSON artifact ``artifact_file`` of the run."""
    client.log_dict(run_id, payload, artifact_file)


def download_artifact(client: MlflowClient, run_id: str, artifact: str, dest: Path) -> Path | None:
    """Local copy of one artifact, or None when the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    parent = str(Path(artifact).parent) if "/" in artifact else None
    try:
        names = {f.path for f in client.list_artifacts(run_id, parent)}
    except (MlflowException, OSError):
        return None
    if artifact not in names:
        return None
    return Path(client.download_artifacts(run_id, artifact, str(dest)))


def json_artifact(client: MlflowClient, run_id: str, artifact: str, dest: Path) -> Any:
    """One JSON artifact, parsed, or None when the run has no such artifact."""
    path = download_artifact(client, run_id, artifact, dest)
    return json.loads(path.read_text(encoding="utf-8")) if path is not None else None


def first_json(client: MlflowClient, run_id: str, folder: str, dest: Path) -> Any:
    """The JSON file logged under ``folder`` (the register step logs files by folder)."""
    from mlflow.exceptions import MlflowException

    try:
        files = [f.path for f in client.list_artifacts(run_id, folder) if f.path.endswith(".json")]
    except (MlflowException, OSError):
        return None
    return json_artifact(client, run_id, sorted(files)[0], dest) if files else None


def png_artifact(client: MlflowClient, run_id: str, folder: str, dest: Path) -> bytes | None:
    """The bytes of the PNG logged under ``folder``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        files = [f.path for f in client.list_artifacts(run_id, folder) if f.path.endswith(".png")]
    except (MlflowException, OSError):
        return None
    if not files:
        return None
    path = download_artifact(client, run_id, sorted(files)[0], dest)
    return path.read_bytes() if path is not None else None


def gather(client: MlflowClient, run_id: str, tmp: Path) -> dict[str, Any]:
    """Everything the page shows, read from the run (missing parts are None)."""
    data: dict[str, Any] = {
        "lineage": json_artifact(client, run_id, "lineage.json", tmp / "a") or {},
        "gate": json_artifact(client, run_id, "gate.json", tmp / "b"),
        "validation": first_json(client, run_id, "validation", tmp / "c"),
        "variants": first_json(client, run_id, "compression/table", tmp / "d"),
        "pareto": png_artifact(client, run_id, "compression/pareto", tmp / "e"),
        "inputs": json_artifact(client, run_id, INPUTS_ARTIFACT, tmp / "f") or {},
        "rollouts": json_artifact(client, run_id, ROLLOUTS_ARTIFACT, tmp / "g") or [],
        "version": model_version(client, run_id),
    }
    data["history"] = {
        key: [
            (int(m.step), float(m.value))
            for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        ]
        for key in ("train.loss", "train.valid_ndcg_at_10")
    }
    data["history"] = {k: v for k, v in data["history"].items() if v}
    ranking_run = data["inputs"].get("ranking_run_id")
    data["ranking"] = None
    if ranking_run and MLFLOW_RUN_RE.fullmatch(str(ranking_run)):
        ranked = client.get_run(str(ranking_run))
        data["ranking"] = {
            "metrics": dict(ranked.data.metrics),
            "gate": json_artifact(client, str(ranking_run), "gate.json", tmp / "h"),
            "version": model_version(client, str(ranking_run)),
        }
    return data


def model_version(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
    """Name, number, aliases and tags of the model version the run registered, if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = list(client.search_model_versions(f"run_id='{run_id}'"))
    except MlflowException:
        return None
    if not found:
        return None
    mv = client.get_model_version(found[0].name, found[0].version)  # search carries no aliases
    return {
        "name": mv.name,
        "version": int(mv.version),
        "aliases": sorted(mv.aliases),
        "tags": dict(mv.tags),
    }
