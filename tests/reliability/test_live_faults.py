"""Faults injected into a live Airflow 3 running the real recops DAGs.

One stack serves the whole module: `airflow api-server`, `dag-processor`, `triggerer`
and `scheduler` (LocalExecutor on SQLite, as `airflow standalone` runs them), each in
its own process group so that one can be killed alone. A single `recsys_nightly` run on a
tiny synthetic sample goes through, in order:

- the REST API's auth (SimpleAuthManager: admin and viewer, generated passwords);
- three extra runs triggered while it runs (`max_active_runs=1` holds them back);
- kill -9 of the `features` task's supervisor (caught by the heartbeat timeout);
- kill -9 of the `train` task process once a backup exists (the retry resumes from it);
- kill -9 of the scheduler while `compress` runs, then a restart;
- the `recops_blessed` asset starting `recsys_promote`, whose `promote` task is killed
  during the canary;

and the Execution API token lifetime is set shorter than the longest tasks. The tests
run in file order and share the run; each asserts what its fault must not break.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from recops.config import Settings, airflow_env
from recops.data import list_partitions, publish, synthesize
from recops.pipeline import logical_date_for
from recops.promotion import served_stable
from recops.registry import registry_status
from recops.serving.models_config import find_model, parse_config, read_config, version_labels

from tests.support.live_airflow import (
    COMPONENTS,
    LiveAirflow,
    alive,
    live_env,
    parent_pid,
    process_title,
    wait_for,
)
from tests.support.stack import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NIGHTLY = "recsys_nightly"
PROMOTE = "recsys_promote"
MODELS = ("recops_retrieval", "recops_ranking")
# test_nightly_dag's fast conf, with one more epoch (a backup exists while `train` runs)
# and one compression variant (this machine has 2 cores).
CONF: dict[str, Any] = {"epochs": 3, "embedding_dim": 16, "batch_size": 256, "fine_tune_epochs": 1,
                        "ranker_epochs": 2, "variants": ["int8_tables"], "max_rmse": 5.0,
                        "min_recall_at_10": 0.01, "min_ndcg_at_10": 0.01}  # fmt: skip
HEARTBEAT_TIMEOUT_S = 20
TOKEN_LIFETIME_S = 30
OVERRIDES = {
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    # A scheduler restarted within this many seconds finds the killed one still alive in
    # the DB and leaves its running tasks alone: their supervisors (orphaned LocalExecutor
    # workers) finish them through the Execution API. Past it they are reset and rerun.
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "60",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    # Tasks outlive their Execution API token (default 600 s): it must be refreshed.
    "AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME": str(TOKEN_LIFETIME_S),
    "RECOPS_RETRY_DELAY_SECONDS": "2",
    "RECOPS_ACTOR": "live-faults-test",
}

# What the tests learn from one another, in file order.
STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAirflow]:
    """A migrated Airflow with the recops DAGs, synthetic data staged, all four components up."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("live")
    mp.setenv("RECOPS_HOME", str(tmp / "recops"))
    ports = {
        name: str(free_port())
        for name in ("RECOPS_GRPC_PORT", "RECOPS_REST_PORT", "RECOPS_RECOMMEND_PORT")
    }
    for key, value in {**ports, "RECOPS_ACTOR": OVERRIDES["RECOPS_ACTOR"]}.items():
        mp.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("AIRFLOW")]:
        mp.delenv(key)
    settings = Settings.from_env()
    base = {**os.environ, **airflow_env(settings), **ports, "PYTHONUNBUFFERED": "1"}
    stack = LiveAirflow(
        settings=settings,
        env=live_env(settings, base, api_port=free_port(), overrides=OVERRIDES),
        api_port=0,
        log_dir=tmp,
    )
    stack.api_port = int(stack.env["AIRFLOW__API__PORT"])
    try:
        stack.cli("db", "migrate")
        stack.cli("pools", "set", "recops_promotion", "1", "one promotion at a time")
        ingested = publish(
            settings,
            *synthesize(rows=6000, users=120, items=150, days=8, seed=5),
            source="synthetic",
        )
        STATE["day"] = ingested.last_date
        started = time.monotonic()
        for component in COMPONENTS:
            stack.start(component)
        wait_for("the API server", stack.healthy, timeout=180)
        wait_for(
            "the DAG processor to register recsys_nightly and recsys_promote",
            lambda: (
                len(stack.query("SELECT dag_id FROM dag WHERE dag_id IN (?, ?)", NIGHTLY, PROMOTE))
                == 2
            ),
            timeout=180,
        )
        print(f"\nlive stack up in {time.monotonic() - started:.1f} s")
        yield stack
    finally:
        held = STATE.pop("features_lock", None)
        if held is not None:  # a test failed while holding it
            held.close()
        stack.stop()
        from recops.serving.server import stop_background

        stop_background(settings)
        mp.undo()


