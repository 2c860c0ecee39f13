"""Run and dag ids are checked before they name a report's folder (``recops.report.spec``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from recops.config import Settings
from recops.errors import PermanentError
from recops.report import ReportConfig, check_ids, report_path
from recops.report.spec import ReportIdError

DAG_ID = "recsys_nightly"
RUN_ID = "manual__2026-11-22T19:00:00+00:00"


@pytest.mark.parametrize(
    ("dag_id", "run_id"),
    [
        (DAG_ID, "../../etc"),
        (DAG_ID, ".."),
        (DAG_ID, "a/b"),
        (DAG_ID, ""),
        (DAG_ID, "manual__x<script>"),
        ("..", RUN_ID),
        ("recsys nightly", RUN_ID),
        ("a/../b", RUN_ID),
    ],
)
def test_bad_ids_are_refused(tmp_path: Path, dag_id: str, run_id: str) -> None:
    with pytest.raises(ValueError, match="not a valid Airflow"):
        check_ids(dag_id, run_id)
    with pytest.raises(ValueError, match="not a valid Airflow"):
        report_path(Settings(home=tmp_path), dag_id, run_id)
    with pytest.raises(ValueError, match="not a valid Airflow"):
        ReportConfig(dag_id=dag_id, run_id=run_id, mlflow_run_id="0" * 32)


def test_good_ids_stay_under_the_reports_folder(tmp_path: Path) -> None:
    for run_id in (
        RUN_ID,
        "scheduled__1998-04-23T00:00:00+00:00",
        "asset_triggered__2026-01-01T00:00:00.123+00:00",
    ):
        path = report_path(Settings(home=tmp_path), DAG_ID, run_id)
        assert path.parent.name == run_id and path.is_relative_to(
            tmp_path.resolve() / "reports" / DAG_ID
        )
    with pytest.raises(ValueError, match="MLflow run id"):
        ReportConfig(dag_id=DAG_ID, run_id=RUN_ID, mlflow_run_id="../x")


def test_a_bad_id_is_a_permanent_value_error() -> None:
    # A ValueError as before (the Airflow plugin answers 400), and permanent: no retry.
    with pytest.raises(ReportIdError) as caught:
        check_ids("..", RUN_ID)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, PermanentError)
