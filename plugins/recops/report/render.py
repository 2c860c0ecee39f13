"""Assembling the report page: the header of run facts, the sections, one HTML document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from recops.report.markup import CSS, esc, section
from recops.report.sections import SECTION_RENDERERS
from recops.report.spec import ReportConfig

__all__ = ["dataset_of", "page_document", "render"]


def dataset_of(data: dict[str, Any]) -> str:
    """The dataset the run trained on: its lineage, else its model version's tag, else "?"."""
    tags = (data.get("version") or {}).get("tags") or {}
    return str(data["lineage"].get("dataset") or tags.get("recops.lineage.dataset") or "?")


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


def page_document(config: ReportConfig, data: dict[str, Any], body: str) -> str:
    """The HTML document: a header of run facts around the rendered sections."""
    lineage, version, run = data["lineage"], data["version"], data["run"]
    facts = [
        ("Dataset", dataset_of(data)),
        ("DAG", config.dag_id),
        ("Run", config.run_id),
        (
            "Data interval",
            f"{lineage.get('data_interval_start', '?')} → {lineage.get('data_interval_end', '?')}",
        ),
        ("MLflow run", f"{run.info.run_name or ''} ({config.mlflow_run_id})"),
        (
            "Model version",
            f"{version['name']} v{version['version']}"
            + (f" @{', @'.join(version['aliases'])}" if version["aliases"] else "")
            if version
            else "not registered",
        ),
        (
            "Code",
            f"git {lineage.get('git_sha', '?')}, lock {str(lineage.get('lock_sha256', '?'))[:12]}",
        ),
        ("Generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]
    header = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    title = f"Run report · {dataset_of(data)} · {config.dag_id} · {config.run_id}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>Run report</h1><dl>{header}</dl></header><main>{body}</main>"
        "<footer>Built by recops.report from the run's MLflow records.</footer></body></html>\n"
    )
