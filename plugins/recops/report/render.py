"""Assembling the report page: the header of run facts, the sections, one HTML document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from recops.links import airflow_run_url, airflow_task_url, mlflow_run_url, mlflow_version_url
from recops.report.markup import CSS, Raw, esc, link, links, section
from recops.report.runs import DagRunRuns
from recops.report.sections import SECTION_RENDERERS
from recops.report.spec import ReportConfig

__all__ = ["NIGHTLY_TASKS", "dataset_of", "page_document", "render"]


def dataset_of(data: dict[str, Any]) -> str:
    """The dataset the run trained on: its lineage, else its model version's tag, else "?"."""
    tags = (data.get("version") or {}).get("tags") or {}
    recorded = (data.get("inputs") or {}).get("dataset")
    return str(
        data["lineage"].get("dataset") or recorded or tags.get("recops.lineage.dataset") or "?"
    )


def render(config: ReportConfig, data: dict[str, Any]) -> tuple[str, list[str]]:
    """The whole page, and the keys of the sections that had data."""
    have: list[str] = []
    parts = []
    for key, title, renderer in SECTION_RENDERERS:
        body, ok = renderer(data)
        parts.append(section(key, title, body))
        if ok:
            have.append(key)
    return page_document(config, data, "".join(parts)), have


#: The nightly's tasks, linked from the header when no task run names them.
NIGHTLY_TASKS = (
    "validate",
    "features",
    "train",
    "rank",
    "compress",
    "select",
    "evaluate",
    "register",
    "report",
)


def _version_link(version: dict[str, Any] | None, model: dict[str, Any], run_id: str) -> Any:
    """A model version as a link to its MLflow page, with aliases and who registered it."""
    if not version:
        return "not registered"
    text = f"{version['name']} v{version['version']}" + (
        f" @{', @'.join(version['aliases'])}" if version["aliases"] else ""
    )
    out = link(mlflow_version_url(version["name"], version["version"]), text)
    owner = model.get("owner")
    if model.get("run") is not None and not model.get("own") and owner != run_id:
        out = Raw(f"{out} (registered earlier by run {esc(owner)}; this run re-used it)")
    return out


def _run_links(data: dict[str, Any], config: ReportConfig) -> Raw:
    """The DAG run's MLflow runs: its own, each task's, and the models' runs."""
    run = data["run"]
    items = [
        (
            mlflow_run_url(run.info.experiment_id, run.info.run_id),
            f"{run.info.run_name or 'run'} ({run.info.run_id})",
        )
    ]
    runs: DagRunRuns = data.get("dag_run") or DagRunRuns()
    for task, task_runs in sorted(runs.tasks.items()):
        for task_run in task_runs[-1:]:
            items.append((mlflow_run_url(task_run.info.experiment_id, task_run.info.run_id), task))
    for role, model in (("retrieval model", data.get("model")), ("ranker", data.get("ranking"))):
        model_run = (model or {}).get("run")
        if model_run is not None and model_run.info.run_id != run.info.run_id:
            items.append(
                (mlflow_run_url(model_run.info.experiment_id, model_run.info.run_id), role)
            )
    return links(items)


def page_document(config: ReportConfig, data: dict[str, Any], body: str) -> str:
    """The HTML document: a header of run facts and links around the rendered sections."""
    lineage = data["lineage"]
    interval = {**(data["inputs"].get("airflow") or {}), **lineage}
    runs: DagRunRuns = data.get("dag_run") or DagRunRuns()
    tasks = sorted(runs.tasks) or NIGHTLY_TASKS
    ranking = data.get("ranking") or {}
    facts: list[tuple[str, Any]] = [
        ("Dataset", dataset_of(data)),
        ("DAG", config.dag_id),
        ("Run", link(airflow_run_url(config.dag_id, config.run_id), config.run_id)),
        (
            "Data interval",
            f"{interval.get('data_interval_start', '?')} → "
            f"{interval.get('data_interval_end', '?')}",
        ),
        ("MLflow runs", _run_links(data, config)),
        ("Model version", _version_link(data["version"], data.get("model") or {}, config.run_id)),
        ("Ranker version", _version_link(ranking.get("version"), ranking, config.run_id)),
        (
            "Task logs",
            links((airflow_task_url(config.dag_id, config.run_id, t), t) for t in tasks),
        ),
        (
            "Code",
            f"git {lineage['git_sha']}, lock {str(lineage.get('lock_sha256', '?'))[:12]}"
            if lineage.get("git_sha")
            else "not recorded (no version registered by this run)",
        ),
        ("Generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]
    if not ranking.get("version"):
        facts = [f for f in facts if f[0] != "Ranker version"]
    header = "".join(
        f"<dt>{esc(k)}</dt><dd>{v if isinstance(v, Raw) else esc(v)}</dd>" for k, v in facts
    )
    title = f"Run report · {dataset_of(data)} · {config.dag_id} · {config.run_id}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>Run report</h1><dl>{header}</dl></header><main>{body}</main>"
        "<footer>Built by recops.report from this DAG run's MLflow records.</footer>"
        "</body></html>\n"
    )
