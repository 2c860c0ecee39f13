"""Unit tests for ``recops.serving.service_canary``: the stable/canary comparison.

``compare`` is judged on hand-made answers; ``compare_through_service`` on a real HTTP
server (the standard library's) that answers like the service does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from recops.serving.rollout_config import ServiceCanary
from recops.serving.service_canary import Answer, compare, compare_through_service


def _answer(items: list[int], version: int, ms: float = 2.0, **kw: Any) -> Answer:
    scores = [1.0 / (1 + i) for i in range(len(items))]
    return Answer(True, ms, {"retrieval": version, "ranking": None}, items, scores, **kw)


def test_a_healthy_canary_passes_and_its_differences_are_reported() -> None:
    stable = [_answer([1, 2, 3, 4], 1) for _ in range(10)]
    canary = [_answer([1, 2, 9, 8], 2, ms=3.0) for _ in range(10)]
    report, reasons = compare(stable, canary, role="retrieval", version=2, k=4, slo_p99_ms=50.0)
    assert reasons == []
    assert report["top4_overlap"] == 0.5
    assert report["errors"] == {"stable": 0, "canary": 0}
    assert report["p50_ms"] == {"stable": 2.0, "canary": 3.0}
    assert report["versions"]["canary"]["retrieval"] == 2
    assert report["score_psi"] is not None and report["score_psi"] >= 0.0


def test_failed_or_misrouted_or_slow_canary_answers_are_reasons_to_reject() -> None:
    stable = [_answer([1, 2], 1) for _ in range(4)]
    canary = [
        Answer(False, 1.0, error="HTTP 503: b'retrieval did not answer'"),
        _answer([1, 2], 1),  # stable answered where the canary was asked
        _answer([1, 2], 2, ms=80.0),
        _answer([1, 2], 2),
    ]
    report, reasons = compare(stable, canary, role="retrieval", version=2, k=2, slo_p99_ms=50.0)
    assert report["errors"]["canary"] == 1
    text = "\n".join(reasons)
    assert "1 of 4 canary requests failed (e.g. HTTP 503" in text
    assert "1 of 4 canary answers came from retrieval v1, not v2" in text
    assert "canary p99 78.4 ms through the service exceeds the SLO of 50.0 ms" in text


def test_the_guards_reject_a_canary_that_strays_from_stable() -> None:
    stable = [_answer([1, 2, 3, 4], 1) for _ in range(10)]
    strayed = [
        Answer(True, 2.0, {"retrieval": 2, "ranking": None}, [5, 6, 7, 8], [50.0 + i] * 4)
        for i in range(10)
    ]

    def judged(canary: list[Answer], **guards: float) -> tuple[dict[str, Any], list[str]]:
        return compare(stable, canary, role="retrieval", version=2, k=4, slo_p99_ms=50.0, **guards)

    report, reasons = judged(strayed)
    assert reasons == [] and report["top4_overlap"] == 0.0 and report["score_psi"] > 1.0
    _, reasons = judged(strayed, max_score_psi=0.25, min_top_overlap=0.5)
    assert [r.split(":")[0] for r in reasons] == ["SERVICE SCORE PSI", "SERVICE TOP-4 OVERLAP"]
    # The same guards pass a canary close to stable.
    assert judged([_answer([1, 2, 3, 9], 2) for _ in range(10)], max_score_psi=0.25,
                  min_top_overlap=0.5)[1] == []  # fmt: skip


def test_stable_errors_are_reported_but_do_not_block_the_canary() -> None:
    stable = [Answer(False, 1.0, error="timeout"), _answer([1], 1)]
    canary = [_answer([1], 2), _answer([1], 2)]
    report, reasons = compare(stable, canary, role="retrieval", version=2, k=1, slo_p99_ms=50.0)
    assert reasons == [] and report["errors"] == {"stable": 1, "canary": 0}
    assert report["top1_overlap"] == 1.0  # over the users both variants answered


class _Service(BaseHTTPRequestHandler):
    """Answers like the service: ``canary`` serves v2 only after ``ready`` requests."""

    asked: list[tuple[str, str]] = []
    ready_after = 3

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        query = parse_qs(urlsplit(self.path).query)
        user, variant = query["user_id"][0], query["variant"][0]
        self.asked.append((user, variant))
        canary_up = sum(v == "canary" for _, v in self.asked) > self.ready_after
        version = 2 if variant == "canary" and canary_up else 1
        body = json.dumps({
            "user_id": user,
            "items": [{"item_id": version * 10 + i, "score": 1.0 - i / 10, "source": "retrieval"}
                      for i in range(3)],
            "model_versions": {"retrieval": version, "ranking": None},
            "variant": variant,
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def service() -> Iterator[str]:
    _Service.asked, _Service.ready_after = [], 3
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_it_waits_for_the_canary_then_asks_each_user_on_both_variants(service: str) -> None:
    probe = ServiceCanary(url=service, dataset="d", role="retrieval", users=["7", "8"], k=3)
    report, reasons = compare_through_service(probe, version=2, slo_p99_ms=5000.0)
    assert reasons == []
    assert report["versions"] == {
        "stable": {"retrieval": 1, "ranking": None},
        "canary": {"retrieval": 2, "ranking": None},
    }
    assert report["top3_overlap"] == 0.0
    # Polled until v2 answered, then each user once per variant, interleaved.
    assert _Service.asked[-4:] == [("7", "stable"), ("7", "canary"), ("8", "stable"),
                                   ("8", "canary")]  # fmt: skip


def test_a_service_that_never_serves_the_canary_rejects_it(service: str) -> None:
    _Service.ready_after = 0  # v2 behind canary at once, never the v3 asked for
    probe = ServiceCanary(url=service, dataset="d", role="retrieval", users=["7"], wait_s=0.5)
    report, reasons = compare_through_service(probe, version=3, slo_p99_ms=5000.0)
    assert len(reasons) == 1
    assert "did not answer with retrieval v3 behind 'canary' within 0 s" in reasons[0]
    assert report["last_answer"] == {"retrieval": 2, "ranking": None}


def test_a_service_that_does_not_listen_rejects_the_canary() -> None:
    from tests.support.stack import free_port

    probe = ServiceCanary(url=f"http://127.0.0.1:{free_port()}", dataset="d",
                          role="retrieval", users=["7"], wait_s=0.3)  # fmt: skip
    _, reasons = compare_through_service(probe, version=2, slo_p99_ms=5000.0)
    assert "ConnectionRefusedError" in reasons[0]
