"""Unit tests for ``recops.serving.daemon``: pid files, hosts and the state-folder lock.

Starting and stopping a real server is covered by the serving integration tests.
"""

from __future__ import annotations

import os
from pathlib import Path

from recops.serving.daemon import grpc_host, write_pid


def test_write_pid_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "serving" / "server.pid"
    write_pid(path, 123)
    write_pid(path, os.getpid())
    assert path.read_text() == f"{os.getpid()}\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["server.pid"]  # no temp left


def test_grpc_host_brackets_ipv6_only() -> None:
    assert grpc_host("127.0.0.1") == "127.0.0.1"
    assert grpc_host("::1") == "[::1]"
    assert grpc_host("[::1]") == "[::1]"


def test_the_daemon_helpers_the_service_shares_are_public() -> None:
    import subprocess
    import sys

    from recops.serving import daemon

    assert {"CHILDREN", "pid_alive", "terminate", "grpc_answers"} <= set(daemon.__all__)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    daemon.CHILDREN[child.pid] = child
    assert daemon.pid_alive(child.pid)
    daemon.terminate(child.pid, 5.0)
    assert not daemon.pid_alive(child.pid) and child.pid not in daemon.CHILDREN
    assert not daemon.grpc_answers("127.0.0.1", 9, 0.5)
