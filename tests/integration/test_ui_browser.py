"""Issue #18's acceptance walk, in a real browser: trigger form -> run -> MLflow run.

A live Airflow 3 (API server, DAG processor and scheduler with its LocalExecutor, each
its own process, as ``tests.support.live_airflow`` runs them) and an
MLflow UI server (``mlflow ui`` on a free port; ``RECOPS_MLFLOW_PORT`` and
``RECOPS_MLFLOW_UI_URL`` point the links at it) serve a tiny synthetic MovieLens-like
sample. Debian's Chromium, driven by Playwright:

1. logs in through SimpleAuthManager's login page;
2. opens recsys_nightly's trigger form, sets the logical date of the sample's last day
   and changes Params in the form's own widgets (number fields, the variants
   multi-select), then triggers;
3. follows the run on its page until it succeeded;
4. opens the ``train`` task's "MLflow run" extra link and sees that run's MLflow page;
5. asks for the same logical date again and reads why it cannot (not "Conflict");
6. opens recsys_promote's form and finds it valid as it opens.

Screenshots of each step are kept in the test's folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from recops.config import Settings, airflow_env
from recops.data import publish, synthesize
from recops.params import UI_REASON
from recops.pipeline import logical_date_for

from tests.support.live_airflow import LiveAirflow, live_env, wait_for
from tests.support.report_ui import CHROMIUM, CHROMIUM_ARGS
from tests.support.stack import BIN, free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1500)]

NIGHTLY = "recsys_nightly"
#: What the form changes (typed into its number fields): every stage does its real work
#: on the tiny sample, as fast as it goes.
FORM_NUMBERS = {
    "epochs": "1",
    "ranker_epochs": "1",
    "embedding_dim": "16",
    "batch_size": "256",
    "max_rmse": "5",
    "min_recall_at_10": "0.01",
    "min_ndcg_at_10": "0.01",
}
#: The one compression variant kept in the multi-select (the others are removed).
VARIANT = "int8_tables"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveAirflow, str, str]]:
    """The stack up, the sample published: (Airflow stack, MLflow UI URL, sample's last day)."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("ui-browser")
    mlflow_port = free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    env_vars = {
        "RECOPS_HOME": str(tmp / "recops"),
        "RECOPS_GRPC_PORT": str(free_port()),
        "RECOPS_REST_PORT": str(free_port()),
        "RECOPS_RECOMMEND_PORT": str(free_port()),
        "RECOPS_MLFLOW_PORT": str(mlflow_port),
        "RECOPS_MLFLOW_UI_URL": mlflow_url,
        "RECOPS_ACTOR": "ui-browser-test",
    }
    for key, value in env_vars.items():
        mp.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("AIRFLOW") or k == "MLFLOW_TRACKING_URI"]:
        mp.delenv(key)
    settings = Settings.from_env()
    overrides = {
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "RECOPS_RETRY_DELAY_SECONDS": "2",
        # Unpausing from the form also starts the nightly's own scheduled run for the
        # latest interval, which has no data: it is skipped at its first poke.
        "RECOPS_LATE_DATA_WAIT_S": "0",
    }
    base = {**os.environ, **airflow_env(settings), **env_vars, "PYTHONUNBUFFERED": "1"}
    api_port = free_port()
    stack = LiveAirflow(
        settings=settings,
        env=live_env(settings, base, api_port=api_port, overrides=overrides),
        api_port=api_port,
        log_dir=tmp,
    )
    mlflow_log = (tmp / "mlflow.log").open("wb")
    mlflow_proc: subprocess.Popen[bytes] | None = None
    try:
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
        # Started first: it creates the MLflow database, before any task touches it.
        mlflow_proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "ui",
                "--backend-store-uri",
                settings.mlflow_tracking_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
            ],  # fmt: skip
            env=stack.env,
            stdout=mlflow_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.cli("db", "migrate")
        day = publish(
            settings,
            *synthesize(rows=6000, users=120, items=150, days=8, seed=5),
            source="synthetic",
        ).last_date
        # No triggerer: nothing in this walk defers, and its registry watcher would only
        # take CPU from the run.
        for component in ("api-server", "dag-processor", "scheduler"):
            stack.start(component)
        wait_for("the API server", stack.healthy, timeout=180)
        wait_for(
            "the DAG processor to register recsys_nightly",
            lambda: stack.query("SELECT dag_id FROM dag WHERE dag_id = ?", NIGHTLY),
            timeout=180,
        )
        wait_for("the MLflow UI", lambda: _answers(f"{mlflow_url}/health"), timeout=180)
        yield stack, mlflow_url, day
    finally:
        stack.stop()
        if mlflow_proc is not None:
            _stop(mlflow_proc)
        mlflow_log.close()
        mp.undo()


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _diagnostics(stack: LiveAirflow, run_id: str) -> str:
    states = stack.query(
        "SELECT task_id, map_index, state, try_number FROM task_instance "
        "WHERE dag_id = ? AND run_id = ?",
        NIGHTLY,
        run_id,
    )
    return f"tasks: {states}\nscheduler: {stack.log_tail('scheduler', 4000)}"


def _set_logical_date(page: Any, day: str) -> None:
    """Type the logical date of ``day``'s run into the open trigger form's date picker."""
    logical = logical_date_for(day)  # YYYY-MM-DD: the run for `day`'s data interval
    page.get_by_test_id("datetime-input").click()
    page.locator("input[placeholder='YYYY/MM/DD']").fill(logical.replace("-", "/"))
    page.locator("input[placeholder='HH:mm']").fill("00:00")
    page.keyboard.press("Escape")  # closes the date popover, not the dialog
    expected = time.strptime(logical, "%Y-%m-%d")
    shown = time.strftime("%b %d, %Y 00:00", expected)
    assert page.get_by_test_id("datetime-input").inner_text().strip() == shown


