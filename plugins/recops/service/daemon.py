"""Running the recommendation service detached: start, stop, status, health.

The same pattern as the model server's (``recops.serving.daemon``, whose pid and lock
helpers this reuses): ``python -m recops.service.server`` in its own session, its pidfile
and log in ``settings.serving_dir``, started under the folder's lock and returned once
``/healthz`` answers (200, or 503 naming what is missing: the service is up either way).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.errors import UnavailableError
from recops.serving.daemon import CHILDREN, locked, pid_alive, terminate, write_pid

if TYPE_CHECKING:
    from recops.config import Settings

__all__ = [
    "health",
    "log_file",
    "pid_file",
    "service_answers",
    "service_url",
    "start_service",
    "stop_service",
]


def pid_file(settings: Settings) -> Path:
    """Where the detached service's pid is recorded."""
    return settings.serving_dir / "recommend.pid"


def log_file(settings: Settings) -> Path:
    """The detached service's log."""
    return settings.serving_dir / "recommend.log"


def service_url(settings: Settings) -> str:
    """``http://host:port`` of the service (a wildcard bind is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
        settings.recommend_host, settings.recommend_host
    )
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.recommend_port}"


def serves_this_home(settings: Settings, timeout_s: float = 2.0) -> bool:
    """Whether the service answering on the configured port is this home's, and healthy."""
    found = health(settings, timeout_s)
    return (
        found is not None
        and found.get("http_status") == 200
        and found.get("instance") == settings.instance_id
    )


def health(settings: Settings, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """``/healthz``'s JSON (with ``http_status``), or None when nothing answers."""
    url = service_url(settings) + "/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return {"http_status": reply.status, **json.loads(reply.read())}
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                return {"http_status": exc.code, **json.loads(exc.read() or b"{}")}
            except ValueError:
                return None
    except (OSError, ValueError):
        return None


def service_answers(settings: Settings, timeout_s: float = 2.0) -> bool:
    """Whether a recops service answers on the configured host and port."""
    found = health(settings, timeout_s)
    return found is not None and "status" in found


def _read_pid(settings: Settings) -> int | None:
    try:
        return int(pid_file(settings).read_text().strip())
    except (OSError, ValueError):
        return None


def _log_tail(settings: Settings, lines: int = 30) -> str:
    try:
        text = log_file(settings).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


def start_service(settings: Settings, *, timeout_s: float = 120.0) -> int:
    """Start the service detached (or find it running); its pid once ``/healthz`` answers.

    Raises:
        ParamError: The scale profile without ``RECOPS_EVENTS_TOKEN``.
        UnavailableError: The process died or did not answer in time (with its log
            tail), or something else answers on the port.
    """
    from recops.service.server import check_profile

    check_profile(settings)
    settings.serving_dir.mkdir(parents=True, exist_ok=True)
    with locked(settings.serving_dir / "recommend.lock"):
        pid = _read_pid(settings)
        if pid is not None and pid_alive(pid):
            _wait(settings, pid, timeout_s)
            return pid
        pid_file(settings).unlink(missing_ok=True)
        if service_answers(settings, 1.0):
            raise UnavailableError(
                f"a service with no pidfile in {settings.serving_dir} already answers on "
                f"{service_url(settings)}; stop it or set RECOPS_RECOMMEND_PORT"
            )
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        command = [
            sys.executable, "-m", "recops.service.server",
            "--host", settings.recommend_host, "--port", str(settings.recommend_port),
            "--pidfile", str(pid_file(settings)),
        ]  # fmt: skip
        with open(log_file(settings), "ab") as handle:
            handle.write(f"\n=== {time.strftime('%F %T')} starting: {' '.join(command)}\n".encode())
            handle.flush()
            child = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                env=env, cwd=str(settings.serving_dir), start_new_session=True, close_fds=True,
            )  # fmt: skip
        CHILDREN[child.pid] = child
        write_pid(pid_file(settings), child.pid)
        try:
            _wait(settings, child.pid, timeout_s)
        except UnavailableError:
            terminate(child.pid, 5.0)
            pid_file(settings).unlink(missing_ok=True)
            raise
        return child.pid


def _wait(settings: Settings, pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if not pid_alive(pid):
            raise UnavailableError(
                f"recommendation service {pid} exited before answering; log "
                f"{log_file(settings)}:\n{_log_tail(settings)}"
            )
        if service_answers(settings, 1.0):
            return
        if time.monotonic() > deadline:
            raise UnavailableError(
                f"recommendation service {pid} did not answer on {service_url(settings)} "
                f"within {timeout_s:.0f}s; log {log_file(settings)}:\n{_log_tail(settings)}"
            )
        time.sleep(0.2)


def stop_service(settings: Settings, *, timeout_s: float = 10.0) -> bool:
    """Stop the detached service (SIGTERM, then SIGKILL); False if none was running."""
    with locked(settings.serving_dir / "recommend.lock"):
        pid = _read_pid(settings)
        running = pid is not None and pid_alive(pid)
        if running and pid is not None:
            terminate(pid, timeout_s)
        pid_file(settings).unlink(missing_ok=True)
        return running
