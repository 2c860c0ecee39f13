"""Running the model server detached: start, stop, pid files, health probes, the lock.

``start_background`` starts ``python -m recops.serving.server`` as its own session with
its pidfile and log in ``settings.serving_dir``, and returns once it answers REST and gRPC;
``stop_background`` stops it (SIGTERM, then SIGKILL); ``is_running`` and ``answers`` tell
whether it (or any TF Serving API) answers. ``locked`` is the ``flock`` that serialises
starts, stops and roll-outs on one state folder.

Only the standard library is imported at module level, and grpc only in the gRPC probe
(raw bytes, no protos): the pipeline and the CLI call these helpers without TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from recops.errors import UnavailableError
from recops.io import atomic_write_text, locked

if TYPE_CHECKING:
    from recops.config import Settings

__all__ = [
    "CHILDREN",
    "answers",
    "grpc_answers",
    "grpc_host",
    "is_running",
    "locked",
    "pid_alive",
    "pid_file",
    "rest_answers",
    "start_background",
    "stop_background",
    "terminate",
    "write_pid",
]

log = logging.getLogger("recops.serving")

#: Pid -> the ``Popen`` of each server this process started (the model server here, the
#: recommendation service in ``recops.service.daemon``): ``pid_alive`` polls it, so a
#: child that exited is reaped instead of lingering as a zombie.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_HEALTH_MODEL = "__recops_health_check__"


def grpc_host(host: str) -> str:
    """``host`` as a gRPC target host: an IPv6 address goes in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def pid_file(settings: Settings) -> Path:
    """Where the background server's pid is recorded."""
    return settings.serving_dir / "server.pid"


def write_pid(path: Path, pid: int) -> None:
    """Record ``pid`` in ``path`` atomically (a reader never sees a half-written pid)."""
    atomic_write_text(path, f"{pid}\n")


def _log_file(settings: Settings) -> Path:
    return settings.serving_dir / "server.log"


def _client_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _read_pid(settings: Settings) -> int | None:
    try:
        return int(pid_file(settings).read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie or a reaped child is not)."""
    child = CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0)
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _is_model_server(pid: int) -> bool:
    """Whether ``pid`` runs recops (``python -m recops.serving.server`` or ``recops serve``).

    Guards against a recycled pid in a stale pidfile.
    """
    try:
        return b"recops" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pidfile


def rest_answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether a TF Serving REST API answers on ``host:port`` (an error JSON counts)."""
    url = f"http://{_url_host(_client_host(host))}:{port}/v1/models/{_HEALTH_MODEL}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            reply.read()
            return True
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                return "error" in json.loads(exc.read() or b"{}")
            except ValueError:
                return False
    except (OSError, ValueError):
        return False


def grpc_answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """A GetModelStatus call (raw bytes, so no protos/TensorFlow) gets an application answer."""
    import grpc

    with grpc.insecure_channel(f"{grpc_host(_client_host(host))}:{port}") as channel:
        call = channel.unary_unary("/tensorflow.serving.ModelService/GetModelStatus")
        try:
            call(b"", timeout=timeout_s)
        except grpc.RpcError as exc:
            return exc.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        return True


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _healthy(settings: Settings) -> bool:
    return rest_answers(settings.serving_host, settings.rest_port) and grpc_answers(
        settings.serving_host, settings.grpc_port
    )


def _log_tail(settings: Settings, lines: int = 40) -> str:
    try:
        text = _log_file(settings).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


def answers(settings: Settings) -> bool:
    """Whether a TF Serving API (ours or any) answers REST and gRPC on the configured ports."""
    return _healthy(settings)


def is_running(settings: Settings) -> bool:
    """Whether the server recorded in the pidfile is alive and answering REST and gRPC."""
    pid = _read_pid(settings)
    return pid is not None and pid_alive(pid) and _is_model_server(pid) and _healthy(settings)


def start_background(settings: Settings, *, timeout_s: float = 180.0) -> int:
    """Start ``python -m recops.serving.server`` detached; return its pid once it answers.

    The pidfile and log live in ``settings.serving_dir``. If the recorded server is alive
    it is reused (waiting for it if it is still starting).

    Raises:
        UnavailableError: (a ``RuntimeError``) with the log tail, if the process dies or
            does not answer within ``timeout_s``, or another server already answers on
            the port.
    """
    settings.serving_dir.mkdir(parents=True, exist_ok=True)
    with locked(settings.serving_dir / "server.lock"):
        pid = _read_pid(settings)
        if pid is not None and pid_alive(pid) and _is_model_server(pid):
            _wait_healthy(settings, pid, timeout_s)
            return pid
        pid_file(settings).unlink(missing_ok=True)
        if rest_answers(settings.serving_host, settings.rest_port, 1.0):
            raise UnavailableError(
                f"a server with no pidfile in {settings.serving_dir} already answers on "
                f"{settings.serving_host}:{settings.rest_port}; stop it or set RECOPS_REST_PORT"
            )
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        command = [
            sys.executable,
            "-m",
            "recops.serving.server",
            "--host",
            settings.serving_host,
            "--grpc-port",
            str(settings.grpc_port),
            "--rest-port",
            str(settings.rest_port),
            "--models-config",
            str(settings.models_config_path),
            "--pidfile",
            str(pid_file(settings)),
        ]
        with open(_log_file(settings), "ab") as log_handle:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log_handle.write(f"\n=== {stamp} starting: {' '.join(command)}\n".encode())
            log_handle.flush()
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(settings.serving_dir),
                start_new_session=True,
                close_fds=True,
            )
        CHILDREN[child.pid] = child
        write_pid(pid_file(settings), child.pid)
        try:
            _wait_healthy(settings, child.pid, timeout_s)
        except UnavailableError:
            terminate(child.pid, 5.0)
            pid_file(settings).unlink(missing_ok=True)
            raise
        log.info("model server %d answers on %s", child.pid, settings.serving_host)
        return child.pid


def _wait_healthy(settings: Settings, pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if not pid_alive(pid):
            child = CHILDREN.get(pid)
            code = child.returncode if child is not None else "?"
            raise UnavailableError(
                f"model server {pid} exited (code {code}) before answering; log "
                f"{_log_file(settings)}:\n{_log_tail(settings)}"
            )
        if _healthy(settings):
            return
        if time.monotonic() > deadline:
            raise UnavailableError(
                f"model server {pid} did not answer on REST {settings.rest_port} and gRPC "
                f"{settings.grpc_port} within {timeout_s:.0f}s; log {_log_file(settings)}:\n"
                f"{_log_tail(settings)}"
            )
        time.sleep(0.25)


def terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM ``pid``, SIGKILL it if still alive after ``timeout_s``; reap it if ours."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not pid_alive(pid):
            break
    child = CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)


def stop_background(settings: Settings, *, timeout_s: float = 15.0) -> bool:
    """Stop the server in the pidfile (SIGTERM, then SIGKILL); False if none was running."""
    with locked(settings.serving_dir / "server.lock"):
        pid = _read_pid(settings)
        running = pid is not None and pid_alive(pid) and _is_model_server(pid)
        if running and pid is not None:
            terminate(pid, timeout_s)
        pid_file(settings).unlink(missing_ok=True)
        return running