def _form(page: Any) -> Any:
    # The date picker's popover is a dialog too, once opened.
    return page.get_by_role("dialog").filter(has_text="Trigger Dag")


def _fill_form(page: Any, day: str) -> None:
    """Set the logical date and the changed Params in the trigger form's own widgets."""
    _set_logical_date(page, day)
    dialog = _form(page)
    # The form enforces the schema's bounds itself: 0 epochs becomes the minimum, 1.
    for name, value in {**FORM_NUMBERS, "epochs": "0"}.items():
        field = dialog.locator(f"input[name=element_{name}]")
        field.fill(value)
        field.blur()
    assert dialog.locator("input[name=element_epochs]").input_value() == "1"
    chosen = dialog.locator("input[name=element_variants]")
    for name in chosen.evaluate_all("inputs => inputs.map(i => i.value)"):
        if name != VARIANT:
            dialog.locator(f"[aria-label^='Remove {name}:'] [role=button]").click()
    assert chosen.evaluate_all("inputs => inputs.map(i => i.value)") == [VARIANT]


def test_trigger_from_the_form_and_open_the_mlflow_run(
    live: tuple[LiveAirflow, str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    stack, mlflow_url, day = live
    assert Path(CHROMIUM).is_file(), "Debian chromium is missing (apt-get install chromium)"
    base = stack.base_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            # 1. Log in.
            page.goto(f"{base}/", wait_until="networkidle")
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(stack.passwords()["admin"])
            page.locator("button[type=submit]").click()
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)

            # 2. Trigger from the form, with changed Params.
            page.goto(f"{base}/dags/{NIGHTLY}", wait_until="networkidle")
            page.get_by_role("button", name=re.compile("Trigger")).first.click()
            _fill_form(page, day)
            page.screenshot(path=str(tmp_path / "1_trigger_form.png"), full_page=True)
            page.get_by_test_id("trigger-dag-submit").click()
            page.wait_for_url(re.compile(rf"/dags/{NIGHTLY}/runs/[^/]+$"), timeout=60_000)
            run_id = urllib.parse.unquote(page.url.rsplit("/", 1)[1])
            conf = page.request.get(f"{base}/api/v2/dags/{NIGHTLY}/dagRuns/{run_id}").json()
            assert conf["logical_date"].startswith(logical_date_for(day)), conf
            for name, value in FORM_NUMBERS.items():
                assert conf["conf"][name] == float(value), (name, conf["conf"])
            assert conf["conf"]["variants"] == [VARIANT]

            # 3. Follow the run to success.
            def finished() -> str | None:
                reply = page.request.get(f"{base}/api/v2/dags/{NIGHTLY}/dagRuns/{run_id}")
                state = reply.json().get("state") if reply.ok else None
                return state if state in ("success", "failed") else None

            state, waited = wait_for("the nightly run to finish", finished, 1200, interval=5)
            print(f"\nnightly run from the form finished ({state}) after {waited:.0f} s")
            assert state == "success", _diagnostics(stack, run_id)
            quoted = urllib.parse.quote(run_id, safe="")
            page.goto(f"{base}/dags/{NIGHTLY}/runs/{quoted}", wait_until="networkidle")
            expect(page.get_by_text(re.compile("^success$", re.I)).first).to_be_visible()
            page.screenshot(path=str(tmp_path / "2_run_succeeded.png"))

            # 4. The train task's "MLflow run" link opens that run in MLflow.
            page.goto(f"{base}/dags/{NIGHTLY}/runs/{quoted}/tasks/train", wait_until="networkidle")
            page.get_by_role("tab", name="Details").or_(
                page.get_by_role("link", name="Details")
            ).first.click()
            link = page.get_by_role("link", name="MLflow run")
            expect(link).to_be_visible(timeout=60_000)
            href = link.get_attribute("href") or ""
            assert href.startswith(f"{mlflow_url}/#/experiments/"), href
            mlflow_run = href.rsplit("/", 1)[1]
            version = page.get_by_role("link", name="Model version")
            expect(version).to_have_attribute("href", re.compile(r"/#/models/[^/]+/versions/\d+$"))
            page.screenshot(path=str(tmp_path / "3_extra_links.png"))
            with page.context.expect_page() as opened:
                link.click()
            mlflow_page = opened.value
            mlflow_page.wait_for_load_state()
            assert mlflow_page.url == href
            expect(mlflow_page.get_by_text(mlflow_run).first).to_be_visible(timeout=60_000)
            mlflow_page.screenshot(path=str(tmp_path / "4_mlflow_run.png"))
            mlflow_page.close()

            # 5. The same logical date again: the form says why it cannot, in words.
            page.goto(f"{base}/dags/{NIGHTLY}", wait_until="networkidle")
            page.get_by_role("button", name=re.compile("Trigger")).first.click()
            _set_logical_date(page, day)
            page.get_by_test_id("trigger-dag-submit").click()
            expect(_form(page)).to_contain_text(
                f"{NIGHTLY} already has a run with logical date", timeout=30_000
            )
            _form(page).get_by_text("already has a run").first.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "5_conflict.png"))

            # 6. recsys_promote's form opens valid: nothing required is left empty.
            page.goto(f"{base}/dags/recsys_promote", wait_until="networkidle")
            page.get_by_role("button", name=re.compile("Trigger")).first.click()
            expect(_form(page).locator("[name=element_reason]")).to_have_value(UI_REASON)
            expect(page.get_by_test_id("trigger-dag-submit")).to_be_enabled()
            page.screenshot(path=str(tmp_path / "6_promote_form.png"))
        finally:
            browser.close()
