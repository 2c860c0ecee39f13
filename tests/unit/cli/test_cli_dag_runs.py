"""``recops.cli.dag_runs``: a DAG's tasks read from its file, and a real run's log followed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from recops.cli.dag_runs import DagTestTracker, dag_task_ids, ensure_airflow_db, run_dag_test
from recops.config import Settings, airflow_env


def test_dag_structure_is_read_without_airflow() -> None:
    tasks = dag_task_ids("recsys_nightly")

    assert tasks[:2] == ["wait_for_data", "validate"]
    assert {"train", "compress", "register", "announce"} <= set(tasks)
    assert dag_task_ids("no_such_dag") == []
    # The package never imports Airflow outside its plugin module, the CLI included.
    probe = (
        "import sys, recops.cli; print(sorted(m for m in sys.modules if m.startswith('airflow')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_a_run_skipped_for_missing_data_is_reported_with_its_reason() -> None:
    tracker = DagTestTracker(dag_task_ids("recsys_nightly"))
    for line in (
        "2026-12-06T18:18:39.1Z [info     ] [DAG TEST] starting task_id=wait_for_data "
        "map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501",
        "2026-12-06T18:18:39.5Z [info     ] Skipping task.                 [task] "
        "loc=task_runner.py:1622 reason='no data of movielens-100k for 1998-06-30 arrived'",
        "2026-12-06T18:18:39.6Z [info     ] [DAG TEST] end task task_id=wait_for_data "
        "map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563",
        # A task skipped later (announce, when the gate did not bless) is no such skip.
        "2026-12-06T18:19:00.0Z [info     ] [DAG TEST] starting task_id=announce map_index=-1",
        "2026-12-06T18:19:00.1Z [info     ] Skipping task. [task] reason='not blessed'",
    ):
        tracker.feed(line)
    assert tracker.skipped_reason == "no data of movielens-100k for 1998-06-30 arrived"
    assert not tracker.failed and not tracker.run_failed


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


def _runs(settings: Settings, dag_id: str) -> dict[str, tuple[str, str, str]]:
    """run_id -> (logical_date, start_date, end_date) from the Airflow DB the runs used."""
    import sqlite3

    conn = airflow_env(settings)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    db = sqlite3.connect(conn.removeprefix("sqlite:///").split("?")[0])
    try:
        rows = db.execute(
            "SELECT run_id, logical_date, start_date, end_date FROM dag_run WHERE dag_id = ?",
            (dag_id,),
        ).fetchall()
    finally:
        db.close()
    return {run_id: (logical, start, end) for run_id, logical, start, end in rows}


def _task_logs(settings: Settings, run_id: str) -> dict[str, list[dict[str, str]]]:
    """The task logs the Airflow UI reads for one run, by relative path, as JSON records."""
    import json

    base = Path(airflow_env(settings)["AIRFLOW_HOME"]) / "logs" / "dag_id=cli_probe"
    folder = base / f"run_id={run_id}"
    return {
        str(path.relative_to(folder)): [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted(folder.rglob("attempt=*.log"))
    }


@pytest.mark.slow
def test_dag_run_is_tracked_from_the_real_airflow_log(
    tmp_path: Path, empty_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "cli_probe.py").write_text(textwrap.dedent(PROBE_DAG))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    settings = Settings.from_env()
    ensure_airflow_db(settings)
    assert dag_task_ids("cli_probe", dags) == ["fan_out", "double", "explode"]

    began = datetime.now(UTC)
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

    # The UI can inspect the run: each task instance's log where the UI reads it...
    (first_id,) = _runs(settings, "cli_probe")
    task_logs = _task_logs(settings, first_id)
    assert sorted(task_logs) == [
        "task_id=double/map_index=0/attempt=1.log",
        "task_id=double/map_index=1/attempt=1.log",
        "task_id=double/map_index=2/attempt=1.log",
        "task_id=explode/attempt=1.log",
        "task_id=fan_out/attempt=1.log",
    ]
    explode = task_logs["task_id=explode/attempt=1.log"]
    assert any("planted failure" in r["event"] for r in explode)
    assert all(r.get("timestamp") for r in explode)
    assert any(r["level"] == "error" for r in explode)
    assert not any("task_id=double" in r["event"] for r in explode)  # its own lines only
    # ...and a true duration: it started now, not at its logical date in January.
    logical, start, end = _runs(settings, "cli_probe")[first_id]
    started = datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert began - timedelta(seconds=5) <= started <= datetime.now(UTC)
    assert datetime.fromisoformat(end).replace(tzinfo=UTC) >= started

    # A second run of the same day keeps the first (model lineage may point to it).
    with pytest.raises(typer.Exit):
        run_dag_test(settings, "2026-01-02", "{}", dag_id="cli_probe")
    runs = _runs(settings, "cli_probe")
    assert len(runs) == 2 and first_id in runs
    assert len({logical for logical, _, _ in runs.values()}) == 2
    assert _task_logs(settings, first_id) == task_logs
