"""Interleaved latency: every runner is timed at every batch size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recops.compression.latency import LATENCY_BATCHES, measure_latency


def test_measure_latency_times_every_runner_at_every_batch() -> None:
    calls: dict[str, int] = {"a": 0, "b": 0}

    def runner(name: str) -> Callable[[], Any]:
        def call() -> None:
            calls[name] += 1

        return call

    runners = {name: {b: runner(name) for b in LATENCY_BATCHES} for name in calls}
    out = measure_latency(runners, calls=5, warmup=2)
    # (warm-up + timed calls) per batch size, for each runner.
    assert calls == {"a": 7 * len(LATENCY_BATCHES), "b": 7 * len(LATENCY_BATCHES)}
    for name in calls:
        for batch in LATENCY_BATCHES:
            figures = out[name]
            assert figures[f"p99_ms_b{batch}"] >= figures[f"p50_ms_b{batch}"] >= 0
            assert figures[f"rows_per_s_b{batch}"] > 0
            assert f"cpu_p50_ms_b{batch}" in figures