# ---------------------------------------------------------------------------- helpers
def _admin(live: LiveAirflow) -> str:
    if "admin_token" not in STATE:
        status, token = live.token("admin", live.passwords()["admin"])
        assert status == 201 and token, status
        STATE["admin_token"] = token
    return str(STATE["admin_token"])


def _ti(live: LiveAirflow, dag_id: str, run_id: str, task_id: str) -> list[tuple[Any, ...]]:
    """(state, try_number, pid, duration) of each map index of a task, current try."""
    return live.query(
        "SELECT state, try_number, pid, duration, map_index FROM task_instance "
        "WHERE dag_id=? AND run_id=? AND task_id=? ORDER BY map_index",
        dag_id,
        run_id,
        task_id,
    )


def _ti_times(live: LiveAirflow, run_id: str, task_id: str) -> list[tuple[Any, ...]]:
    """(last_heartbeat_at, start_date) of a nightly task's current try."""
    return live.query(
        "SELECT last_heartbeat_at, start_date FROM task_instance "
        "WHERE dag_id=? AND run_id=? AND task_id=? ORDER BY map_index",
        NIGHTLY,
        run_id,
        task_id,
    )


def _when(stamp: str) -> datetime:
    """A timestamp of Airflow's SQLite DB (UTC, naive or with an offset) as aware UTC."""
    parsed = datetime.fromisoformat(stamp)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _run_state(live: LiveAirflow, dag_id: str, run_id: str) -> str | None:
    rows = live.query("SELECT state FROM dag_run WHERE dag_id=? AND run_id=?", dag_id, run_id)
    return rows[0][0] if rows else None


def _running_pid(
    live: LiveAirflow, dag_id: str, run_id: str, task_id: str, *, timeout: float
) -> tuple[int, int]:
    """Wait until the task's first try runs with a known pid: (pid, try_number)."""

    def running() -> tuple[int, int] | None:
        for state, try_number, pid, _, _ in _ti(live, dag_id, run_id, task_id):
            if state == "running" and pid and alive(int(pid)):
                return int(pid), int(try_number)
            assert state not in ("success", "failed", "skipped", "upstream_failed"), (
                f"{task_id} reached {state} before it could be killed"
            )
        return None

    found, _ = wait_for(f"{task_id} to run", running, timeout=timeout, interval=0.2)
    return found  # type: ignore[no-any-return]


def _wait_task_success(
    live: LiveAirflow, dag_id: str, run_id: str, task_id: str, timeout: float
) -> list[tuple[Any, ...]]:
    def done() -> list[tuple[Any, ...]] | None:
        rows = _ti(live, dag_id, run_id, task_id)
        assert not any(r[0] in ("failed", "upstream_failed") for r in rows), (
            rows,
            live.log_tail("scheduler"),
        )
        return rows if rows and all(r[0] == "success" for r in rows) else None

    rows, _ = wait_for(f"{task_id} to succeed", done, timeout=timeout)
    return rows  # type: ignore[no-any-return]


def _trigger(live: LiveAirflow, token: str, body: dict[str, Any]) -> str:
    """POST a nightly run; a SQLite lock can fail or time out one call, so retry it."""
    for _ in range(3):
        try:
            status, run = live.request(
                "POST", f"/api/v2/dags/{NIGHTLY}/dagRuns", token=token, body=body
            )
        except OSError:  # timed out: it may still have gone through
            status, run = 0, None
        if status == 200:
            return str(run["dag_run_id"])
        if status == 409:  # an attempt that failed on our side went through
            break
        assert status in (0, 500), (status, run)
        time.sleep(2)
    status, runs = live.request(
        "GET", f"/api/v2/dags/{NIGHTLY}/dagRuns?limit=100", token=token, retries=2
    )
    assert status == 200, runs
    wanted = datetime.fromisoformat(body["logical_date"])
    found = [
        r["dag_run_id"]
        for r in runs["dag_runs"]
        if r["logical_date"]
        and datetime.fromisoformat(r["logical_date"].replace("Z", "+00:00")) == wanted
    ]
    assert len(found) == 1, runs
    return str(found[0])


