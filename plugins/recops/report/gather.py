"""Reading one run's record from MLflow, and recording what only the report needs.

``record_report_inputs`` logs, to the retrieval run, the training history and
``report/inputs.json``; ``gather`` reads back everything a page shows (the run's JSON and
PNG artifacts, metric histories, its registered model version and the ranker's run), so
the page can be rebuilt later without the nightly's XComs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.report.runs import DagRunRuns, registered_by
from recops.report.spec import MLFLOW_RUN_RE, ReportConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

#: One metric's per-epoch points: ``(step, value)``.
Series = list[tuple[int, float]]
#: The task runs whose per-epoch metrics are the training curves, and their models.
HISTORY_TASKS = (("train", "two-tower"), ("rank", "ranker (DCN-v2)"))
#: MLflow's system-metrics prefix: CPU and memory are not training curves.
SYSTEM_METRICS = "system/"

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
    "result_history",
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
    registered: Mapping[str, Any] | None = None,
    airflow_run: Mapping[str, Any] | None = None,
    validation: Mapping[str, Any] | None = None,
    selection: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> None:
    """Log what the report shows of this DAG run, to the run's home MLflow run.

    - Per-epoch training history as MLflow metric steps (``train.valid_ndcg_at_10`` and,
      when training reports it, ``train.loss``), so the MLflow UI charts them too. A
      series already logged is not logged again (a retried task adds no duplicate steps).
    - ``report/inputs.json``: this run's own figures (its evaluation metrics, the
      champion it was compared with, the registered versions, the per-epoch histories
      its train and rank steps returned, the validation report and the compression table
      when given), so the page never reads another DAG run's records as this one's.

    Args:
        mlflow_run_id: The DAG run's home MLflow run (``runs.home_run``).
        trained: The train step's result dict.
        features: The features step's result dict.
        evaluation: The evaluate step's result dict.
        ranked: The rank step's result dict.
        ranking_run_id: The ranker's MLflow run.
        feature_refs: ``{service: ["view:feature", ...]}``; read from the Feast registry
            when omitted.
        registered: The register step's result (``retrieval`` and ``ranking``).
        airflow_run: ``pipeline.run_ref`` of the DAG run (ids and data interval).
        validation: The validate step's result (its ``report_uri`` JSON is recorded).
        selection: The select step's result (its ``table_uri`` rows are recorded).
        settings: Deployment settings; read from the environment when omitted.
    """
    from recops.registry import mlflow_client
    from recops.tracking import log_history

    settings = settings or Settings.from_env()
    client = mlflow_client(settings)
    log_history(
        client,
        mlflow_run_id,
        {
            "train.valid_ndcg_at_10": trained.get("valid_ndcg_at_10") or [],
            "train.loss": trained.get("loss_history") or [],
        },
    )
    services = {
        "retrieval": str(features.get("feature_service") or ""),
        "ranking": str(features.get("ranking_service") or ""),
    }
    if feature_refs is None:
        feature_refs = feast_feature_refs([s for s in services.values() if s], settings)
    registered = registered or {}
    inputs = {
        "airflow": dict(airflow_run or {}),
        "dataset": features.get("dataset"),
        "train": {k: trained.get(k) for k in TRAIN_SUMMARY},
        "ranker": {k: (ranked or {}).get(k) for k in RANKER_SUMMARY},
        "history": {
            "two-tower": result_history(trained),
            "ranker (DCN-v2)": result_history(ranked or {}),
        },
        "ranking_run_id": ranking_run_id or (registered.get("ranking") or {}).get("run_id"),
        "metrics": evaluation.get("metrics"),
        "ranker_metrics": evaluation.get("ranker_metrics"),
        "champion": {
            "version": evaluation.get("baseline_version"),
            "metrics": evaluation.get("baseline_metrics"),
        },
        "selection": {
            k: evaluation.get(k) for k in ("selected", "selection_reason", "rerank_policy")
        },
        "registered": {
            role: {k: (result or {}).get(k) for k in REGISTERED_FIELDS}
            for role, result in registered.items()
            if isinstance(result, Mapping)
        },
        "feature_services": services,
        "feature_refs": {k: list(v) for k, v in feature_refs.items()},
        "features_as_of": features.get("as_of"),
        "training_rows": features.get("n_rows"),
        "validation": _read_json((validation or {}).get("report_uri")),
        "variants": _read_json((selection or {}).get("table_uri")),
    }
    client.log_dict(mlflow_run_id, inputs, INPUTS_ARTIFACT)


#: What the report keeps of each step's result.
TRAIN_SUMMARY = (
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
RANKER_SUMMARY = ("rmse", "valid_rmse", "click_auc", "click_logloss", "epochs_run", "best_epoch")
REGISTERED_FIELDS = ("model_name", "version", "run_id", "created", "blessed", "reasons", "aliases")


def result_history(result: Mapping[str, Any]) -> dict[str, list[float]]:
    """Per-epoch series a step's result carries: ``history`` (Keras' ``{key: [...]}``),
    ``loss_history`` and ``valid_ndcg_at_10``; only series of finite numbers."""
    out: dict[str, list[float]] = {}
    history = result.get("history")
    if isinstance(history, Mapping):
        out.update({str(k): v for k, v in history.items() if isinstance(v, list)})
    if isinstance(result.get("loss_history"), list):
        out.setdefault("loss", result["loss_history"])
    if isinstance(result.get("valid_ndcg_at_10"), list):
        out.setdefault("valid_ndcg_at_10", result["valid_ndcg_at_10"])
    return {
        k: [float(x) for x in v]
        for k, v in out.items()
        if v and all(isinstance(x, int | float) and math.isfinite(x) for x in v)
    }


def _read_json(path: Any) -> Any:
    """A step's JSON output, or None when the step did not say where it is."""
    if not path or not Path(str(path)).is_file():
        return None
    return json.loads(Path(str(path)).read_text(encoding="utf-8"))


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


