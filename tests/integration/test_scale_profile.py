"""The scale-out profile on real engines: Postgres, Redis, CeleryExecutor, an MLflow server.

`recops.scale.up` starts Airflow (api-server, scheduler, dag-processor, triggerer, Celery
worker) on the machine's Postgres and Redis, and an MLflow tracking server with basic
auth. The test triggers `recsys_nightly` through the Airflow REST API, as the UI does,
waits for Celery to run every task, then checks the model in the MLflow server, the
features in Redis and that the stack tears down cleanly. Its databases and Redis
numbers are private to this test session, so a developer's own stack is left alone.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from recops.scale import (
    SERVICES,
    AirflowApi,
    ScaleConfig,
    airflow_password,
    down,
    load_secrets,
    running,
    stack_env,
    up,
)

from tests.support.live_airflow import alive
from tests.support.stack import free_port

# The module fixture starts seven services (about 75 s alone, 200 s beside another test
# worker) before the nightly runs (6 to 12 minutes): pytest's 900 s default counts both, so
# this test gets the run's own 1500 s wait plus the start-up.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1800)]

# Every stage does its real work, on little data: one epoch, one compression variant.
CONF = {"epochs": 1, "embedding_dim": 16, "batch_size": 256, "fine_tune_epochs": 1,
        "ranker_epochs": 1, "variants": ["int8_tables"], "max_rmse": 5.0,
        "min_recall_at_10": 0.01, "min_ndcg_at_10": 0.01}  # fmt: skip
TRAINING_TASKS = {"train", "rank", "compress"}


def _reachable(config: ScaleConfig) -> bool:
    import psycopg2
    import redis

    try:
        psycopg2.connect(
            host=config.pg_host,
            port=config.pg_port,
            user=config.pg_user,
            dbname="postgres",
            connect_timeout=5,
        ).close()
        redis.Redis(host=config.redis_host, port=config.redis_port, socket_timeout=5).ping()
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleConfig]:
    home = tmp_path_factory.mktemp("scale") / "recops"
    config = ScaleConfig(
        home=home,
        db_prefix=f"recops_test_{os.getpid()}",
        broker_db=12,
        feast_db=13,
        api_port=free_port(),
        mlflow_port=free_port(),
        grpc_port=free_port(),
        rest_port=free_port(),
        worker_log_port=free_port(),
        triggerer_log_port=free_port(),
        extra_env={
            # Only the triggered run: no run for yesterday's real date once unpaused.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        },
    )
    if not _reachable(config):
        # .ci/run starts both; a developer machine without them cannot run this test.
        pytest.fail("Postgres (127.0.0.1:5432) and Redis (127.0.0.1:6379) must run: see .ci/run")
    started = time.monotonic()
    try:
        up(config)
        print(f"scale profile up in {time.monotonic() - started:.0f} s")
        yield config
    finally:
        pids = running(config)
        down(config, purge=True)
        for service, pid in pids.items():
            assert not alive(pid), f"{service} (pid {pid}) survived `scale down`"


def _status(url: str, auth: tuple[str, str] | None = None) -> int:
    import base64

    request = urllib.request.Request(url)
    if auth:
        request.add_header(
            "Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_nightly_runs_on_celery_postgres_redis_and_mlflow_server(
    scale: ScaleConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(running(scale)) == set(SERVICES)
    secret_values = load_secrets(scale)
    # Point this process at the stack, as `eval $(recops scale env)` does.
    for name, value in stack_env(scale, secret_values).items():
        if name.startswith(("RECOPS_", "MLFLOW_TRACKING_")):
            monkeypatch.setenv(name, value)
    from recops.config import Settings
    from recops.data import publish, synthesize
    from recops.pipeline import logical_date_for

    settings = Settings.from_env()
    assert (settings.profile, settings.online_store) == ("scale", "redis")
    ingested = publish(
        settings, *synthesize(rows=4000, users=100, items=120, days=6, seed=5), source="synthetic"
    )

    # The API refuses anonymous callers; the admin's password was generated at start.
    assert _status(f"{scale.api_url}/api/v2/dags") == 401
    password = airflow_password(scale)
    assert len(password) >= 16 and password != "admin"
    api = AirflowApi(scale.api_url, "admin", password)
    try:
        api.wait_for_dag("recsys_nightly")
        started = time.monotonic()
        run_id = api.trigger("recsys_nightly", logical_date_for(ingested.last_date), CONF)
        result = api.wait_run("recsys_nightly", run_id, timeout=1500)
    finally:
        api.close()
    wall = time.monotonic() - started
    tis = result["task_instances"]
    summary = {
        (ti["task_id"], ti["map_index"]): (ti["state"], ti["queue"], round(ti["duration"] or 0))
        for ti in tis
    }
    print(
        f"recsys_nightly on the scale profile: {result['run']['state']} in {wall:.0f} s; {summary}"
    )
    worker_log = (scale.state_dir / "logs" / "worker.log").read_text(errors="replace")
    assert result["run"]["state"] == "success", f"{summary}\n{worker_log[-4000:]}"

    # Every task ran on the Celery worker, the training ones from the gpu queue.
    assert {ti["task_id"] for ti in tis} >= {
        "validate",
        "features",
        "train",
        "rank",
        "compress",
        "select",
        "register",
    }
    for ti in tis:
        if ti["state"] == "skipped":
            continue
        assert f"task_id='{ti['task_id']}'" in worker_log, (
            f"{ti['task_id']} was not executed by the Celery worker"
        )
        assert ti["queue"] == ("gpu" if ti["task_id"] in TRAINING_TASKS else "default"), ti
    import sqlalchemy as sa

    # Celery stores each task's result in Postgres after the task has reported to Airflow,
    # so the last one may land just after the run is marked done.
    engine = sa.create_engine(scale.pg_url("airflow"))
    wanted, deadline = len([ti for ti in tis if ti["state"] == "success"]), time.monotonic() + 60
    while True:
        with engine.connect() as con:
            results = con.execute(
                sa.text("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
            ).scalar_one()
        if results >= wanted or time.monotonic() > deadline:
            break
        time.sleep(2)
    engine.dispose()
    assert results >= wanted, f"{results} Celery results for {wanted} successful tasks"

    # Both models are registered in the MLflow server (Postgres store, basic auth).
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=scale.mlflow_url)
    for name in ("recops_retrieval", "recops_ranking"):
        versions = client.search_model_versions(f"name='{name}'")
        assert [v.version for v in versions] == ["1"], name
    search = f"{scale.mlflow_url}/api/2.0/mlflow/registered-models/search"
    assert _status(search) == 401
    assert _status(search, ("admin", "not-the-password")) == 401
    assert _status(search, ("admin", secret_values["MLFLOW_TRACKING_PASSWORD"])) == 200
    with sa.create_engine(scale.pg_url("mlflow")).connect() as con:
        assert con.execute(sa.text("SELECT count(*) FROM model_versions")).scalar_one() == 2

    # Features were materialized to Redis, and the registry lives in Postgres.
    import redis
    from recops.features import online_features

    assert redis.Redis(host=scale.redis_host, port=scale.redis_port, db=scale.feast_db).dbsize() > 0
    rows = online_features("user_id", [1, 2, 3], "retrieval_v1", settings)
    assert len(rows) == 3 and any(
        v is not None for row in rows for k, v in row.items() if k != "user_id"
    ), rows
    with sa.create_engine(scale.pg_url("feast")).connect() as con:
        assert con.execute(sa.text("SELECT count(*) FROM feature_views")).scalar_one() >= 1
    assert not (Path(settings.feast_dir) / "registry.db").exists()