def _take_features_lock(settings: Settings, timeout: float) -> IO[str]:
    """Hold the lock every feature build takes (``recops.pipeline.features_step``).

    While the test holds it, a `features` task is running but waits: the test decides when
    it proceeds, whatever the machine's speed. Close the returned file to let it go.
    """
    path = settings.home / "locks" / "promote-_features.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise AssertionError(
                    f"the features lock was not free within {timeout:.0f} s"
                ) from None
            time.sleep(0.2)


def _hashes(settings: Settings) -> dict[str, str]:
    return {
        p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in list_partitions(settings)
    }


def _iso(day: str) -> str:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).isoformat()


# ---------------------------------------------------------------------------- tests
def test_api_auth_generated_passwords_and_roles(live: LiveAirflow) -> None:
    passwords = live.passwords()
    assert set(passwords) == {"admin", "viewer"}
    for user, password in passwords.items():
        assert len(password) >= 16 and password != user and user not in password.lower(), (
            "guessable password"
        )
    assert passwords["admin"] != passwords["viewer"]

    trigger = {"logical_date": "2030-01-01T00:00:00+00:00", "conf": {}}
    runs_path = f"/api/v2/dags/{NIGHTLY}/dagRuns"
    assert live.request("GET", "/api/v2/dags")[0] == 401
    assert live.request("POST", runs_path, body=trigger)[0] == 401
    # A forged token is refused too (Airflow 3.3 answers 403 for an undecodable bearer token).
    assert live.request("GET", "/api/v2/dags", token="not-a-token")[0] in (401, 403)
    assert live.token("admin", passwords["viewer"])[0] == 401
    assert live.token("admin", "")[0] in (400, 401, 422)

    status, viewer = live.token("viewer", passwords["viewer"])
    assert status == 201 and viewer
    status, dags = live.request("GET", "/api/v2/dags", token=viewer)
    assert status == 200 and {NIGHTLY, PROMOTE} <= {d["dag_id"] for d in dags["dags"]}
    assert live.request("POST", runs_path, token=viewer, body=trigger)[0] == 403
    assert (
        live.request("PATCH", f"/api/v2/dags/{NIGHTLY}", token=viewer, body={"is_paused": False})[0]
        == 403
    )

    admin = _admin(live)
    assert live.request("GET", "/api/v2/dags", token=admin)[0] == 200
    # The refused triggers left nothing behind.
    assert live.query("SELECT run_id FROM dag_run WHERE dag_id=?", NIGHTLY) == []


