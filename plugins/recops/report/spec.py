"""Which run a report is for and where its page goes: id checks, path, config, result.

Dag and run ids are checked against strict patterns before they become a path, so a
request for ``/recops/reports/<dag_id>/<run_id>`` can never name a file outside
``RECOPS_HOME/reports``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recops.config import Settings
from recops.errors import PermanentError
from recops.records import Record

__all__ = [
    "DAG_ID_RE",
    "MLFLOW_RUN_RE",
    "REPORT_ARTIFACT",
    "RUN_ID_RE",
    "SECTIONS",
    "ReportConfig",
    "ReportIdError",
    "ReportResult",
    "check_ids",
    "report_path",
]

#: Where the page goes in the run's MLflow artifacts.
REPORT_ARTIFACT = "report/index.html"
#: Airflow's own dag_id rule (KEY_REGEX), with a first character that is not a dot.
DAG_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}$")
#: Airflow's default ``allowed_run_id_pattern`` (``manual__2026-01-01T00:00:00+00:00``),
#: with a first character that is not a dot, so "." and ".." can never name a folder.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.~:+-]{0,249}$")
#: What an MLflow run id may look like (hex today; letters, digits, ``_`` and ``-``).
MLFLOW_RUN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SECTIONS = ("validation", "features", "training", "metrics", "compression", "gate", "rollout")


class ReportIdError(PermanentError, ValueError):
    """A dag, run or MLflow run id that is not one Airflow or MLflow would make.

    A ``ValueError`` too, as before this class existed: the Airflow plugin answers 400.
    """


def check_ids(dag_id: str, run_id: str) -> None:
    """Refuse a dag or run id that is not one Airflow would make (no path tricks).

    Raises:
        ReportIdError: Naming the bad id (a ``ValueError``).
    """
    if not isinstance(dag_id, str) or not DAG_ID_RE.fullmatch(dag_id):
        raise ReportIdError(f"dag_id {dag_id!r} is not a valid Airflow dag id")
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise ReportIdError(f"run_id {run_id!r} is not a valid Airflow run id")


def report_path(settings: Settings, dag_id: str, run_id: str) -> Path:
    """``RECOPS_HOME/reports/<dag_id>/<run_id>/index.html`` after checking both ids."""
    check_ids(dag_id, run_id)
    root = (settings.home / "reports").resolve()
    path = (root / dag_id / run_id / "index.html").resolve()
    # Belt and braces: the patterns already exclude separators and dot-only names.
    if not path.is_relative_to(root):
        raise ReportIdError(f"report path {path} escapes {root}")
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
        if not MLFLOW_RUN_RE.fullmatch(self.mlflow_run_id or ""):
            raise ReportIdError(f"mlflow_run_id {self.mlflow_run_id!r} is not an MLflow run id")


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
