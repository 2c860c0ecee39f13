"""The `stack` fixture: the real Airflow and recops CLIs against an isolated state folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from recops.config import Settings, airflow_env

BIN = Path(sys.executable).parent


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM a process and its group; SIGKILL after ``timeout``.

    ``proc`` must have been started with ``start_new_session=True``.
    """
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    """An isolated RECOPS_HOME + AIRFLOW_HOME with its own serving ports."""

    settings: Settings
    env: dict[str, str]

    def _run(
        self, exe: str, args: tuple[str, ...], timeout: int
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / exe), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def airflow(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        return self._run("airflow", args, timeout)

    def recops(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        return self._run("recops", args, timeout)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    home = tmp_path / "recops"
    # Ports of its own for every server a stack may start or ask (a recommendation
    # service left on the default port by `make demo` must never answer for this home).
    ports = {
        name: str(free_port())
        for name in ("RECOPS_GRPC_PORT", "RECOPS_REST_PORT", "RECOPS_RECOMMEND_PORT")
    }
    monkeypatch.setenv("RECOPS_HOME", str(home))
    for key, value in ports.items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("AIRFLOW")]:
        monkeypatch.delenv(key)
    settings = Settings.from_env()
    env = {**os.environ, **airflow_env(settings), **ports, "PYTHONUNBUFFERED": "1"}
    s = Stack(settings=settings, env=env)
    migrated = s.airflow("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    yield s
    from recops.serving.server import stop_background

    stop_background(settings)