def test_max_active_runs_holds_extra_runs_back(live: LiveAirflow) -> None:
    admin, day = _admin(live), STATE["day"]
    STATE["partitions_before"] = _hashes(live.settings)
    logical = _iso(logical_date_for(day))
    # `features` will wait on this until the kill test lets it go (see _take_features_lock).
    STATE["features_lock"] = _take_features_lock(live.settings, timeout=10)
    # run_after at the logical date: the nightly's own scheduled run (created on unpause,
    # for the latest interval) sorts after ours and waits behind it.
    run_id = STATE["run_id"] = _trigger(
        live, admin, {"logical_date": logical, "run_after": logical, "conf": CONF}
    )
    for dag_id in (PROMOTE, NIGHTLY):
        status, body = live.request(
            "PATCH", f"/api/v2/dags/{dag_id}", token=admin, body={"is_paused": False}, retries=2
        )
        assert status == 200 and body["is_paused"] is False, body
    _, waited = wait_for(
        "the triggered run to start",
        lambda: _run_state(live, NIGHTLY, run_id) == "running",
        timeout=60,
    )
    STATE["run_started"] = time.monotonic() - waited

    extra = []
    for n in (2, 3, 4):  # distinct logical dates, as three UI triggers would make
        when = _iso((datetime.fromisoformat(day) + timedelta(days=n)).strftime("%Y-%m-%d"))
        extra.append(_trigger(live, admin, {"logical_date": when, "conf": CONF}))
    most_running, polls, touched = 0, 0, set()
    for _ in range(12):
        states = dict(live.query("SELECT run_id, state FROM dag_run WHERE dag_id=?", NIGHTLY))
        most_running = max(most_running, sum(s == "running" for s in states.values()))
        touched |= set(live.query(
            "SELECT run_id, task_id, state FROM task_instance "
            "WHERE dag_id=? AND run_id != ? AND state IS NOT NULL", NIGHTLY, run_id
        ))  # fmt: skip
        polls += 1
        assert states[run_id] == "running", states
        time.sleep(1)
    others = [
        r
        for (r,) in live.query(
            "SELECT run_id FROM dag_run WHERE dag_id=? AND run_id != ?", NIGHTLY, run_id
        )
    ]
    assert set(extra) <= set(others)
    print(f"max_active_runs: {len(others)} extra runs ({len(others) - len(extra)} scheduled), "
          f"{polls} polls, at most {most_running} running")  # fmt: skip
    assert most_running == 1
    for other in others:
        status, body = live.request(
            "PATCH",
            f"/api/v2/dags/{NIGHTLY}/dagRuns/{other}",
            token=admin,
            body={"state": "failed"},
            retries=2,
        )
        assert status == 200 and body["state"] == "failed", body
    assert not touched, f"held-back runs scheduled tasks: {sorted(touched)}"
    # Marked failed while queued: none of their tasks was ever tried.
    tried = live.query(
        "SELECT run_id, task_id FROM task_instance "
        "WHERE dag_id=? AND run_id != ? AND try_number > 0",
        NIGHTLY,
        run_id,
    )
    assert tried == [], f"held-back runs tried tasks: {tried}"


def test_kill_features_supervisor_is_caught_by_heartbeat_timeout(live: LiveAirflow) -> None:
    run_id = STATE["run_id"]
    # `features` runs but waits on the lock the test holds, so the kill lands mid-task on
    # a fast machine too.
    pid, try_number = _running_pid(live, NIGHTLY, run_id, "features", timeout=240)
    # The sample is published whole, so validate checked the day in place and rewrote nothing.
    STATE["partitions"] = _hashes(live.settings)
    assert STATE["partitions"] == STATE["partitions_before"] and len(STATE["partitions"]) == 8
    supervisor = parent_pid(pid)
    assert "LocalExecutor" in process_title(supervisor), process_title(supervisor)
    STATE.pop("features_lock").close()
    time.sleep(2)  # into feast apply / materialization
    os.kill(supervisor, 9)
    killed = time.monotonic()
    # The scheduler times a task out from its last heartbeat, which came before the kill.
    last_heartbeat = _when(_ti_times(live, run_id, "features")[0][0])
    # Take the lock back once the orphaned task process (its supervisor is gone, it is
    # not) lets go of it: the retry, when it comes, then runs (waiting on the lock) for
    # longer than its Execution API token lives, which test_tasks_outlive_... checks.
    STATE["features_lock"] = _take_features_lock(live.settings, timeout=180)
    taken = time.monotonic() - killed

    def retry_running() -> bool:
        state, current_try = _ti(live, NIGHTLY, run_id, "features")[0][:2]
        assert state not in ("failed", "upstream_failed"), live.log_tail("scheduler")
        return bool(current_try > try_number and state == "running")

    wait_for("the features retry to run", retry_running, timeout=300, interval=0.25)
    retried_after = time.monotonic() - killed
    retry_started = _when(_ti_times(live, run_id, "features")[0][1])
    hold = TOKEN_LIFETIME_S + 10
    time.sleep(hold)
    assert retry_running(), "the features retry stopped running while it waited on the lock"
    STATE.pop("features_lock").close()
    rows = _wait_task_success(live, NIGHTLY, run_id, "features", timeout=300)
    print(f"features: supervisor killed; lock free of the orphan after {taken:.1f} s; "
          f"retry running {retried_after:.1f} s after the kill "
          f"(heartbeat timeout {HEARTBEAT_TIMEOUT_S} s); it waited "
          f"{hold} s on the lock and succeeded (try {rows[0][1]}, {rows[0][3]:.1f} s)")  # fmt: skip
    assert rows[0][1] > try_number
    # Retried only once the heartbeat timeout had passed since the last heartbeat (the
    # scheduler noticed the loss), as the metadata DB records both.
    assert (retry_started - last_heartbeat).total_seconds() >= HEARTBEAT_TIMEOUT_S
    assert rows[0][3] > TOKEN_LIFETIME_S
    assert not alive(pid), "the orphaned features process outlived its retry"


