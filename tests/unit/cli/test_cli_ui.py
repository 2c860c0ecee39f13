"""``recops.cli.ui``: "ready" only once a UI answers, a failed one named with its log."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from recops.cli.ui import Probe, http_answers, wait_until_ready


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_ready_lines_name_each_ui_with_its_time_and_failures_with_their_log(
    tmp_path: Path,
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    try:
        assert http_answers(f"{base}/health", ok_only=True)
        assert http_answers(f"{base}/missing") and not http_answers(f"{base}/missing", ok_only=True)
        printed: list[str] = []
        took = wait_until_ready(
            [
                Probe("Up", base, lambda: http_answers(f"{base}/health"), tmp_path / "up.log"),
                Probe("Crashed", base, lambda: False, tmp_path / "crashed.log", proc=dead),
                Probe("Silent", base, lambda: False, tmp_path / "silent.log", timeout_s=0.2),
            ],
            poll_s=0.05,
            echo=printed.append,
        )
    finally:
        server.shutdown()
    assert took["Up"] is not None and took["Crashed"] is None and took["Silent"] is None
    assert printed[0].startswith("ready  Up") and printed[0].endswith(" s)")
    assert printed[1].startswith("FAILED Crashed") and "exited with 3" in printed[1]
    assert str(tmp_path / "crashed.log") in printed[1]
    assert printed[2].startswith("FAILED Silent") and str(tmp_path / "silent.log") in printed[2]
    # Nothing is listening on a closed port: no answer, and no exception.
    assert not http_answers("http://127.0.0.1:9/")
