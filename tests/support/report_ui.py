"""The run report, opened from the Airflow UI in a real headless browser.

A live Airflow API server (the process that serves the UI and the plugins' FastAPI apps;
SimpleAuthManager with its generated password) serves the UI over the state a test's
DAG runs left in the database. The scheduler, DAG processor and triggerer are not
started: the runs are already recorded, and nothing must schedule new ones. Debian's
Chromium, driven by Playwright, logs in through the login page, opens the DAG run, clicks
the plugin's "Run report" tab and reads the report inside its iframe. A screenshot is kept
in the test's folder and copied to ``benchmarks/results/run_report.png``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from recops.report import report_path

from tests.support.stack import BIN, Stack, free_port, stop_group

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# Never let the browser reach out: no QUIC, no background or component fetches.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _status(url: str, cookie: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"airflow api-server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout:.0f} s: {log.read_text()[-3000:]}")


def check_report_tab(stack: Stack, tmp_path: Path, run_id: str) -> None:
    """Open ``run_id``'s report from its DAG-run page in Chromium and check every section.

    The run must have been rolled out already (the Rollout section shows the canary).
    """
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).is_file(), (
        "Debian chromium is missing: .ci/run installs it (apt-get install chromium)"
    )
    tmp_path.mkdir(parents=True, exist_ok=True)
    report = report_path(stack.settings, "recsys_nightly", run_id)
    assert report.is_file()
    started = time.monotonic()
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    log_path = tmp_path / "api-server.log"
    log = log_path.open("w")
    argv = [
        str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(api_port),
        "--workers", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, env=stack.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_http(f"{base}/api/v2/monitor/health", 240, proc, log_path)
        print(f"API server up after {time.monotonic() - started:.0f} s")
        passwords = stack.settings.airflow_home / "simple_auth_manager_passwords.json.generated"
        deadline = time.monotonic() + 60
        while not passwords.is_file() and time.monotonic() < deadline:
            time.sleep(1)
        username, password = next(iter(json.loads(passwords.read_text()).items()))
        quoted = urllib.parse.quote(run_id, safe="")
        report_url = f"{base}/recops/reports/recsys_nightly/{quoted}"
        # The report needs the same login as the UI.
        assert _status(report_url) in (401, 403)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                page.goto(f"{base}/", wait_until="networkidle")
                page.locator("input[name=username]").fill(username)
                page.locator("input[name=password]").fill(password)
                page.locator("button[type=submit]").click()
                page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)

                page.goto(f"{base}/dags/recsys_nightly/runs/{quoted}", wait_until="networkidle")
                tab = (
                    page.get_by_role("button", name="Run report")
                    .or_(page.get_by_role("tab", name="Run report"))
                    .or_(page.get_by_role("link", name="Run report"))
                )
                expect(tab.first).to_be_visible(timeout=60_000)
                tab.first.click()
                page.wait_for_url("**/plugin/recops-run-report", timeout=30_000)
                frame = page.frame_locator("iframe[title='Run report']")
                expect(frame.locator("h1")).to_have_text("Run report", timeout=60_000)
                for heading in (
                    "Data validation and drift",
                    "Features used",
                    "Training curves",
                    "Metrics vs champion",
                    "Compression search",
                    "Gate decision",
                    "Rollout",
                ):
                    expect(frame.get_by_role("heading", name=heading, exact=True)).to_be_visible()
                expect(frame.locator("#features")).to_contain_text("retrieval_v1")
                expect(frame.locator("#features")).to_contain_text("user_profile:age")
                expect(frame.locator("#gate")).to_contain_text("blessed")
                expect(frame.locator("#rollout")).to_contain_text("promoted")
                expect(frame.locator("#rollout")).to_contain_text("canary p50 / p99 (ms)")
                # Both plots decoded and drawn by the browser (a broken data URI has width 0).
                widths = frame.locator("img").evaluate_all(
                    "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
                )
                assert len(widths) == 2 and min(widths) > 300, widths
                shot = tmp_path / "run_report.png"
                page.screenshot(path=str(shot))
                report_shot = tmp_path / "run_report_full.png"
                page.goto(report_url, wait_until="load")  # the page itself, full length
                page.screenshot(path=str(report_shot), full_page=True)

                # Authenticated but malformed or unknown ids.
                assert page.request.get(
                    f"{base}/recops/reports/recsys_nightly/..%2F..%2Fetc"
                ).status in (400, 404)
                assert (
                    page.request.get(f"{base}/recops/reports/recsys_nightly/bad%3Cid%3E").status
                    == 400
                )
                assert (
                    page.request.get(f"{base}/recops/reports/recsys_nightly/manual__nope").status
                    == 404
                )
            finally:
                browser.close()
        results = ROOT / "benchmarks" / "results"
        results.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, results / "run_report.png")
        shutil.copy(report_shot, results / "run_report_full.png")
        print(f"report checked in the browser in {time.monotonic() - started:.0f} s")
    finally:
        stop_group(proc)
        log.close()


def check_feast_ui(stack: Stack, tmp_path: Path) -> None:
    """Start the Feast UI the way ``recops ui`` does and read the repo back through it.

    The UI's own REST API (what its React pages call) must list every feature view and
    the feature services of ``feature_repo``, and ``/`` must serve the UI's page.
    """
    from recops.features import feast_ui_command

    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv, env = feast_ui_command(stack.settings, port)
    log_path = tmp_path / "feast-ui.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            env={**stack.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/health", 120, proc, log_path)
        with urllib.request.urlopen(f"{base}/", timeout=30) as response:
            assert "<title>Feast" in response.read().decode(), "the Feast UI page did not load"
        with urllib.request.urlopen(f"{base}/api/v1/feature_views/all", timeout=30) as response:
            views = {v["spec"]["name"] for v in json.loads(response.read())["featureViews"]}
        with urllib.request.urlopen(
            f"{base}/api/v1/feature_services?project={stack.settings.feast_project}",
            timeout=30,
        ) as response:
            services = {s["spec"]["name"] for s in json.loads(response.read())["featureServices"]}
    finally:
        stop_group(proc)
    assert {"user_profile", "item_profile", "user_activity", "item_popularity"} <= views, views
    assert {"retrieval_v1", "ranking_v1"} <= services, services