def _get_run(client: MlflowClient, run_id: str) -> Run | None:
    from mlflow.exceptions import MlflowException

    if not MLFLOW_RUN_RE.fullmatch(run_id or ""):
        return None
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def _metric_series(client: MlflowClient, run: Run, keys: Iterable[str]) -> dict[str, Series]:
    """``{key: [(step, value), ...]}`` of the keys with a per-step history (two or more)."""
    out: dict[str, Series] = {}
    for key in sorted(keys):
        steps = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        if len(steps) >= 2:
            out[key] = [(int(m.step), float(m.value)) for m in steps]
    return out


def _histories(
    client: MlflowClient, runs: DagRunRuns, inputs: Mapping[str, Any], legacy: list[Run]
) -> dict[str, dict[str, Series]]:
    """Per-epoch curves per model: live task-run metrics, then the steps' own results,
    then the ``train.*`` series the report logged before runs were tracked per task."""
    history: dict[str, dict[str, Series]] = {}
    for task, label in HISTORY_TASKS:
        for run in reversed(runs.tasks.get(task, [])):  # the latest try with curves
            keys = [k for k in run.data.metrics if not k.startswith(SYSTEM_METRICS)]
            series = _metric_series(client, run, keys)
            if series:
                history[label] = series
                break
    for label, recorded in (inputs.get("history") or {}).items():
        series = {k: list(enumerate(v)) for k, v in (recorded or {}).items() if len(v) >= 1}
        if series and label not in history:
            history[label] = series
    if "two-tower" not in history:
        for run in legacy:
            series = _metric_series(client, run, ("train.loss", "train.valid_ndcg_at_10"))
            if series:
                history["two-tower"] = series
                break
    return history


def _model(
    client: MlflowClient, recorded: Mapping[str, Any], fallback_run: str | None, run_id: str
) -> dict[str, Any]:
    """One registered model of the DAG run: its version, its run, and whether that run
    belongs to this DAG run (a re-run may find an identical version already there)."""
    model_run_id = str(recorded.get("run_id") or fallback_run or "")
    version = None
    if recorded.get("model_name") and recorded.get("version") is not None:
        version = _version_dict(client, str(recorded["model_name"]), str(recorded["version"]))
    elif model_run_id:
        version = model_version(client, model_run_id)
    run = _get_run(client, model_run_id) if model_run_id else None
    owner = registered_by(run, (version or {}).get("tags"))
    return {
        "run": run,
        "version": version,
        "owner": owner,
        "own": run is not None and (owner is None or owner == run_id),
    }


def gather(
    client: MlflowClient,
    config: ReportConfig,
    tmp: Path,
    runs: DagRunRuns | None = None,
) -> dict[str, Any]:
    """Everything the page shows of one DAG run (missing parts are None).

    Records come from the run's home MLflow run (``report/inputs.json``) and from the
    registered models' runs only when those belong to this DAG run.
    """
    home = config.mlflow_run_id
    runs = runs or DagRunRuns()
    inputs = json_artifact(client, home, INPUTS_ARTIFACT, tmp / "f") or {}
    registered = inputs.get("registered") or {}
    model = _model(client, registered.get("retrieval") or {}, home, config.run_id)
    source = model["run"].info.run_id if model["own"] else None
    data: dict[str, Any] = {
        "inputs": inputs,
        "model": model,
        "version": model["version"],
        "lineage": (json_artifact(client, source, "lineage.json", tmp / "a") if source else None)
        or {},
        "gate": json_artifact(client, source, "gate.json", tmp / "b") if source else None,
        "validation": inputs.get("validation")
        or (first_json(client, source, "validation", tmp / "c") if source else None),
        "variants": inputs.get("variants")
        or (first_json(client, source, "compression/table", tmp / "d") if source else None),
        "pareto": png_artifact(client, source, "compression/pareto", tmp / "e") if source else None,
        "rollouts": json_artifact(client, home, ROLLOUTS_ARTIFACT, tmp / "g") or [],
        "metrics": inputs.get("metrics") or (dict(model["run"].data.metrics) if source else {}),
        "dag_run": runs,
    }
    legacy = [r for r in (_get_run(client, home), model["run"] if source else None) if r]
    data["history"] = _histories(client, runs, inputs, legacy)
    ranking = _model(
        client,
        registered.get("ranking") or {"run_id": inputs.get("ranking_run_id")},
        None,
        config.run_id,
    )
    data["ranking"] = None
    if ranking["run"] is not None:
        ranking_source = ranking["run"].info.run_id if ranking["own"] else None
        data["ranking"] = {
            **ranking,
            "metrics": dict(ranking["run"].data.metrics) if ranking_source else {},
            "gate": json_artifact(client, ranking_source, "gate.json", tmp / "h")
            if ranking_source
            else None,
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
    return _version_dict(client, found[0].name, found[0].version)  # search carries no aliases


def _version_dict(client: MlflowClient, name: str, version: str) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, version)
    except MlflowException:
        return None
    return {
        "name": mv.name,
        "version": int(mv.version),
        "aliases": sorted(mv.aliases),
        "tags": dict(mv.tags),
    }
