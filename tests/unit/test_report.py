"""The ``recops.report`` façade: its public surface, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import recops.report as report

# Every name another file imports from ``recops.report`` (the pipeline, the Airflow
# plugin, the tests): the split into submodules must keep each one working.
IMPORTED_ELSEWHERE = {
    "ReportConfig",
    "build_report",
    "check_ids",
    "record_report_inputs",
    "report_dag_run",
    "report_path",
    "rollout_report",
}


def test_every_exported_name_resolves_and_covers_what_others_import() -> None:
    assert len(set(report.__all__)) == len(report.__all__)
    for name in report.__all__:
        assert getattr(report, name) is not None, name
    assert IMPORTED_ELSEWHERE <= set(report.__all__)


def test_import_pulls_in_no_heavy_library() -> None:
    # The Airflow plugin imports the package when the webserver starts.
    heavy = ("mlflow", "matplotlib", "pandas", "feast", "tensorflow")
    code = f"import sys, recops.report; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
