"""``benchmarks/recommend.py``'s service part: the paced loop and the ``/metrics`` reading."""

from __future__ import annotations

import pytest
from recops.service.metrics import ServiceMetrics


def test_stage_summary_reads_what_the_service_histograms_saw_between_scrapes() -> None:
    from benchmarks._recommend_service import stage_summary

    metrics = ServiceMetrics()
    metrics.stage_latency.labels(stage="retrieval").observe(0.1)  # before: not counted
    before = metrics.render().decode()
    for seconds in (0.0008, 0.0009, 0.004):
        metrics.stage_latency.labels(stage="retrieval").observe(seconds)
    metrics.latency.labels(route="/v1/recommendations").observe(0.006)
    metrics.latency.labels(route="/metrics").observe(0.5)
    summary = stage_summary(before, metrics.render().decode())
    assert summary["retrieval"]["n"] == 3
    assert summary["retrieval"]["mean_ms"] == pytest.approx((0.8 + 0.9 + 4.0) / 3, abs=1e-3)
    assert summary["retrieval"]["p50_le_ms"] == 1.0 and summary["retrieval"]["p99_le_ms"] == 5.0
    assert summary["request"]["n"] == 1, "only the recommendations route counts as a request"


def test_paced_loop_keeps_its_rate_counts_errors_and_never_overlaps() -> None:
    from benchmarks._common import paced_loop

    sent: list[int] = []

    def send(i: int) -> None:
        sent.append(i)
        if i % 4 == 3:
            raise RuntimeError(f"no answer for {i}")

    run = paced_loop(send, rate=200.0, seconds=0.25)
    assert sent == list(range(run["requests"])), "in order, one at a time"
    assert run["requests"] == 50, "every send due before the end goes out"
    assert run["errors"] == len([i for i in sent if i % 4 == 3])
    assert len(run["latencies_ms"]) == run["requests"] - run["errors"]
    assert run["error_samples"][0] == "RuntimeError: no answer for 3"
