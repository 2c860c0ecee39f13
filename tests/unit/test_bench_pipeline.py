"""``benchmarks.pipeline.run_timings`` on a real Airflow metadata DB with known intervals.

The schema comes from the real ``airflow db migrate`` (SQLite; Postgres too when
``RECOPS_TEST_POSTGRES_URL`` names a server); dag_run and task_instance rows are inserted
with SQL, so the overhead arithmetic is checked against intervals we chose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from benchmarks.pipeline import covered_seconds, run_timings

T0 = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)
DAG = "recsys_nightly"


def _migrate(conn: str, home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=conn,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    airflow = Path(sys.executable).parent / "airflow"
    proc = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def airflow_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    home = tmp_path_factory.mktemp("airflow")
    if request.param == "sqlite":
        conn = f"sqlite:///{home / 'airflow.db'}"
        _migrate(conn, home)
        yield conn
        return
    # The scale profile's backend. Needs a server: RECOPS_TEST_POSTGRES_URL names one whose
    # user may create databases; each run gets a fresh database, dropped afterwards.
    server = os.environ.get("RECOPS_TEST_POSTGRES_URL", "")
    if not server:
        pytest.skip(
            "set RECOPS_TEST_POSTGRES_URL (postgresql+psycopg2://user@host:port/db) "
            "to test Postgres"
        )
    from sqlalchemy.engine import make_url

    name = f"recops_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as db:
        db.execute(text(f'CREATE DATABASE "{name}"'))
    conn = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        _migrate(conn, home)
        yield conn
    finally:
        with admin.connect() as db:
            db.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _stamp(conn: str, when: datetime | None) -> datetime | str | None:
    # Airflow stores naive UTC strings on SQLite and timestamptz on Postgres.
    if when is None:
        return None
    if conn.startswith("sqlite"):
        return when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return when


def _insert_run(
    conn: str,
    run_id: str,
    *,
    created: datetime,
    start: datetime,
    end: datetime | None,
    tasks: list[tuple[str, int, float | None, float | None]],
    state: str = "success",
) -> None:
    """A dag_run and its task instances; task times are seconds after ``created``."""
    engine = create_engine(conn)
    with engine.begin() as db:
        db.execute(
            text(
                "INSERT INTO dag_run (dag_id, run_id, run_type, state, logical_date, start_date, "
                "end_date, created_at, run_after, clear_number, span_status) VALUES (:dag, :run, "
                "'manual', :state, :logical, :start, :end, :created, :created, 0, 'not_started')"
            ),
            {"dag": DAG, "run": run_id, "state": state, "logical": _stamp(conn, start),
             "start": _stamp(conn, start), "end": _stamp(conn, end),
             "created": _stamp(conn, created)},
        )  # fmt: skip
        for task_id, map_index, a, b in tasks:
            t_start = created + timedelta(seconds=a) if a is not None else None
            t_end = created + timedelta(seconds=b) if b is not None else None
            db.execute(
                text(
                    "INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, "
                    "start_date, end_date, duration, state, try_number, max_tries, pool, "
                    "pool_slots, span_status) "
                    "VALUES (:id, :task, :dag, :run, :mi, :start, :end, :dur, :state, 1, 2, "
                    "'default_pool', 1, 'not_started')"
                ),
                {"id": uuid.uuid4().hex, "task": task_id, "dag": DAG, "run": run_id,
                 "mi": map_index,
                 "start": _stamp(conn, t_start), "end": _stamp(conn, t_end),
                 "dur": (b - a) if a is not None and b is not None else None,
                 "state": "success" if a is not None else None},
            )  # fmt: skip
    engine.dispose()


def test_gaps_between_tasks_are_overhead(airflow_db: str) -> None:
    _insert_run(
        airflow_db, "gaps", created=T0, start=T0, end=T0 + timedelta(seconds=25),
        tasks=[("validate", -1, 0.0, 10.0), ("features", -1, 15.0, 20.0)],
    )  # fmt: skip
    t = run_timings(airflow_db, DAG, "gaps")
    assert t["wall_s"] == pytest.approx(25.0)
    assert t["covered_s"] == pytest.approx(15.0)
    assert t["overhead_s"] == pytest.approx(10.0)
    assert t["overhead_share"] == pytest.approx(0.4)
    assert t["task_seconds_sum"] == pytest.approx(15.0)
    assert [x["task"] for x in t["tasks"]] == ["validate", "features"]
    assert t["window"]["start_source"] == "dag_run.start_date"


def test_overlapping_mapped_tasks_count_once_and_dags_test_start_is_fixed(airflow_db: str) -> None:
    # `airflow dags test` stamps start_date with the logical date (here a day early): the
    # window must start at created_at instead, or the run would look a day long.
    created = T0 + timedelta(hours=1)
    _insert_run(
        airflow_db, "mapped", created=created, start=created - timedelta(days=1),
        end=created + timedelta(seconds=20),
        tasks=[("compress", 0, 0.0, 10.0), ("compress", 1, 5.0, 12.0), ("select", -1, 14.0, 18.0),
               ("announce", -1, None, None)],
    )  # fmt: skip
    t = run_timings(airflow_db, DAG)  # latest run: this one was created last
    assert t["run_id"] == "mapped"
    assert t["window"]["start_source"] == "dag_run.created_at"
    assert t["wall_s"] == pytest.approx(20.0)
    assert t["covered_s"] == pytest.approx(16.0)  # [0, 12] and [14, 18]
    assert t["task_seconds_sum"] == pytest.approx(21.0)
    assert t["overhead_share"] == pytest.approx(4.0 / 20.0)
    assert t["parallelism"] == pytest.approx(21.0 / 16.0)
    assert {x["task"] for x in t["tasks"]} == {"compress[0]", "compress[1]", "select"}
    assert [x["task"] for x in t["not_run"]] == ["announce"]


def test_unknown_run_is_a_lookup_error(airflow_db: str) -> None:
    with pytest.raises(LookupError, match="no run 'nope'"):
        run_timings(airflow_db, DAG, "nope")


def test_covered_seconds_clips_to_the_window() -> None:
    assert covered_seconds([(-5.0, 3.0), (2.0, 4.0), (8.0, 30.0)], 0.0, 10.0) == pytest.approx(6.0)
    assert covered_seconds([], 0.0, 10.0) == 0.0
