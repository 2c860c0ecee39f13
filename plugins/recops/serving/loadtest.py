"""Open-loop load generator for a TF Serving endpoint (ours or a real one), REST or gRPC.

``run_load(LoadConfig(...)) -> LoadResult``: requests are *scheduled* at a fixed rate
(request ``i`` at ``start + i / qps``) and handed to a thread pool, whatever the server's
pace. Latency is measured from the scheduled time, not from when a worker got to it, so a
server that falls behind shows up in p99 instead of silently lowering the offered load
(the "coordinated omission" a closed loop suffers from).

The canary stage of ``recops.serving.rollout`` uses it, as do the tests and
``python -m benchmarks.serving``. Only the standard library is needed for REST; gRPC
imports ``grpc`` and the ``tensorflow_serving`` protos (and so TensorFlow).
"""

from __future__ import annotations

import http.client
import json
import math
import re
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from recops.errors import ParamError
from recops.records import Record

__all__ = ["LoadConfig", "LoadResult", "percentile", "run_load"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: Error texts kept in the result (the count is always exact).
_MAX_ERROR_SAMPLES = 5


@dataclass(frozen=True, kw_only=True)
class LoadConfig(Record):
    """One load run.

    Attributes:
        model: Served model name.
        instances: Row-format instances sent in every request (the batch).
        host: Server host.
        rest_port: REST port (used when ``protocol`` is ``"rest"``).
        grpc_port: gRPC port (used when ``protocol`` is ``"grpc"``).
        label: Version label to address (exclusive with ``version``).
        version: Version to address (exclusive with ``label``); neither means the latest.
        qps: Target requests per second (open loop).
        duration_s: How long requests are scheduled for.
        concurrency: Worker threads (the most requests in flight at once).
        protocol: ``"rest"`` or ``"grpc"``.
        timeout_s: Per-request timeout.
        signature_name: Signature to call; empty means ``serving_default``.
    """

    model: str
    instances: list[dict[str, Any]]
    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500
    label: str | None = None
    version: int | None = None
    qps: float = 50.0
    duration_s: float = 5.0
    concurrency: int = 8
    protocol: str = "rest"
    timeout_s: float = 10.0
    signature_name: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.model):
            raise ParamError(f"model {self.model!r}: use letters, digits, '_', '.', '-'")
        if not self.instances or not all(isinstance(i, dict) for i in self.instances):
            raise ParamError("instances must be a non-empty list of objects (row format)")
        if self.label is not None and self.version is not None:
            raise ParamError("give a label or a version, not both")
        if self.label is not None and not _NAME.fullmatch(self.label):
            raise ParamError(f"label {self.label!r}: use letters, digits, '_', '.', '-'")
        if self.version is not None and (isinstance(self.version, bool) or self.version < 1):
            raise ParamError(f"version must be a positive integer, got {self.version!r}")
        if not (math.isfinite(self.qps) and self.qps > 0):
            raise ParamError(f"qps must be positive, got {self.qps}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ParamError(f"duration_s must be positive, got {self.duration_s}")
        if self.concurrency < 1:
            raise ParamError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.protocol not in ("rest", "grpc"):
            raise ParamError(f"protocol {self.protocol!r}: expected 'rest' or 'grpc'")
        if self.timeout_s <= 0:
            raise ParamError(f"timeout_s must be positive, got {self.timeout_s}")


@dataclass(frozen=True, kw_only=True)
class LoadResult(Record):
    """What a load run measured.

    Attributes:
        sent: Requests sent.
        ok: Requests answered with success.
        errors: Requests that failed (error status, timeout, connection error).
        achieved_qps: Successful requests per second of wall time (first send to last
            answer).
        p50_ms: Median latency of all requests, from their scheduled send time.
        p99_ms: 99th percentile latency, same clock.
        error_samples: Up to five error texts.
        target_qps: The rate asked for.
        duration_s: Wall time from the first send to the last answer.
        protocol: ``"rest"`` or ``"grpc"``.
        batch: Instances per request.
    """

    sent: int
    ok: int
    errors: int
    achieved_qps: float
    p50_ms: float
    p99_ms: float
    error_samples: list[str] = field(default_factory=list)
    target_qps: float = 0.0
    duration_s: float = 0.0
    protocol: str = "rest"
    batch: int = 1


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class _RestSender:
    """One keep-alive HTTP connection per worker thread, re-opened after any failure."""

    def __init__(self, config: LoadConfig) -> None:
        path = f"/v1/models/{urllib.parse.quote(config.model, safe='')}"
        if config.version is not None:
            path += f"/versions/{config.version}"
        elif config.label is not None:
            path += f"/labels/{urllib.parse.quote(config.label, safe='')}"
        self.path = path + ":predict"
        payload: dict[str, Any] = {"instances": config.instances}
        if config.signature_name:
            payload["signature_name"] = config.signature_name
        self.body = json.dumps(payload).encode("utf-8")
        self.host = config.host
        self.port = config.rest_port
        self.timeout_s = config.timeout_s
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def send(self) -> None:
        conn = self._connection()
        try:
            conn.request(
                "POST", self.path, body=self.body, headers={"Content-Type": "application/json"}
            )
            reply = conn.getresponse()
            data = reply.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        if reply.status != 200:
            try:
                message = str(json.loads(data)["error"])
            except (ValueError, KeyError, TypeError):
                message = data[:200].decode("utf-8", errors="replace")
            raise RuntimeError(f"HTTP {reply.status}: {message}")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()


class _GrpcSender:
    """One channel; the request is serialized once and sent as bytes."""

    def __init__(self, config: LoadConfig) -> None:
        import grpc
        import numpy as np
        from recops_models.tf_env import tensorflow

        tf = tensorflow()
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = config.model
        if config.version is not None:
            request.model_spec.version.value = config.version
        elif config.label is not None:
            request.model_spec.version_label = config.label
        request.model_spec.signature_name = config.signature_name or "serving_default"
        for name in config.instances[0]:
            column = [row[name] for row in config.instances]
            request.inputs[name].CopyFrom(tf.make_tensor_proto(_column_array(np, column)))
        self.request = request.SerializeToString()
        host = f"[{config.host}]" if ":" in config.host else config.host
        self.channel = grpc.insecure_channel(f"{host}:{config.grpc_port}")
        self.call = self.channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=None,
            response_deserializer=None,
        )
        self.timeout_s = config.timeout_s
        self._grpc = grpc

    def send(self) -> None:
        try:
            self.call(self.request, timeout=self.timeout_s)
        except self._grpc.RpcError as exc:
            raise RuntimeError(f"{exc.code().name}: {exc.details()}") from None

    def close(self) -> None:
        self.channel.close()


