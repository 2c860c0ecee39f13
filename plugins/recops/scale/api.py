"""A small client of Airflow 3's REST API, used to trigger and watch runs as the UI does."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from recops.errors import ScaleError

__all__ = ["AirflowApi"]


class AirflowApi:
    """A small client of Airflow 3's public REST API (``/api/v2``), as the UI uses it.

    Args:
        base_url: The API server, e.g. ``http://127.0.0.1:8180``.
        username: Airflow user.
        password: Its password.
    """

    def __init__(self, base_url: str, username: str, password: str) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        reply = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": username, "password": password},
            timeout=30,
        )
        if reply.status_code not in (200, 201):
            raise ScaleError(
                f"login as {username!r} at {self.base_url} failed: "
                f"HTTP {reply.status_code} {reply.text[:200]}"
            )
        self._client = httpx.Client(
            base_url=f"{self.base_url}/api/v2",
            headers={"Authorization": f"Bearer {reply.json()['access_token']}"},
            timeout=60,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; raises :class:`ScaleError` with the reply on a non-2xx status."""
        reply = self._client.request(method, path, **kwargs)
        if reply.status_code >= 300:
            raise ScaleError(f"{method} {path}: HTTP {reply.status_code} {reply.text[:500]}")
        return reply.json() if reply.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 300.0) -> None:
        """Wait until the DAG processor has parsed ``dag_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._client.get(f"/dags/{dag_id}")
            if reply.status_code == 200:
                return
            if reply.status_code not in (404,):
                raise ScaleError(f"GET /dags/{dag_id}: HTTP {reply.status_code} {reply.text[:300]}")
            time.sleep(2)
        raise ScaleError(
            f"{dag_id} was not parsed within {timeout:.0f} s (see the dag-processor log)"
        )

    def trigger(
        self, dag_id: str, logical_date: str, conf: Mapping[str, Any], *, unpause: bool = True
    ) -> str:
        """Trigger a run as the UI does; returns its run id.

        Args:
            dag_id: The DAG.
            logical_date: ISO date or datetime (UTC) of the run.
            conf: The run's Params.
            unpause: Unpause the DAG first (new DAGs start paused).
        """
        if unpause:
            self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        when = logical_date if "T" in logical_date else f"{logical_date}T00:00:00Z"
        run = self.request(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": when, "conf": dict(conf)}
        )
        return str(run["dag_run_id"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 1800.0) -> dict[str, Any]:
        """Poll a run until it succeeds or fails; returns the run and its task instances."""
        from urllib.parse import quote

        import httpx

        deadline = time.monotonic() + timeout
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
        while time.monotonic() < deadline:
            try:
                run = self.request("GET", path)
            except httpx.TransportError:
                # A busy API server (a task near the machine's memory limit) may miss one
                # poll; the run goes on, so keep watching it until the deadline.
                time.sleep(3)
                continue
            if run["state"] in ("success", "failed"):
                tis = self.request("GET", f"{path}/taskInstances", params={"limit": 100})
                return {"run": run, "task_instances": tis["task_instances"]}
            time.sleep(3)
        raise ScaleError(f"run {run_id} of {dag_id} did not finish within {timeout:.0f} s")
