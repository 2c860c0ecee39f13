"""The run report: one self-contained HTML page per ``recsys_nightly`` DAG run.

The page is rebuilt from what the run recorded in MLflow (its retrieval run's metrics,
``lineage.json``, ``gate.json``, the GX ``validation.json``, the compression table and
Pareto plot, and the report's own ``report/inputs.json`` and ``report/rollouts.json``),
so the promotion DAG can re-render it later without the nightly's XComs. It has no
external assets and no JavaScript: CSS is inline and plots are PNG data URIs, so it opens
from disk, from the MLflow UI, or inside the Airflow UI's DAG-run tab.

Submodules, one concern each:

- ``spec``: which run (dag, run and MLflow ids, checked), where its page goes, the
  config and result records.
- ``gather``: recording the report's inputs to MLflow and reading one run's data back.
- ``markup``: HTML building blocks (escaping, numbers, tables, badges) and the CSS.
- ``runs``: which MLflow runs belong to one DAG run (by the ``recops.links`` tags), and
  the run its report is recorded in.
- ``plots``: the per-epoch training curves and the numbered Pareto plot.
- ``sections``: the seven page sections, from validation to roll-out.
- ``render``: the page header and the whole HTML document.
- ``build``: ``report_dag_run`` (what the nightly calls), ``build_report`` (gather,
  render, atomic write, MLflow artifact) and ``rollout_report``.
"""

from __future__ import annotations

from recops.report.build import build_report, report_dag_run, rollout_report
from recops.report.gather import record_report_inputs
from recops.report.spec import (
    REPORT_ARTIFACT,
    ReportConfig,
    ReportIdError,
    ReportResult,
    check_ids,
    report_path,
)

__all__ = [
    "REPORT_ARTIFACT",
    "ReportConfig",
    "ReportIdError",
    "ReportResult",
    "build_report",
    "check_ids",
    "record_report_inputs",
    "report_dag_run",
    "report_path",
    "rollout_report",
]
