"""Moving `champion` in MLflow rolls that version out, through a live Airflow.

A real `airflow standalone` (scheduler, DAG processor, triggerer, API server, LocalExecutor
on SQLite) runs `recsys_promote`; its asset watcher polls the registry. The test moves
the alias with the MLflow client, as someone in the MLflow UI would, and measures when
the promotion run starts and when `stable` follows.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest
from recops.ledger import history
from recops.promotion import PromoteConfig, promote, served_stable
from recops.registry import CHAMPION, RegisterConfig, register

from tests.support.contract_model import export_contract_model
from tests.support.stack import BIN, free_port, stop_group

pytestmark = [pytest.mark.slow, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
MODEL = "recops_retrieval"
GOOD = {"recall_at_10": 0.2, "ndcg_at_10": 0.3}


def _query(db: Path, sql: str, *args: object) -> list[tuple]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []  # tables not created yet
    finally:
        con.close()


def _wait(what: str, check, timeout: float) -> float:  # noqa: ANN001
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_alias_move_in_mlflow_rolls_out_within_a_minute(stack, tmp_path: Path) -> None:  # noqa: ANN001
    from recops.data import publish, synthesize
    from recops.features import FeaturesConfig, build_features

    settings = stack.settings
    os.environ["RECOPS_ACTOR"] = "registry-watch-test"
    published = publish(
        settings, *synthesize(rows=400, users=20, items=30, days=3, seed=5), source="test"
    )
    end = datetime.fromisoformat(published.last_date).replace(tzinfo=UTC) + timedelta(days=1)
    build_features(
        FeaturesConfig(
            interval_start=end - timedelta(days=1), interval_end=end, output_dir=str(tmp_path / "f")
        ),
        settings,
    )
    versions = []
    for seed in (1, 2):
        model = export_contract_model(tmp_path / f"sm{seed}", seed=seed)
        versions.append(
            register(
                RegisterConfig(
                    model_dir=str(model), model_key=f"k{seed}", metrics=GOOD, auto_promote=False
                )
            ).version
        )
        promote(PromoteConfig(model_name=MODEL, version=versions[-1], canary_seconds=1.0), settings)
    assert served_stable(settings, MODEL) == versions[1]

    # Only recsys_promote in the DAG folder: the nightly would start a run of its own.
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "dags" / "recsys_promote.py", dags / "recsys_promote.py")
    api_port = free_port()
    env = {
        **stack.env,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "RECOPS_ACTOR": "registry-watch",
        # standalone starts its components as `airflow ...` from PATH.
        "PATH": f"{BIN}{os.pathsep}{stack.env.get('PATH', '')}",
    }
    pool = stack.airflow("pools", "set", "recops_promotion", "1", "one promotion at a time")
    assert pool.returncode == 0, pool.stderr[-2000:]
    log = (tmp_path / "standalone.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "airflow"), "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    db = settings.airflow_home / "airflow.db"
    try:
        _wait(
            "the DAG processor to register recsys_promote and the triggerer to run its watcher",
            lambda: (
                bool(_query(db, "SELECT 1 FROM dag WHERE dag_id='recsys_promote' AND is_paused=0"))
                and bool(
                    _query(
                        db,
                        "SELECT 1 FROM trigger WHERE classpath LIKE '%ChampionAliasTrigger%' "
                        "AND triggerer_id IS NOT NULL",
                    )
                )
            ),
            timeout=300,
        )
        client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        moved_at = datetime.now(UTC)
        client.set_registered_model_alias(MODEL, CHAMPION, str(versions[0]))

        def run_started() -> bool:
            rows = _query(
                db,
                "SELECT start_date FROM dag_run "
                "WHERE dag_id='recsys_promote' AND start_date IS NOT NULL",
            )
            return bool(rows)

        started_after = _wait("recsys_promote to start", run_started, timeout=120)
        followed_after = _wait(
            "stable to follow the alias",
            lambda: served_stable(settings, MODEL) == versions[0],
            timeout=240,
        )
        print(
            f"promotion run started {started_after:.1f} s and stable followed "
            f"{followed_after:.1f} s after the alias move"
        )
        assert started_after <= 60, (
            f"the roll-out started {started_after:.0f} s after the alias move"
        )
        (state,) = _wait_state(db)
        assert state == "success"
        entries = [
            e
            for e in history(settings, MODEL)
            if e.alias == CHAMPION and datetime.fromisoformat(e.at) >= moved_at
        ]
        assert (
            entries
            and entries[0].to_version == versions[0]
            and entries[0].source == "registry-watch"
        )
    finally:
        stop_group(proc)
        log.close()
        os.environ.pop("RECOPS_ACTOR", None)


def _wait_state(db: Path) -> tuple[str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = _query(
            db, "SELECT state FROM dag_run WHERE dag_id='recsys_promote' ORDER BY id DESC LIMIT 1"
        )
        if rows and rows[0][0] in ("success", "failed"):
            return rows[0]
        time.sleep(1)
    raise AssertionError("recsys_promote did not finish")
