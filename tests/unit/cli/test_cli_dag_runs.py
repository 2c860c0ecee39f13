"""``recops.cli.dag_runs``: a DAG's tasks read from its file, and a real run's log followed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from recops.cli.dag_runs import DagTestTracker, dag_task_ids, ensure_airflow_db, run_dag_test
from recops.config import Settings


def test_dag_structure_is_read_without_airflow() -> None:
    tasks = dag_task_ids("recsys_nightly")

    assert tasks[0] == "validate" and {"train", "compress", "register", "announce"} <= set(tasks)
    assert dag_task_ids("no_such_dag") == []
    # The package never imports Airflow outside its plugin module, the CLI included.
    probe = (
        "import sys, recops.cli; print(sorted(m for m in sys.modules if m.startswith('airflow')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


PROBE_DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cli_probe():
    @task
    def fan_out() -> list:
        return [1, 2, 3]

    @task
    def double(x: int) -> int:
        return 2 * x

    @task
    def explode(xs: list) -> None:
        raise RuntimeError("planted failure")

    explode(double.expand(x=fan_out()))


cli_probe()
"""


@pytest.mark.slow
def test_dag_run_is_tracked_from_the_real_airflow_log(
    tmp_path: Path, empty_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "cli_probe.py").write_text(textwrap.dedent(PROBE_DAG))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    settings = Settings.from_env()
    ensure_airflow_db(settings)
    assert dag_task_ids("cli_probe", dags) == ["fan_out", "double", "explode"]

    with pytest.raises(typer.Exit):
        run_dag_test(settings, "2026-01-02", "{}", dag_id="cli_probe")

    logs = list((empty_home / "logs").glob("cli_probe-*.log"))
    assert len(logs) == 1
    # The setup's own chatter went to a file, not to the user's terminal.
    assert "migration" in (empty_home / "logs" / "airflow-db-migrate.log").read_text().lower()
    tracker = DagTestTracker(dag_task_ids("cli_probe", dags))
    for line in logs[0].read_text().splitlines(keepends=True):
        tracker.feed(line)
    assert tracker.failed_names() == ["explode"]
    assert tracker.run_failed
    # fan_out, three mapped doubles and explode: five instances, all of which ran.
    assert tracker.total == 5 and len(tracker.finished) == 5
    assert any("planted failure" in line for line in tracker.failed_lines)
