"""Serving benchmark: latency and throughput of the local model server (a script, not a test).

    python -m benchmarks.serving [--rate-seconds 8] [--max-seconds 5] [--sustained-seconds 60]

The model is the retrieval contract at ml-100k size: 943 user and 1682 item embeddings of
dimension 64, brute-force scored, top-100 ids and scores out
(``tests.support.contract_model``; the same three signatures the trained two-tower exports,
with random weights, since serving cost does not depend on what the weights learned).

For REST and gRPC at batch 1, 16 and 64 it measures, with ``recops.serving.loadtest``:

* **at rate**: open-loop load at a fixed offered rate (latency is taken from the scheduled
  send time, so queueing shows up in p99);
* **capacity**: a closed loop, 8 client threads each sending back to back; the achieved
  rate is the throughput ceiling and its latency is per request (service plus queueing).

Then a sustained REST run at ``--sustained-qps`` (batch 1) for ``--sustained-seconds``,
with its error count and p99. The server and the load generator share the machine, so
the figures are for this machine only; ``machine`` in the JSON says what it was. Results
go to ``benchmarks/results/serving.json`` (written atomically).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("benchmarks.serving")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODEL = "recops_retrieval"
N_USERS, N_ITEMS, DIM = 943, 1682, 64
#: Offered rate per batch size for the "at rate" runs (requests per second).
RATES = {1: 100.0, 16: 40.0, 64: 15.0}


def _instances(batch: int) -> list[dict[str, Any]]:
    genders, jobs = ("F", "M"), ("writer", "engineer", "student", "artist")
    return [
        {
            "user_id": 1 + (i * 37) % N_USERS,
            "age": 18 + i % 50,
            "gender": genders[i % 2],
            "occupation": jobs[i % 4],
        }
        for i in range(batch)
    ]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument("--rate-seconds", type=float, default=8.0)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--sustained-qps", type=float, default=200.0)
    parser.add_argument("--sustained-seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serving.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    home = Path(tempfile.mkdtemp(prefix="recops-bench-serving-"))
    os.environ["RECOPS_HOME"] = str(home)
    os.environ["RECOPS_GRPC_PORT"] = str(_free_port())
    os.environ["RECOPS_REST_PORT"] = str(_free_port())
    os.environ.pop("RECOPS_TFSERVING_GRPC", None)
    os.environ.pop("RECOPS_TFSERVING_REST", None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from recops.config import Settings
    from recops.serving import models_config as mc
    from recops.serving.loadtest import (
        LoadConfig,
        _GrpcSender,
        _RestSender,
        run_load,
    )
    from recops.serving.server import start_background, stop_background

    from benchmarks._common import closed_loop as run_closed_loop
    from tests.support.contract_model import export_contract_model

    settings = Settings.from_env()
    export = export_contract_model(
        home / "export", n_items=N_ITEMS, dim=DIM, k=100, seed=0, n_users=N_USERS
    )
    shutil.copytree(export, settings.model_base_path / MODEL / "1")
    entry = mc.make_model_config(
        name=MODEL, base_path=settings.model_base_path / MODEL, versions=[1], labels={"stable": 1}
    )
    mc.write_config(settings.models_config_path, mc.with_model(mc.empty_config(), entry))
    start_background(settings)

    def load(protocol: str, batch: int, qps: float, seconds: float) -> dict[str, Any]:
        result = run_load(
            LoadConfig(
                model=MODEL,
                instances=_instances(batch),
                rest_port=settings.rest_port,
                grpc_port=settings.grpc_port,
                label="stable",
                qps=qps,
                duration_s=seconds,
                concurrency=args.concurrency,
                protocol=protocol,
                timeout_s=30.0,
            )
        ).to_dict()
        log.info(
            "%s batch %d at %.0f QPS: ok %d/%d, achieved %.1f QPS, p50 %.1f ms, p99 %.1f ms",
            protocol,
            batch,
            qps,
            result["ok"],
            result["sent"],
            result["achieved_qps"],
            result["p50_ms"],
            result["p99_ms"],
        )
        return result

    def closed_loop(protocol: str, batch: int, seconds: float) -> dict[str, Any]:
        config = LoadConfig(
            model=MODEL,
            instances=_instances(batch),
            rest_port=settings.rest_port,
            grpc_port=settings.grpc_port,
            label="stable",
            qps=1.0,
            duration_s=seconds,
            concurrency=args.concurrency,
            protocol=protocol,
            timeout_s=30.0,
        )
        sender = _RestSender(config) if protocol == "rest" else _GrpcSender(config)
        result = run_closed_loop(sender, seconds, args.concurrency)
        result["achieved_qps"] = result.pop("qps")
        log.info("%s batch %d closed loop: %s", protocol, batch, result)
        return result

    rows: list[dict[str, Any]] = []
    started = time.time()
    try:
        for protocol in ("rest", "grpc"):
            load(protocol, 1, 20.0, 1.0)  # warm the client path and the server's threads
            for batch, qps in RATES.items():
                at_rate = load(protocol, batch, qps, args.rate_seconds)
                capacity = closed_loop(protocol, batch, args.max_seconds)
                rows.append(
                    {
                        "protocol": protocol,
                        "batch": batch,
                        "at_rate": at_rate,
                        "capacity_qps": capacity["achieved_qps"],
                        "capacity_rows_per_s": round(capacity["achieved_qps"] * batch, 1),
                        "capacity": capacity,
                    }
                )
        sustained = load("rest", 1, args.sustained_qps, args.sustained_seconds)
    finally:
        stop_background(settings)
        shutil.rmtree(home, ignore_errors=True)

    report = {
        "benchmark": "serving",
        "model": {
            "kind": "retrieval contract SavedModel (random weights), brute-force top-100",
            "users": N_USERS,
            "items": N_ITEMS,
            "embedding_dim": DIM,
        },
        "server": "recops local TF Serving-compatible server (Python, 1 process)",
        "load_generator": "recops.serving.loadtest, open loop, same machine",
        "concurrency": args.concurrency,
        "results": rows,
        "sustained": {
            "protocol": "rest",
            "batch": 1,
            "target_qps": args.sustained_qps,
            "seconds": args.sustained_seconds,
            "errors": sustained["errors"],
            "achieved_qps": sustained["achieved_qps"],
            "p50_ms": sustained["p50_ms"],
            "p99_ms": sustained["p99_ms"],
            "detail": sustained,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_after": list(os.getloadavg()),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "wall_s": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.out)
    summary = {
        "results": [_summary(r) for r in rows],
        "sustained": {k: v for k, v in report["sustained"].items() if k != "detail"},
    }
    print(json.dumps(summary, indent=1))
    return 0


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    rate = row["at_rate"]
    return {
        "protocol": row["protocol"],
        "batch": row["batch"],
        "offered_qps": rate["target_qps"],
        "p50_ms": rate["p50_ms"],
        "p99_ms": rate["p99_ms"],
        "errors": rate["errors"],
        "capacity_qps": row["capacity_qps"],
    }


if __name__ == "__main__":
    sys.exit(main())
