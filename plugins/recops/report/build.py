"""Building a run's report: gather, render, write atomically, log to MLflow; roll-outs.

Where the page goes:

- ``RECOPS_HOME/reports/<dag_id>/<run_id>/index.html`` (written atomically; what the
  Airflow plugin serves at ``/recops/reports/<dag_id>/<run_id>``);
- artifact ``report/index.html`` of the run's retrieval MLflow run.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recops.config import Settings
from recops.io import atomic_write_bytes
from recops.report.gather import (
    ROLLOUTS_ARTIFACT,
    gather,
    log_json,
    merge_rollout,
    record_report_inputs,
)
from recops.report.render import render
from recops.report.runs import dag_run_runs, home_run
from recops.report.spec import REPORT_ARTIFACT, ReportConfig, ReportResult, report_path

__all__ = ["build_report", "report_dag_run", "rollout_report"]

# The package's name, as before the split, so log filters and readers see the same logger.
log = logging.getLogger("recops.report")


def build_report(config: ReportConfig, settings: Settings | None = None) -> ReportResult:
    """Render the run's report, write it atomically and log it to the MLflow run.

    Args:
        config: The Airflow run and its retrieval MLflow run, and optionally one
            promotion outcome to record first.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        Where the page is (file and MLflow artifact) and which sections had data.

    Raises:
        ValueError: A bad dag, run or MLflow run id.
        mlflow.exceptions.MlflowException: The MLflow run does not exist.
    """
    from recops.registry import mlflow_client

    settings = settings or Settings.from_env()
    path = report_path(settings, config.dag_id, config.run_id)
    client = mlflow_client(settings)
    run = client.get_run(config.mlflow_run_id)
    with tempfile.TemporaryDirectory(prefix="recops-report-") as tmp:
        runs = dag_run_runs(client, config.dag_id, config.run_id)
        data = gather(client, config, Path(tmp), runs)
        if config.rollout is not None:
            data["rollouts"] = merge_rollout(data["rollouts"], config.rollout)
            log_json(client, config.mlflow_run_id, data["rollouts"], ROLLOUTS_ARTIFACT)
        data["run"] = run
        data["feast_project"] = settings.feast_project
        page, sections = render(config, data)
        atomic_write_bytes(path, page.encode("utf-8"))
        client.log_artifact(config.mlflow_run_id, str(path), "report")
    log.info("run report for %s/%s: %s", config.dag_id, config.run_id, path)
    return ReportResult(
        dag_id=config.dag_id,
        run_id=config.run_id,
        path=str(path),
        artifact_uri=f"{run.info.artifact_uri.rstrip('/')}/{REPORT_ARTIFACT}",
        mlflow_run_id=config.mlflow_run_id,
        sections=sections,
        rolled_out=bool(data["rollouts"]),
    )


def report_dag_run(
    run: Mapping[str, Any],
    *,
    registered: Mapping[str, Any],
    features: Mapping[str, Any],
    trained: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    ranked: Mapping[str, Any] | None = None,
    validation: Mapping[str, Any] | None = None,
    selection: Mapping[str, Any] | None = None,
    feature_refs: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> ReportResult:
    """Record one DAG run's figures in its own MLflow run, then render its report.

    What the nightly's ``report`` task calls. Everything is keyed on the Airflow run: the
    page is recorded in the DAG run's MLflow run (``runs.home_run``), never in the run of
    a version an earlier DAG run registered.

    Args:
        run: ``pipeline.run_ref`` of the DAG run (``dag_id``, ``run_id``, interval).
        registered: The register step's result (``retrieval``, ``ranking``).
        features: The features step's result.
        trained: The train step's result.
        evaluation: The evaluate step's result.
        ranked: The rank step's result.
        validation: The validate step's result (recorded when given).
        selection: The select step's result (recorded when given).
        feature_refs: ``{service: ["view:feature", ...]}``; read from Feast when omitted.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        Where the page went and which sections had data.
    """
    from recops.registry import experiment_id_for, mlflow_client

    settings = settings or Settings.from_env()
    dag_id, run_id = str(run["dag_id"]), str(run["run_id"])
    client = mlflow_client(settings)
    home = home_run(
        client,
        dag_id,
        run_id,
        registered,
        experiment_id=experiment_id_for(client, settings, "recsys_nightly"),
    )
    record_report_inputs(
        home,
        trained=trained,
        features=features,
        evaluation=evaluation,
        ranked=ranked,
        feature_refs=feature_refs,
        registered=registered,
        airflow_run=run,
        validation=validation,
        selection=selection,
        settings=settings,
    )
    return build_report(ReportConfig(dag_id=dag_id, run_id=run_id, mlflow_run_id=home), settings)


def rollout_report(
    outcome: Mapping[str, Any], settings: Settings | None = None
) -> ReportResult | None:
    """Re-render the report of the nightly run that produced a promoted version.

    The version's lineage tags name the DAG run; a ranker version points at the
    retrieval version registered beside it, whose MLflow run holds the report.

    Args:
        outcome: ``model_name``, ``version`` and the promotion's outcome (a
            ``PromoteResult`` dict, or a failure with ``reasons``).
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        The report, or None when the version was not registered by a DAG run (a version
        registered by hand has no nightly report).
    """
    from recops.registry import mlflow_client

    settings = settings or Settings.from_env()
    client = mlflow_client(settings)
    version = client.get_model_version(str(outcome["model_name"]), str(int(outcome["version"])))
    dag_id = version.tags.get("recops.lineage.dag_id")
    run_id = version.tags.get("recops.lineage.run_id")
    if not dag_id or not run_id:
        log.info(
            "%s v%s was not registered by a DAG run: no run report to update",
            outcome["model_name"],
            outcome["version"],
        )
        return None
    mlflow_run_id = str(version.run_id)
    retrieval_version = version.tags.get("recops.lineage.retrieval_version")
    if retrieval_version:
        mlflow_run_id = str(client.get_model_version(settings.model_name, retrieval_version).run_id)
    # The report lives in the DAG run's own MLflow run when runs are tracked per DAG run.
    parent = dag_run_runs(client, dag_id, run_id).parent
    if parent is not None:
        mlflow_run_id = str(parent.info.run_id)
    entry = {**dict(outcome), "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
    return build_report(
        ReportConfig(dag_id=dag_id, run_id=run_id, mlflow_run_id=mlflow_run_id, rollout=entry),
        settings,
    )
