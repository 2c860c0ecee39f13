"""A live Airflow 3 stack whose components run as separate processes, for fault injection.

`airflow standalone` runs everything under one parent; here the scheduler (with its
LocalExecutor), the DAG processor, the triggerer and the API server are each their own
process group, so a test can kill -9 the scheduler alone and start it again, or kill a
task's supervisor or task process found through the Airflow database.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from recops.config import Settings

from tests.support.stack import BIN

COMPONENTS = ("api-server", "dag-processor", "triggerer", "scheduler")


def live_env(
    settings: Settings, base: dict[str, str], *, api_port: int, overrides: dict[str, str]
) -> dict[str, str]:
    """Environment shared by every component: one JWT secret, one execution API URL.

    Args:
        settings: The isolated recops settings (their ``airflow_home`` holds the SQLite DB).
        base: The environment to start from (already carrying ``airflow_env(settings)``).
        api_port: Port of the API server (UI, REST and Execution API).
        overrides: Test-specific Airflow settings (heartbeat timeout, token lifetime...).
    """
    home = settings.airflow_home
    return {
        **base,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        # Separate processes must sign and verify with the same keys (standalone shares
        # them through the config file it writes; we pass them to each process instead).
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        # Four processes write one SQLite file. pysqlite waits 5 s for its lock; 10 s rides
        # out busy moments, while a stall stays shorter than the tasks' token lifetime (a
        # 30 s wait was seen to hold every Execution API call until tokens expired).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=10",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
        **overrides,
    }


@dataclass
class LiveAirflow:
    """Handles on a running stack: its processes, database and REST API."""

    settings: Settings
    env: dict[str, str]
    api_port: int
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: Every process started, restarts included: a killed scheduler's group lives on in
    #: its orphaned LocalExecutor workers until stop() ends it.
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.settings.airflow_home / "airflow.db"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, component: str) -> subprocess.Popen[bytes]:
        """Start one component in its own process group; its output goes to a log file."""
        log = (self.log_dir / f"{component}.log").open("ab")
        self._logs.append(log)
        proc = subprocess.Popen(
            [str(BIN / "airflow"), component],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[component] = proc
        self.started.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 300) -> None:
        """Run ``airflow <args>`` in the stack's environment; it must exit 0."""
        done = subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    def kill9(self, component: str) -> int:
        """SIGKILL one component's main process only; its children live on, as in a crash."""
        proc = self.procs[component]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return proc.pid

    def stop(self) -> None:
        """Terminate every process group this stack started (orphans of a killed scheduler too)."""
        for proc in self.started:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        for proc in self.started:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group outlives its leader when orphaned workers remain
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for log in self._logs:
            log.close()

    def log_tail(self, component: str, chars: int = 3000) -> str:
        path = self.log_dir / f"{component}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # ------------------------------------------------------------------ database
    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Read the Airflow SQLite DB; an empty answer while its tables do not exist yet."""
        con = sqlite3.connect(self.db, timeout=30)
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    # ------------------------------------------------------------------ REST API
    def passwords(self) -> dict[str, str]:
        """The passwords Airflow generated for the SimpleAuthManager users."""
        path = Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        return dict(json.loads(path.read_text()))

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        retries: int = 0,
    ) -> tuple[int, Any]:
        """One HTTP call to the API server: (status, decoded JSON body or None).

        ``retries`` repeats an idempotent call that timed out or failed with a 500 (the
        API server's answer when the SQLite database stayed locked).
        """
        for _ in range(retries):
            try:
                status, answer = self._request(method, path, token=token, body=body)
            except OSError:
                time.sleep(2)
                continue
            if status != 500:
                return status, answer
            time.sleep(2)
        return self._request(method, path, token=token, body=body)

    def _request(self, method: str, path: str, *, token: str | None, body: Any) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def healthy(self) -> bool:
        """True once the API server answers its health route."""
        try:
            return self.request("GET", "/api/v2/monitor/health")[0] == 200
        except urllib.error.URLError:  # not listening yet
            return False

    def token(self, username: str, password: str) -> tuple[int, str | None]:
        """POST /auth/token: (status, access token or None)."""
        status, body = self.request(
            "POST", "/auth/token", body={"username": username, "password": password}
        )
        return status, body.get("access_token") if isinstance(body, dict) else None


def wait_for(
    what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0
) -> tuple[Any, float]:
    """Poll ``check`` until it returns something truthy: (that value, seconds waited).

    Raises:
        AssertionError: ``timeout`` seconds passed first.
    """
    start = time.monotonic()
    while True:
        value = check()
        if value:
            return value, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def process_title(pid: int) -> str:
    """The command line (process title) of a live process, or '' when it is gone."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode(errors="replace")
            .strip()
        )
    except OSError:
        return ""


def parent_pid(pid: int) -> int:
    """The parent of a live process (from /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The name field may contain spaces; the fields after its closing ')' are fixed.
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
