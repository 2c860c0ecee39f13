"""What serving a model costs: interleaved latency per batch size and load memory.

``make_runners`` turns each ok row of the selection table into zero-argument callables
(the SavedModel's ``serving_default`` or the TFLite interpreter), ``measure_latency``
times them side by side, and ``load_memory`` measures a SavedModel's RSS growth in a
fresh subprocess (one per model, so models do not share an allocator; ``load_memories``
runs those side by side).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from recops_models.tf_env import TF_ENV, tensorflow

from recops.rank_signature import signature_request
from recops.tables import read_entities

__all__ = [
    "LATENCY_BATCHES",
    "load_memories",
    "load_memory",
    "make_runners",
    "measure_latency",
]

log = logging.getLogger(__name__)

#: Batch sizes every model is timed at: one user (online) and a batch of 64.
LATENCY_BATCHES = (1, 64)


def _latency_users(users_uri: str, spec: Any, batch: int) -> pd.DataFrame:
    """``batch`` rows of the users table (cycled), with the model's user features."""
    names = [f.name for f in spec.user_features]
    users = read_entities(users_uri, "user_id", names, "users")
    return users.iloc[np.arange(batch) % len(users)].reset_index(drop=True)


def make_runners(
    rows: Sequence[Mapping[str, Any]], train_dir: Path, users_uri: str
) -> dict[str, dict[int, Callable[[], Any]]]:
    """Zero-argument callables per ok row and batch size: SavedModel ``serving_default``
    for SavedModel rows, the TFLite interpreter for TFLite rows.

    Requests are built from the users table's columns named by each signature's inputs
    (the model's user features), so no feature is named here.
    """
    tf = tensorflow()
    from recops_models.two_tower import TwoTowerSpec

    spec = TwoTowerSpec.from_json((train_dir / "weights" / "spec.json").read_text())
    users = {b: _latency_users(users_uri, spec, b) for b in LATENCY_BATCHES}
    runners: dict[str, dict[int, Callable[[], Any]]] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        if row["serves"] == "saved_model":
            signature = tf.saved_model.load(row["model_dir"]).signatures["serving_default"]
            runners[row["name"]] = {
                b: functools.partial(
                    _call_signature,
                    signature,
                    signature_request(signature, users[b], **_no_history(b)),
                )
                for b in LATENCY_BATCHES
            }
        elif row.get("tflite_uri"):
            from recops_models.edge import TFLiteScorer, edge_inputs

            scorer = TFLiteScorer(Path(row["tflite_uri"]).read_bytes())
            prepared = {
                b: edge_inputs(spec, {c: users[b][c].to_numpy() for c in users[b].columns})
                for b in LATENCY_BATCHES
            }
            runners[row["name"]] = {
                b: functools.partial(scorer, prepared[b]) for b in LATENCY_BATCHES
            }
    return runners


def _no_history(batch: int) -> dict[str, np.ndarray]:
    """An empty history per row (one pad column), so every variant masks alike."""
    from recops_models.two_tower import HISTORY_INPUT, HISTORY_PAD

    return {HISTORY_INPUT: np.full((batch, 1), HISTORY_PAD, np.int64)}


def _call_signature(signature: Any, inputs: Mapping[str, Any]) -> Any:
    # .numpy() so the timing covers the whole request, output copied out included.
    return signature(**inputs)["scores"].numpy()


def measure_latency(
    runners: Mapping[str, Mapping[int, Callable[[], Any]]], calls: int, warmup: int
) -> dict[str, dict[str, float]]:
    """p50/p99 wall ms, rows/s and median CPU ms per runner and batch size, interleaved.

    Each round calls every runner once, in a fresh random order, so drift in machine
    load hits all models alike and no model always follows the same neighbour (a
    runtime whose threads linger after a call slows whoever comes next).
    """
    names = list(runners)
    out: dict[str, dict[str, float]] = {name: {} for name in names}
    rng = np.random.default_rng(0)
    for batch in LATENCY_BATCHES:
        for name in names:
            for _ in range(warmup):
                runners[name][batch]()
        timings: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(calls):
            for index in rng.permutation(len(names)):
                name = names[index]
                start, start_cpu = time.perf_counter(), time.process_time()
                runners[name][batch]()
                timings[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        for name in names:
            seconds = np.asarray(timings[name])
            out[name][f"p50_ms_b{batch}"] = float(np.percentile(seconds, 50) * 1e3)
            out[name][f"p99_ms_b{batch}"] = float(np.percentile(seconds, 99) * 1e3)
            out[name][f"rows_per_s_b{batch}"] = float(batch / seconds.mean())
            # CPU time of the whole process per call: the model's cost without the
            # wall-clock stalls other processes cause on a shared machine.
            out[name][f"cpu_p50_ms_b{batch}"] = float(np.percentile(cpu[name], 50) * 1e3)
    return out


_MEMORY_PROBE = """
import json, os, resource, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import psutil
import tensorflow as tf
tf.constant(1.0) + 1.0
proc = psutil.Process()
before = proc.memory_info().rss
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures["serving_default"]
# One neutral value per input: an empty string, a missing number, user id 1.
_, inputs = serve.structured_input_signature
# A rank-2 input (the seen-item history) gets one padding entry.
serve(**{
    name: tf.constant([[-1]], spec.dtype) if spec.shape.rank == 2
    else tf.constant([""]) if spec.dtype == tf.string
    else tf.constant([1 if spec.dtype.is_integer else float("nan")], spec.dtype)
    for name, spec in inputs.items()
})
after = proc.memory_info().rss
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "after": after, "peak": peak}))
"""


def load_memories(model_dirs: Sequence[str]) -> dict[str, int | None]:
    """``load_memory`` of each SavedModel, up to one probe per CPU at a time.

    Each probe is its own process, so running them side by side changes no figure (RSS
    is per process) while the TensorFlow start-ups, most of a probe's time, overlap.
    """
    from concurrent.futures import ThreadPoolExecutor

    unique = list(dict.fromkeys(model_dirs))
    if not unique:
        return {}
    with ThreadPoolExecutor(max_workers=min(len(unique), os.cpu_count() or 1)) as pool:
        return dict(zip(unique, pool.map(load_memory, unique), strict=True))


def load_memory(model_dir: str) -> int | None:
    """RSS growth from loading a SavedModel and serving one request, in a fresh process.

    ``max(after, peak) - before``, where ``before`` is the RSS with the TF runtime up. A
    probe that fails yields None (logged), not a failed selection.
    """
    # TF_ENV wins over the parent's values: the probe imports TensorFlow and must select
    # tf_keras as this process did.
    env = {**os.environ, **TF_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, model_dir],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        log.warning("memory probe of %s failed: %s", model_dir, proc.stderr[-500:])
        return None
    probe = json.loads(lines[-1])
    return int(max(probe["after"], probe["peak"]) - probe["before"])
