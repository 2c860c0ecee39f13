"""Interleaved latency: every runner is timed at every batch size; runners call the
model with requests built from its signature."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from recops.compression.latency import (
    LATENCY_BATCHES,
    load_memories,
    make_runners,
    measure_latency,
)
from recops.training import TrainResult


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


def test_runners_build_requests_from_the_signature(tiny_two_tower: TrainResult) -> None:
    # The users table's columns named by the signature's inputs: no feature is named.
    rows = [
        {"name": "float", "status": "ok", "serves": "saved_model",
         "model_dir": tiny_two_tower.model_dir},
        {"name": "broken", "status": "failed", "serves": "saved_model", "model_dir": ""},
    ]  # fmt: skip
    train_dir = Path(tiny_two_tower.model_dir).parent
    users_uri = json.loads((train_dir / "config.json").read_text())["users_uri"]
    runners = make_runners(rows, train_dir, users_uri)
    assert set(runners) == {"float"} and set(runners["float"]) == set(LATENCY_BATCHES)
    for batch in LATENCY_BATCHES:
        scores = runners["float"][batch]()
        assert scores.shape == (batch, tiny_two_tower.k) and np.isfinite(scores).all()


def test_load_memories_probes_each_model_once_and_a_failed_probe_is_none(tmp_path: Path) -> None:
    # A positive figure: test_selection's test_select_measures_load_memory.
    assert load_memories([]) == {}
    missing = str(tmp_path / "no-model")
    assert load_memories([missing, missing]) == {missing: None}
