"""The run report: one self-contained HTML page per ``recsys_nightly`` DAG run.

The page is rebuilt from what the run recorded in MLflow (its retrieval run's metrics,
``lineage.json``, ``gate.json``, the GX ``validation.json``, the compression table and
Pareto plot, and the report's own ``report/inputs.json`` and ``report/rollouts.json``),
so the promotion DAG can re-render it later without the nightly's XComs. It has no
external assets and no JavaScript: CSS is inline and plots are PNG data URIs, so it opens
from disk, from the MLflow UI, or inside the Airflow UI's DAG-run tab.

Where it goes:

- ``RECOPS_HOME/reports/<dag_id>/<run_id>/index.html`` (written atomically; what the
  Airflow plugin serves at ``/recops/reports/<dag_id>/<run_id>``);
- artifact ``report/index.html`` of the run's retrieval MLflow run.

Every text that came from a run (tag values, reasons, names) is HTML-escaped; dag and run
ids are checked against strict patterns before they become a path.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.config import Settings
from recops.records import Record

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "REPORT_ARTIFACT",
    "ReportConfig",
    "ReportResult",
    "build_report",
    "check_ids",
    "record_report_inputs",
    "report_path",
    "rollout_report",
]

log = logging.getLogger(__name__)

#: Where the page goes in the run's MLflow artifacts.
REPORT_ARTIFACT = "report/index.html"
_INPUTS = "report/inputs.json"
_ROLLOUTS = "report/rollouts.json"
#: Airflow's own dag_id rule (KEY_REGEX), with a first character that is not a dot.
DAG_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}$")
#: Airflow's default ``allowed_run_id_pattern`` (``manual__2026-01-01T00:00:00+00:00``),
#: with a first character that is not a dot, so "." and ".." can never name a folder.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.~:+-]{0,249}$")
_MLFLOW_RUN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Overall metrics in the order people read them.
_OVERALL = ("recall_at_10", "ndcg_at_10", "hit_at_10", "mrr_at_10", "precision_at_10")
SECTIONS = ("validation", "features", "training", "metrics", "compression", "gate", "rollout")


def check_ids(dag_id: str, run_id: str) -> None:
    """Refuse a dag or run id that is not one Airflow would make (no path tricks).

    Raises:
        ValueError: Naming the bad id.
    """
    if not isinstance(dag_id, str) or not DAG_ID_RE.fullmatch(dag_id):
        raise ValueError(f"dag_id {dag_id!r} is not a valid Airflow dag id")
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise ValueError(f"run_id {run_id!r} is not a valid Airflow run id")


def report_path(settings: Settings, dag_id: str, run_id: str) -> Path:
    """``RECOPS_HOME/reports/<dag_id>/<run_id>/index.html`` after checking both ids."""
    check_ids(dag_id, run_id)
    root = (settings.home / "reports").resolve()
    path = (root / dag_id / run_id / "index.html").resolve()
    # Belt and braces: the patterns already exclude separators and dot-only names.
    if not path.is_relative_to(root):
        raise ValueError(f"report path {path} escapes {root}")
    return path


@dataclass(frozen=True, kw_only=True)
class ReportConfig(Record):
    """Which run to report on.

    Attributes:
        dag_id: The Airflow DAG of the run (``recsys_nightly``).
        run_id: The Airflow run id.
        mlflow_run_id: The MLflow run the register step logged the retrieval model to;
            the report is read from it and logged back to it.
        rollout: One promotion outcome to record before rendering (a ``PromoteResult``
            dict, or ``{model_name, version, outcome: "failed", reasons}``); it replaces an
            earlier record of the same model and version.
    """

    dag_id: str
    run_id: str
    mlflow_run_id: str
    rollout: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_ids(self.dag_id, self.run_id)
        if not _MLFLOW_RUN_RE.fullmatch(self.mlflow_run_id or ""):
            raise ValueError(f"mlflow_run_id {self.mlflow_run_id!r} is not an MLflow run id")


@dataclass(frozen=True, kw_only=True)
class ReportResult(Record):
    """Where the report went (small enough for XCom).

    Attributes:
        dag_id: The DAG of the run.
        run_id: The Airflow run id.
        path: The HTML file under ``RECOPS_HOME/reports``.
        artifact_uri: The same page in the MLflow run's artifacts.
        mlflow_run_id: The MLflow run it belongs to.
        sections: The sections that had data (the others say what is missing).
        rolled_out: True once a promotion outcome is recorded for the run's models.
    """

    dag_id: str
    run_id: str
    path: str
    artifact_uri: str
    mlflow_run_id: str
    sections: list[str] = field(default_factory=list)
    rolled_out: bool = False


# --------------------------------------------------------------------------- recording


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

    from recops.registry import _client

    settings = settings or Settings.from_env()
    client = _client(settings)
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
        feature_refs = _feast_feature_refs([s for s in services.values() if s], settings)
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
    client.log_dict(mlflow_run_id, inputs, _INPUTS)


def _feast_feature_refs(services: Iterable[str], settings: Settings) -> dict[str, list[str]]:
    from recops.features import open_store

    store = open_store(settings)
    out: dict[str, list[str]] = {}
    for name in services:
        service = store.get_feature_service(name)
        out[name] = [
            f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features
        ]
    return out


# --------------------------------------------------------------------------- building


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
    from recops.registry import _client

    settings = settings or Settings.from_env()
    path = report_path(settings, config.dag_id, config.run_id)
    client = _client(settings)
    run = client.get_run(config.mlflow_run_id)
    with tempfile.TemporaryDirectory(prefix="recops-report-") as tmp:
        data = _gather(client, config.mlflow_run_id, Path(tmp))
        if config.rollout is not None:
            data["rollouts"] = _merge_rollout(data["rollouts"], config.rollout)
            _log_json(client, config.mlflow_run_id, data["rollouts"], _ROLLOUTS)
        data["run"] = run
        page, sections = _render(config, data)
        _write_atomic(path, page.encode("utf-8"))
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
    from recops.registry import _client

    settings = settings or Settings.from_env()
    client = _client(settings)
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
    entry = {**dict(outcome), "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
    return build_report(
        ReportConfig(dag_id=dag_id, run_id=run_id, mlflow_run_id=mlflow_run_id, rollout=entry),
        settings,
    )


def _merge_rollout(
    existing: list[dict[str, Any]], entry: Mapping[str, Any]
) -> list[dict[str, Any]]:
    key = (str(entry.get("model_name")), int(entry.get("version") or 0))
    kept = [e for e in existing if (str(e.get("model_name")), int(e.get("version") or 0)) != key]
    return [*kept, dict(entry)]


def _log_json(client: MlflowClient, run_id: str, payload: Any, artifact_file: str) -> None:
    client.log_dict(run_id, payload, artifact_file)


def _download(client: MlflowClient, run_id: str, artifact: str, dest: Path) -> Path | None:
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


def _json_artifact(client: MlflowClient, run_id: str, artifact: str, dest: Path) -> Any:
    path = _download(client, run_id, artifact, dest)
    return json.loads(path.read_text(encoding="utf-8")) if path is not None else None


def _first_json(client: MlflowClient, run_id: str, folder: str, dest: Path) -> Any:
    """The JSON file logged under ``folder`` (the register step logs files by folder)."""
    from mlflow.exceptions import MlflowException

    try:
        files = [f.path for f in client.list_artifacts(run_id, folder) if f.path.endswith(".json")]
    except (MlflowException, OSError):
        return None
    return _json_artifact(client, run_id, sorted(files)[0], dest) if files else None


def _png_artifact(client: MlflowClient, run_id: str, folder: str, dest: Path) -> bytes | None:
    from mlflow.exceptions import MlflowException

    try:
        files = [f.path for f in client.list_artifacts(run_id, folder) if f.path.endswith(".png")]
    except (MlflowException, OSError):
        return None
    if not files:
        return None
    path = _download(client, run_id, sorted(files)[0], dest)
    return path.read_bytes() if path is not None else None


def _gather(client: MlflowClient, run_id: str, tmp: Path) -> dict[str, Any]:
    """Everything the page shows, read from the run (missing parts are None)."""
    data: dict[str, Any] = {
        "lineage": _json_artifact(client, run_id, "lineage.json", tmp / "a") or {},
        "gate": _json_artifact(client, run_id, "gate.json", tmp / "b"),
        "validation": _first_json(client, run_id, "validation", tmp / "c"),
        "variants": _first_json(client, run_id, "compression/table", tmp / "d"),
        "pareto": _png_artifact(client, run_id, "compression/pareto", tmp / "e"),
        "inputs": _json_artifact(client, run_id, _INPUTS, tmp / "f") or {},
        "rollouts": _json_artifact(client, run_id, _ROLLOUTS, tmp / "g") or [],
        "version": _model_version(client, run_id),
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
    if ranking_run and _MLFLOW_RUN_RE.fullmatch(str(ranking_run)):
        ranked = client.get_run(str(ranking_run))
        data["ranking"] = {
            "metrics": dict(ranked.data.metrics),
            "gate": _json_artifact(client, str(ranking_run), "gate.json", tmp / "h"),
            "version": _model_version(client, str(ranking_run)),
        }
    return data


def _model_version(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
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


def _write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- rendering


class _Raw(str):
    """Markup built here from escaped parts; table cells of this type are not re-escaped."""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number != number:
        return "NaN"
    if number.is_integer() and abs(number) >= 1:  # counts logged as floats (row_count 199.0)
        return f"{int(number):,}"
    return f"{number:.{digits}f}"


def _kb(value: Any) -> str:
    return "–" if value in (None, 0) else f"{float(value) / 1024:,.1f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _e(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f'<table class="{_e(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _facts(rows: Iterable[tuple[str, Any]], caption: str = "", cls: str = "") -> str:
    """A two-column key/value table (keys as row headers)."""
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    body = "".join(
        f'<tr><th scope="row">{_e(k)}</th><td>{v if isinstance(v, _Raw) else _e(v)}</td></tr>'
        for k, v in rows
    )
    return f'<table class="facts {_e(cls)}">{cap}<tbody>{body}</tbody></table>'


def _badge(ok: bool | None, yes: str, no: str, unknown: str = "unknown") -> _Raw:
    if ok is None:
        return _Raw(f'<span class="badge grey">{_e(unknown)}</span>')
    return _Raw(f'<span class="badge {"green" if ok else "red"}">{_e(yes if ok else no)}</span>')


def _img(png: bytes, alt: str) -> str:
    if not png.startswith(_PNG_MAGIC):  # only real PNGs become data URIs
        return f'<p class="note">{_e(alt)}: the artifact is not a PNG, not shown.</p>'
    return (
        f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
    )


def _list(items: Iterable[Any], cls: str = "") -> str:
    rendered = "".join(f"<li>{_e(i)}</li>" for i in items)
    return f'<ul class="{_e(cls)}">{rendered}</ul>' if rendered else ""


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{_e(key)}"><h2>{_e(title)}</h2>{body}</section>'


def _render(config: ReportConfig, data: dict[str, Any]) -> tuple[str, list[str]]:
    have: list[str] = []
    parts = []
    for key, title, renderer in (
        ("validation", "Data validation and drift", _validation_section),
        ("features", "Features used", _features_section),
        ("training", "Training curves", _training_section),
        ("metrics", "Metrics vs champion", _metrics_section),
        ("compression", "Compression search", _compression_section),
        ("gate", "Gate decision", _gate_section),
        ("rollout", "Rollout", _rollout_section),
    ):
        body, ok = renderer(data)
        parts.append(_section(key, title, body))
        if ok:
            have.append(key)
    return _page(config, data, "".join(parts)), have


def _page(config: ReportConfig, data: dict[str, Any], body: str) -> str:
    lineage, version, run = data["lineage"], data["version"], data["run"]
    facts = [
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
    header = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    title = f"Run report · {config.dag_id} · {config.run_id}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>Run report</h1><dl>{header}</dl></header><main>{body}</main>"
        "<footer>Built by recops.report from the run's MLflow records.</footer></body></html>\n"
    )


def _validation_section(data: dict[str, Any]) -> tuple[str, bool]:
    report = data["validation"]
    if not report:
        return _note("No validation report was logged to this run."), False
    tables = report.get("tables") or {}
    failed_checks = [c for c in report.get("expectations") or [] if not c.get("success")]
    out = [
        '<div class="kpis">',
        _kpi("result", _badge(bool(report.get("success")), "passed", "failed")),
        _kpi("partition", _e(report.get("partition_date"))),
        _kpi("rows", _e(_num((tables.get("interactions") or {}).get("n_rows")))),
        _kpi("expectations", _e(_num(report.get("n_expectations")))),
        _kpi("failed", _e(_num(report.get("n_failed")))),
        _kpi("warnings", _e(_num(report.get("n_warnings", len(report.get("warnings") or []))))),
        "</div>",
    ]
    drift = report.get("drift") or {}
    if drift:
        out.append("<h3>Drift and volume</h3>")
        out.append(
            _table(("metric", "value"), [(k, _num(v)) for k, v in sorted(drift.items())], "narrow")
        )
    if report.get("warnings"):
        out.append("<h3>Warnings</h3>" + _list(report["warnings"], "warn"))
    if failed_checks:
        out.append("<h3>Checks that did not pass</h3>")
        out.append(
            _table(
                ("table", "check", "severity", "observed"),
                [
                    (
                        c.get("table"),
                        c.get("expectation_type"),
                        c.get("severity"),
                        json.dumps(c.get("observed_value"), default=str)[:200],
                    )
                    for c in failed_checks
                ],
            )
        )
    if report.get("notes"):
        out.append("<h3>Notes</h3>" + _list(report["notes"]))
    return "".join(out), True


def _kpi(label: str, value: str) -> str:
    return f'<div class="kpi"><span class="label">{_e(label)}</span><span class="value">{value}</span></div>'


def _features_section(data: dict[str, Any]) -> tuple[str, bool]:
    inputs, lineage = data["inputs"], data["lineage"]
    services = inputs.get("feature_services") or lineage.get("feature_services") or {}
    refs = inputs.get("feature_refs") or {}
    if not services:
        return _note("No feature services were recorded for this run."), False
    rows = []
    for model, service in services.items():
        if not service:
            continue
        names = refs.get(service)
        rows.append((model, service, ", ".join(names) if names else "(feature names not recorded)"))
    out = [_table(("model", "feature service", "features (view:feature)"), rows)]
    facts = [
        ("features as of", inputs.get("features_as_of") or lineage.get("features_as_of")),
        ("training rows", _num(inputs.get("training_rows"))),
        ("feature fingerprint", lineage.get("features_fingerprint")),
        ("training set sha256", str(lineage.get("training_set_sha256") or "")[:16]),
    ]
    out.append(_facts(facts))
    return "".join(out), True


def _training_section(data: dict[str, Any]) -> tuple[str, bool]:
    train = data["inputs"].get("train") or {}
    lineage_train = data["lineage"].get("train_config") or {}
    history = data["history"]
    out = []
    if history:
        out.append(
            _img(_plot_history(history, train.get("best_epoch")), "per-epoch training history")
        )
    else:
        out.append(
            _note(
                "No per-epoch history was logged (valid NDCG@10 per epoch is recorded when "
                "early_stopping_patience > 0)."
            )
        )
    facts = [
        (
            "strategy",
            f"{train.get('strategy') or lineage_train.get('strategy') or '?'} × {_num(train.get('replicas') or lineage_train.get('replicas'))}",
        ),
        ("epochs run", _num(train.get("epochs_run"))),
        ("best epoch", _num(train.get("best_epoch", lineage_train.get("best_epoch")))),
        ("final loss", _num(train.get("final_loss"))),
        ("seconds / epoch", _num(train.get("seconds_per_epoch"), 2)),
        ("examples / s", _num(train.get("examples_per_s"), 0)),
        (
            "train rows · users · items",
            f"{_num(train.get('train_rows'))} · {_num(train.get('n_users'))} · {_num(train.get('n_items'))}",
        ),
        ("protocol", train.get("protocol") or lineage_train.get("protocol")),
    ]
    out.append(_facts(facts, "retrieval training (two-tower)"))
    ranker = data["inputs"].get("ranker") or {}
    if any(v is not None for v in ranker.values()):
        out.append(
            _facts([(k.replace("_", " "), _num(v)) for k, v in ranker.items()], "ranker (DCN-v2)")
        )
    return "".join(out), bool(history or train)


def _plot_history(history: Mapping[str, Sequence[tuple[int, float]]], best_epoch: Any) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = sorted(history)
    figure, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.4), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        steps = [s for s, _ in history[key]]
        values = [v for _, v in history[key]]
        axis.plot(steps, values, marker="o", color="tab:blue")
        if isinstance(best_epoch, int) and best_epoch in steps:
            axis.axvline(
                best_epoch,
                color="tab:red",
                linestyle="--",
                linewidth=1,
                label=f"kept epoch {best_epoch}",
            )
            axis.legend(loc="best", fontsize=8)
        axis.set_title(key)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    plt.close(figure)
    return buffer.getvalue()


def _change(value: Any, base: Any) -> str:
    if value is None or base is None or not float(base):
        return "–"
    return f"{(float(value) - float(base)) / abs(float(base)):+.2%}"


def _metrics_section(data: dict[str, Any]) -> tuple[str, bool]:
    metrics: dict[str, float] = dict(data["run"].data.metrics)
    scored = {k: v for k, v in metrics.items() if not k.startswith("train.")}
    if not scored:
        return _note("No evaluation metrics were logged to this run."), False
    champion = data["inputs"].get("champion") or {}
    base: dict[str, float] = champion.get("metrics") or {}
    who = f"champion v{champion['version']}" if champion.get("version") else "champion"
    out = []
    if not base:
        out.append(_note("No champion yet: this is the first model, nothing to compare with."))
    else:
        out.append(_note(f"The {who} was re-scored on this run's test split in the same task."))
    out.append("<h3>Overall (test split, k=10)</h3>")
    out.append(
        _table(
            ("metric", "candidate", who, "change"),
            [
                (m, _num(scored.get(m)), _num(base.get(m)), _change(scored.get(m), base.get(m)))
                for m in _OVERALL
                if m in scored
            ],
        )
    )
    segments = sorted(
        {k.split(".", 1)[0] for k in scored if "." in k and not k.startswith("reranked.")}
    )
    if segments:
        out.append("<h3>Segments</h3>")
        rows = []
        for seg in segments:
            for name in ("recall_at_10", "ndcg_at_10"):
                key = f"{seg}.{name}"
                if key in scored:
                    rows.append(
                        (
                            seg,
                            name,
                            _num(scored[key]),
                            _num(base.get(key)),
                            _change(scored[key], base.get(key)),
                        )
                    )
        out.append(_table(("segment", "metric", "candidate", who, "change"), rows, "segments"))
    reranked = {
        k.removeprefix("reranked."): v
        for k, v in scored.items()
        if k.startswith("reranked.") and "." not in k.removeprefix("reranked.")
    }
    if reranked:
        policy = (data["inputs"].get("selection") or {}).get("rerank_policy")
        out.append("<h3>Retrieval → DCN-v2 re-rank</h3>")
        out.append(
            _table(
                ("metric", "retrieval", "re-ranked"),
                [
                    (m, _num(scored.get(m)), _num(reranked.get(m)))
                    for m in _OVERALL
                    if m in reranked
                ],
            )
        )
        if policy:
            out.append(_note(f"Serving policy chosen on this holdout: {policy}."))
    return "".join(out), True


def _compression_section(data: dict[str, Any]) -> tuple[str, bool]:
    rows = data["variants"]
    pareto = data["pareto"]
    if not rows and not pareto:
        return _note("No compression search was logged to this run."), False
    selection = data["inputs"].get("selection") or {}
    selected = selection.get("selected") or data["lineage"].get("compression")
    reason = selection.get("selection_reason") or data["lineage"].get("selection_reason")
    out = []
    if selected:
        out.append(f"<p>Served variant: <strong>{_e(selected)}</strong>. {_e(reason or '')}</p>")
    if pareto:
        out.append(_img(pareto, "compression Pareto plot: NDCG@10 vs p99 latency and vs size"))
    if rows:
        table = []
        for r in rows:
            name = (
                _Raw(f"<strong>{_e(r.get('name'))} ★</strong>")
                if r.get("name") == selected
                else r.get("name")
            )
            table.append(
                (
                    name,
                    r.get("status"),
                    r.get("serves"),
                    _num(r.get("ndcg_at_10")),
                    _num(r.get("recall_at_10")),
                    "–" if r.get("ndcg_rel_loss") is None else f"{float(r['ndcg_rel_loss']):+.2%}",
                    _kb(r.get("saved_model_bytes")),
                    _kb(r.get("gzip_bytes")),
                    _kb(r.get("tflite_bytes")),
                    _num(r.get("p50_ms_b1"), 2),
                    _num(r.get("p99_ms_b1"), 2),
                    _num(r.get("p99_ms_b64"), 2),
                    _num(r.get("sparsity"), 2),
                    r.get("reason") or "",
                )
            )
        out.append(
            _table(
                (
                    "variant",
                    "status",
                    "serves",
                    "NDCG@10",
                    "Recall@10",
                    "NDCG loss",
                    "SavedModel kB",
                    "gzip kB",
                    "TFLite kB",
                    "p50 b1 ms",
                    "p99 b1 ms",
                    "p99 b64 ms",
                    "sparsity",
                    "note",
                ),
                table,
                "variants",
            )
        )
    return "".join(out), True


def _gate_section(data: dict[str, Any]) -> tuple[str, bool]:
    gate = data["gate"]
    if gate is None:
        return _note("No gate decision was logged to this run."), False
    version = data["version"]
    label = f"{version['name']} v{version['version']}" if version else "retrieval model"
    out = [
        f"<h3>{_e(label)} {_badge(bool(gate.get('blessed')), 'blessed', 'not blessed')}</h3>",
        _list(gate.get("reasons") or [], "reasons"),
    ]
    ranking = data["ranking"]
    if ranking and ranking.get("gate") is not None:
        rv = ranking["version"]
        rlabel = f"{rv['name']} v{rv['version']}" if rv else "ranker"
        out.append(
            f"<h3>{_e(rlabel)} {_badge(bool(ranking['gate'].get('blessed')), 'blessed', 'not blessed')}</h3>"
        )
        out.append(_list(ranking["gate"].get("reasons") or [], "reasons"))
    return "".join(out), True


def _rollout_section(data: dict[str, Any]) -> tuple[str, bool]:
    rollouts = data["rollouts"]
    if not rollouts:
        return _note(
            "Not rolled out yet: recsys_promote has not served a version from this run."
        ), False
    out = []
    for r in rollouts:
        outcome = str(r.get("outcome") or "?")
        ok = outcome in ("promoted", "already-serving")
        out.append(
            f"<h3>{_e(r.get('model_name'))} v{_e(r.get('version'))} {_badge(ok, outcome, outcome)}</h3>"
        )
        infra = r.get("infra_validation") or {}
        load = infra.get("load") if isinstance(infra.get("load"), dict) else {}
        facts = [
            (
                "previous stable",
                r.get("previous_version")
                if r.get("previous_version") is not None
                else "none (first roll-out)",
            ),
            (
                "labels now",
                ", ".join(f"{k}→v{v}" for k, v in sorted((r.get("labels") or {}).items())) or "–",
            ),
            ("served versions", ", ".join(f"v{v}" for v in r.get("served_versions") or []) or "–"),
            ("load and query", infra.get("load_and_query", "–")),
            ("parity with offline scores", infra.get("parity", "–")),
            ("recorded", r.get("recorded_at", "–")),
        ]
        if load:
            facts[3:3] = [
                (
                    "canary p50 / p99 (ms)",
                    f"{_num(load.get('p50_ms'), 1)} / {_num(load.get('p99_ms'), 1)}",
                ),
                (
                    "canary requests · errors",
                    f"{_num(load.get('sent'))} · {_num(load.get('errors'))}",
                ),
                (
                    "canary QPS (target / achieved)",
                    f"{_num(load.get('target_qps'), 1)} / {_num(load.get('achieved_qps'), 1)}",
                ),
            ]
        elif isinstance(infra.get("load"), str):
            facts.insert(3, ("canary load test", infra["load"]))
        vs = infra.get("canary_vs_stable")
        if isinstance(vs, dict):
            facts.append(
                (
                    "top-10 overlap with stable",
                    f"{_num(vs.get('top10_overlap'), 3)} (v{vs.get('stable_version')})",
                )
            )
        elif vs:
            facts.append(("canary vs stable", vs))
        out.append(_facts(facts, cls="rollout"))
        if r.get("reasons"):
            out.append(_list(r["reasons"], "reasons"))
    return "".join(out), True


_CSS = """
:root{--fg:#1f2933;--muted:#616e7c;--line:#d9e2ec;--bg:#f7f9fb;--accent:#0b69a3}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:#fff}
header{background:var(--bg);border-bottom:1px solid var(--line);padding:16px 24px}
h1{margin:0 0 8px;font-size:22px;color:var(--accent)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dt{color:var(--muted)}dd{margin:0;word-break:break-all}
main{padding:8px 24px 24px;max-width:1400px}
section{border-bottom:1px solid var(--line);padding:8px 0 16px}
h2{font-size:18px;margin:16px 0 8px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600}
table.facts th{font-weight:400;color:var(--muted);white-space:nowrap}
caption{text-align:left;font-weight:600;padding:2px 0 4px}
td{font-variant-numeric:tabular-nums}
table.variants td:nth-child(n+4):not(:last-child){text-align:right}
img{max-width:100%;height:auto;border:1px solid var(--line);margin:6px 0}
.kpis{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0}
.kpi{border:1px solid var(--line);border-radius:6px;padding:6px 12px;min-width:110px;background:var(--bg)}
.kpi .label{display:block;color:var(--muted);font-size:12px}.kpi .value{font-size:16px;font-weight:600}
.badge{display:inline-block;border-radius:10px;padding:1px 10px;font-size:12px;font-weight:600;color:#fff;vertical-align:middle}
.green{background:#2f8132}.red{background:#c62828}.grey{background:#7b8794}
.note{color:var(--muted)}
ul.reasons li,ul.warn li{margin:2px 0;word-break:break-word}
footer{color:var(--muted);font-size:12px;padding:12px 24px}
"""
