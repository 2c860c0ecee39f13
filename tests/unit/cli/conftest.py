"""Fixtures of the ``recops`` CLI tests: an empty home, and a home with synthetic data."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def private_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Free serving and service ports for every test here.

    Servers someone runs on this machine's default ports (a demo's model server or
    recommendation service) must not answer for a test's home.
    """
    for variable in ("RECOPS_REST_PORT", "RECOPS_GRPC_PORT", "RECOPS_RECOMMEND_PORT"):
        monkeypatch.setenv(variable, str(free_port()))


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("RECOPS_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "RECOPS_LEDGER_URL", "RECOPS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="module")
def synth_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with 500 synthetic interactions, landed by `recops data synth --json`."""
    return tmp_path_factory.mktemp("synth") / "home"