def _column_array(np: Any, column: list[Any]) -> Any:
    """A batch column as the dtype TF Serving signatures use: int64, float32 or bytes."""
    sample = column[0]
    while isinstance(sample, list) and sample:
        sample = sample[0]
    if isinstance(sample, bool):
        return np.asarray(column, dtype=bool)
    if isinstance(sample, int):
        return np.asarray(column, dtype=np.int64)
    if isinstance(sample, float):
        return np.asarray(column, dtype=np.float32)
    if isinstance(sample, str):
        return np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(np.asarray(column))
    raise ParamError(f"cannot send {type(sample).__name__} values over gRPC")


def run_load(config: LoadConfig) -> LoadResult:
    """Send ``config.qps`` requests per second for ``config.duration_s`` seconds.

    Args:
        config: Target, request and pacing.

    Returns:
        Counts, achieved rate and latency percentiles; errors never raise, they are counted
        (with a few samples) so the caller decides what a failure is.
    """
    sender: _RestSender | _GrpcSender = (
        _RestSender(config) if config.protocol == "rest" else _GrpcSender(config)
    )
    total = max(1, round(config.qps * config.duration_s))
    latencies: list[float] = []
    samples: list[str] = []
    counts = {"ok": 0, "errors": 0}
    lock = threading.Lock()
    last_done = [0.0]

    def one(scheduled: float) -> None:
        try:
            sender.send()
            error = None
        except Exception as exc:  # counted, never raised: the result reports them
            error = f"{type(exc).__name__}: {exc}"[:300]
        done = time.perf_counter()
        with lock:
            latencies.append((done - scheduled) * 1000.0)
            last_done[0] = max(last_done[0], done)
            if error is None:
                counts["ok"] += 1
            else:
                counts["errors"] += 1
                if len(samples) < _MAX_ERROR_SAMPLES:
                    samples.append(error)

    try:
        with ThreadPoolExecutor(config.concurrency, thread_name_prefix="load") as pool:
            start = time.perf_counter()
            for index in range(total):
                scheduled = start + index / config.qps
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(one, scheduled)
    finally:
        sender.close()
    elapsed = max(last_done[0] - start, 1e-9)
    return LoadResult(
        sent=total,
        ok=counts["ok"],
        errors=counts["errors"],
        achieved_qps=round(counts["ok"] / elapsed, 2),
        p50_ms=round(percentile(latencies, 50), 3),
        p99_ms=round(percentile(latencies, 99), 3),
        error_samples=samples,
        target_qps=config.qps,
        duration_s=round(elapsed, 3),
        protocol=config.protocol,
        batch=len(config.instances),
    )