def test_kill_train_task_process_retry_resumes(live: LiveAirflow) -> None:
    run_id, settings = STATE["run_id"], live.settings
    pid, try_number = _running_pid(live, NIGHTLY, run_id, "train", timeout=240)
    assert "LocalExecutor" in process_title(parent_pid(pid))

    def backup() -> list[Path]:
        assert _ti(live, NIGHTLY, run_id, "train")[0][0] == "running", (
            "train finished before a backup was seen"
        )
        return sorted(settings.runs_dir.glob("*/train*/backup/chief/checkpoint"))

    wait_for("train to write its first backup", backup, timeout=240, interval=0.1)
    os.kill(pid, 9)
    killed = time.monotonic()
    # The process is dead, so what is on disk now is what the retry finds.
    had_backup = bool(sorted(settings.runs_dir.glob("*/train*/backup/chief/checkpoint")))

    def left_running() -> bool:
        rows = _ti(live, NIGHTLY, run_id, "train")
        return rows[0][1] > try_number or rows[0][0] != "running"

    _, detected = wait_for("the kill to be noticed", left_running, timeout=60, interval=0.2)
    rows = _wait_task_success(live, NIGHTLY, run_id, "train", timeout=300)
    status, xcom = live.request(
        "GET",
        f"/api/v2/dags/{NIGHTLY}/dagRuns/{run_id}/taskInstances/train/xcomEntries/return_value",
        token=_admin(live),
        retries=2,
    )
    assert status == 200, xcom
    result = xcom["value"]
    print(f"train: task process killed (backup on disk: {had_backup}), "
          f"detected after {detected:.1f} s, "
          f"retry try {rows[0][1]} succeeded {time.monotonic() - killed:.1f} s after the kill "
          f"(its duration {rows[0][3]:.1f} s), "
          f"resumed from epoch {result['resumed_from_epoch']}")  # fmt: skip
    assert rows[0][1] > try_number
    assert detected < HEARTBEAT_TIMEOUT_S, "the supervisor should report a killed task at once"
    if had_backup:
        assert 1 <= result["resumed_from_epoch"] < CONF["epochs"]
    else:
        assert result["resumed_from_epoch"] == 0
    assert not list(settings.runs_dir.glob("*/train*/backup")), (
        "the backup outlived a finished training"
    )
    assert len(list(settings.runs_dir.glob("*/train*/_SUCCESS"))) == 1


def test_scheduler_killed_mid_run_restarts_and_run_completes(live: LiveAirflow) -> None:
    run_id = STATE["run_id"]

    def compressing() -> bool:
        rows = _ti(live, NIGHTLY, run_id, "compress")
        assert not rows or not all(r[0] == "success" for r in rows), (
            "compress finished before the scheduler was killed"
        )
        return any(r[0] == "running" for r in rows)

    wait_for("a compress task to run", compressing, timeout=300, interval=0.2)
    old_pid = live.kill9("scheduler")
    assert not alive(old_pid)
    time.sleep(5)  # scheduler down while tasks run on
    live.start("scheduler")
    restarted = time.monotonic()
    state, _ = wait_for(
        "the run to finish after the restart",
        lambda: (s := _run_state(live, NIGHTLY, run_id)) in ("success", "failed") and s,
        timeout=900,
    )
    elapsed = time.monotonic() - restarted
    print(f"scheduler: killed during compress, run {state} {elapsed:.1f} s after the restart; "
          f"whole run {time.monotonic() - STATE['run_started']:.1f} s")  # fmt: skip
    failed = live.query(
        "SELECT task_id, state FROM task_instance "
        "WHERE dag_id=? AND run_id=? AND state != 'success'",
        NIGHTLY,
        run_id,
    )
    assert state == "success", (failed, live.log_tail("scheduler"))
    # One registered, gated version per model: no kill or retry wrote a second one.
    for model in MODELS:
        assert [v["version"] for v in registry_status(live.settings, model).versions] == [1], model
    assert _hashes(live.settings) == STATE["partitions"], "offline partitions changed"


def test_kill_promote_during_canary_retry_serves_registered_version(live: LiveAirflow) -> None:
    settings = live.settings
    (promote_run,), _ = wait_for(
        "the recops_blessed asset to start recsys_promote",
        lambda: [
            r
            for (r,) in live.query("SELECT run_id FROM dag_run WHERE dag_id=? ORDER BY id", PROMOTE)
        ][:1],
        timeout=120,
    )
    pid, try_number = _running_pid(live, PROMOTE, promote_run, "promote", timeout=240)

    def canary() -> str | None:
        assert _ti(live, PROMOTE, promote_run, "promote")[0][0] == "running", (
            "promote finished before its canary was seen"
        )
        path = settings.models_config_path
        text = path.read_text() if path.is_file() else ""
        return text if '"canary"' in text else None

    seen_config, _ = wait_for("the canary label", canary, timeout=240, interval=0.1)
    os.kill(pid, 9)
    killed = time.monotonic()
    # Parsed after the kill: reading the proto imports TensorFlow, too slow to do first.
    in_canary = [
        e.name
        for e in parse_config(seen_config).model_config_list.config
        if "canary" in version_labels(e)
    ]
    assert len(in_canary) == 1, seen_config
    rows = _wait_task_success(live, PROMOTE, promote_run, "promote", timeout=300)
    state, _ = wait_for(
        "recsys_promote to finish",
        lambda: (s := _run_state(live, PROMOTE, promote_run)) in ("success", "failed") and s,
        timeout=60,
    )
    print(f"promote: killed during {in_canary[0]}'s canary, retry try {rows[0][1]} succeeded "
          f"{time.monotonic() - killed:.1f} s after the kill "
          f"(its duration {rows[0][3]:.1f} s)")  # fmt: skip
    assert state == "success" and rows[0][1] > try_number
    text = settings.models_config_path.read_text()
    config = read_config(settings.models_config_path)
    # One entry per model, no version listed twice, the canary label gone.
    assert sorted(entry.name for entry in config.model_config_list.config) == sorted(MODELS), text
    for model in MODELS:
        entry = find_model(config, model)
        assert entry is not None
        versions = list(entry.model_version_policy.specific.versions)
        assert versions == sorted(set(versions)) and 1 in versions, text
        labels = version_labels(entry)
        assert labels.get("stable") == 1 and "canary" not in labels, text
        registered = [v["version"] for v in registry_status(settings, model).versions]
        assert registered == [1] and served_stable(settings, model) == registered[0], (model, text)


def test_tasks_outlive_the_execution_api_token(live: LiveAirflow) -> None:
    rows = live.query(
        "SELECT task_id, map_index, duration FROM task_instance "
        "WHERE dag_id IN (?, ?) AND state='success' AND duration IS NOT NULL",
        NIGHTLY,
        PROMOTE,
    )
    assert rows, "no successful task"
    longest = sorted(rows, key=lambda r: r[2], reverse=True)
    print("token lifetime", TOKEN_LIFETIME_S, "s; longest successful tasks:",
          ", ".join(f"{t}[{m}] {d:.1f} s" for t, m, d in longest[:5]))  # fmt: skip
    assert live.env["AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME"] == str(TOKEN_LIFETIME_S)
    # The tasks' Execution API calls (heartbeats, XComs, state) were never refused: their
    # short-lived token was reissued while they ran.
    calls = [
        line
        for line in live.log_tail("api-server", chars=50_000_000).splitlines()
        if "path=/execution/" in line
    ]
    refused = [line for line in calls if re.search(r"status_code=40[13]\b", line)]
    print(f"Execution API: {len(calls)} calls, {len(refused)} refused for auth")
    assert calls and not refused, refused[:3]
    outlived = [t for t, _, d in rows if d > TOKEN_LIFETIME_S]
    assert outlived, longest[:5]
    # Every task of the nightly run succeeded in the end, however long it ran.
    states = {
        s
        for (s,) in live.query(
            "SELECT state FROM task_instance WHERE dag_id=? AND run_id=?", NIGHTLY, STATE["run_id"]
        )
    }
    assert states == {"success"}, states
