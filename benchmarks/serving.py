"""Serving benchmark: latency and throughput of the local model server (a script, not a test).

    python -m benchmarks.serving [--rate-seconds 8] [--max-seconds 5] [--sustained-seconds 60]

The model is the retrieval contract at ml-100k size: 943 user and 1682 item embeddings of
dimension 64, brute-force scored, top-100 ids and scores out
(``tests.support.contract_model``; the same three signatures the trained two-tower exports,
with random weights, since serving cost does not depend on what the weights learned). Its
inputs are those of a model trained on ``datasets/movielens-100k.yaml``: ``user_id`` and
one input per user attribute of the spec. The requests carry synthetic users of that
spec (``recops.data.synthesize``), one value for exactly each input the SavedModel's
signature takes (``recops.serving.requests.row_instances``).

For REST and gRPC at batch 1, 16 and 64 it measures, with ``recops.serving.loadtest``:

* **at rate**: open-loop load at a fixed offered rate (latency is taken from the scheduled
  send time, so queueing shows up in p99);
* **capacity**: a closed loop, 8 client threads each sending back to back; the achieved
  rate is the throughput ceiling and its latency is per request (service plus queueing).

Then a sustained REST run at ``--sustained-qps`` (batch 1) for ``--sustained-seconds``,
with its error count and p99. The server and the load generator share the machine, so
the figures are for this machine only; ``machine`` in the JSON says what it was. Results
go to ``benchmarks/results/serving.json`` (written atomically), with ``serving.md`` (the
table, and gRPC vs REST ratios) and ``serving.png`` (p50/p99 at the offered rate and
closed-loop QPS, per protocol and batch) beside it; ``--replot`` redraws those two from
an existing JSON (``--out`` names it).
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

from benchmarks._common import (
    RESULTS_DIR,
    free_port,
    log_if_wide,
    pyplot,
    ratio_text,
    redraw,
    save_figure,
    write_atomic,
)

log = logging.getLogger("benchmarks.serving")

MODEL = "recops_retrieval"
N_USERS, N_ITEMS, DIM = 943, 1682, 64
#: Offered rate per batch size for the "at rate" runs (requests per second).
RATES = {1: 100.0, 16: 40.0, 64: 15.0}


def _spec_layout() -> Any:
    """The published layout of the shipped MovieLens-100K spec (the model's features)."""
    from recops.dataset_spec import load_spec
    from recops.layout import SHIPPED_SPECS, layout_from_spec

    return layout_from_spec(load_spec(SHIPPED_SPECS / "movielens-100k.yaml"))


def _request_rows(export: Path) -> Any:
    """A builder of ``batch`` row-format instances for the SavedModel at ``export``.

    Users are synthetic users of the MovieLens spec; the input names and dtypes come from
    the signature itself, so a request holds exactly what the model takes.
    """
    from recops.data import synthesize
    from recops.serving.requests import loaded_inputs, row_instances
    from recops_models.tf_env import tensorflow

    _, users, _ = synthesize(rows=2 * N_USERS, users=N_USERS, items=N_ITEMS, days=30, seed=0)
    signature = tensorflow().saved_model.load(str(export)).signatures["serving_default"]
    inputs = loaded_inputs(signature)

    def instances(batch: int) -> list[dict[str, Any]]:
        rows = users.iloc[[(i * 37) % len(users) for i in range(batch)]]
        return row_instances(rows.reset_index(drop=True), inputs)

    return instances


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument("--rate-seconds", type=float, default=8.0)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--sustained-qps", type=float, default=200.0)
    parser.add_argument("--sustained-seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serving.json",
                        help="the JSON; serving.md/.png go beside it (same name)")  # fmt: skip
    parser.add_argument("--replot", action="store_true", help="redraw the PNG and table from --out")
    args = parser.parse_args(argv)
    if args.replot:
        redraw(args.out, markdown, plot)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    home = Path(tempfile.mkdtemp(prefix="recops-bench-serving-"))
    os.environ["RECOPS_HOME"] = str(home)
    os.environ["RECOPS_GRPC_PORT"] = str(free_port())
    os.environ["RECOPS_REST_PORT"] = str(free_port())
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
        home / "export",
        n_items=N_ITEMS,
        dim=DIM,
        k=100,
        seed=0,
        n_users=N_USERS,
        user_features=_spec_layout().user_features,
    )
    _instances = _request_rows(export)
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
            "inputs": sorted(_instances(1)[0]),
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
    write_atomic(args.out.with_suffix(".md"), markdown(report))
    plot(report, args.out.with_suffix(".png"))
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


# --------------------------------------------------------------------------- output

_COLORS = {"rest": ("#9ebbe0", "#1f5fa8"), "grpc": ("#f5c08f", "#c8600e")}
_NAMES = {"rest": "REST", "grpc": "gRPC"}


def _grid(
    report: dict[str, Any],
) -> tuple[list[str], list[int], dict[tuple[str, int], dict[str, Any]]]:
    rows = report["results"]
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    batches = sorted({int(r["batch"]) for r in rows})
    return protocols, batches, {(r["protocol"], int(r["batch"])): r for r in rows}


def _conditions(report: dict[str, Any]) -> str:
    model, cpus = report["model"], report.get("machine", {}).get("cpus", "?")
    return (
        f"retrieval contract model ({model['users']} users, {model['items']} items, dim "
        f"{model['embedding_dim']}, top-100); server and load generator on one machine, {cpus} CPUs"
    )


def _sustained_line(report: dict[str, Any]) -> str:
    s = report.get("sustained")
    if not s:
        return ""
    return (
        f"sustained {_NAMES.get(s['protocol'], s['protocol'])} batch {s['batch']} "
        f"at {s['target_qps']:.0f} QPS for {s['seconds']:.0f} s: "
        f"{s['achieved_qps']:.1f} QPS achieved, p50 {s['p50_ms']:.1f} ms, "
        f"p99 {s['p99_ms']:.1f} ms, {s['errors']} errors"
    )


def plot(report: dict[str, Any], path: Path) -> None:
    """p50/p99 at the offered rate and closed-loop QPS, per protocol and batch size."""
    plt = pyplot()
    protocols, batches, cell = _grid(report)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.8))
    xs = list(range(len(batches)))
    offered = [
        next((cell[(p, b)]["at_rate"]["target_qps"] for p in protocols if (p, b) in cell), 0.0)
        for b in batches
    ]
    ticks = [f"batch {b}\n{q:.0f} QPS offered" for b, q in zip(batches, offered, strict=True)]

    # Left: latency at the fixed offered rate; per protocol a light p50 and a dark p99 bar.
    series = [(p, q) for p in protocols for q in ("p50_ms", "p99_ms")]
    width = 0.8 / len(series)
    latencies: list[float] = []
    for k, (protocol, key) in enumerate(series):
        values = [
            cell[(protocol, b)]["at_rate"][key] if (protocol, b) in cell else 0.0 for b in batches
        ]
        latencies += values
        shade = _COLORS.get(protocol, ("#cccccc", "#555555"))[key == "p99_ms"]
        bars = left.bar([x + (k - (len(series) - 1) / 2) * width for x in xs], values, width,
                        color=shade, edgecolor="black", linewidth=0.3,
                        label=f"{_NAMES.get(protocol, protocol)} {key[:3]}")  # fmt: skip
        left.bar_label(bars, labels=[f"{v:.1f}" if v < 100 else f"{v:.0f}" for v in values],
                       fontsize=6.5, padding=1)  # fmt: skip
    wide = log_if_wide(left, latencies)
    left.set_ylabel("latency (ms" + (", log)" if wide else ")"))
    left.set_title("Latency at a fixed offered rate (lower is better)", fontsize=10)

    # Right: closed-loop capacity per protocol, with the gRPC / REST ratio above each batch.
    width = 0.8 / len(protocols)
    capacities: list[float] = []
    for k, protocol in enumerate(protocols):
        values = [
            cell[(protocol, b)]["capacity_qps"] if (protocol, b) in cell else 0.0 for b in batches
        ]
        capacities += values
        bars = right.bar([x + (k - (len(protocols) - 1) / 2) * width for x in xs], values, width,
                         color=_COLORS.get(protocol, ("#cccccc", "#555555"))[1], edgecolor="black",
                         linewidth=0.3, label=_NAMES.get(protocol, protocol))  # fmt: skip
        right.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=7.5, padding=1)
    wide_q = log_if_wide(right, capacities)
    top = max(capacities or [1.0])
    if {"rest", "grpc"} <= set(protocols):
        for x, b in zip(xs, batches, strict=True):
            ratio = ratio_text(
                cell.get(("grpc", b), {}).get("capacity_qps"),
                cell.get(("rest", b), {}).get("capacity_qps"),
            )
            right.text(x, top * (1.5 if wide_q else 1.12), f"gRPC/REST\n{ratio}", ha="center",
                       va="bottom", fontsize=8, fontweight="bold")  # fmt: skip
    right.set_ylim(top=top * (4 if wide_q else 1.45))
    right.set_ylabel("requests/s" + (" (log)" if wide_q else ""))
    right.set_title(f"Closed-loop capacity, {report['concurrency']} client threads", fontsize=10)

    for ax in (left, right):
        ax.set_xticks(xs)
        ax.set_xticklabels(ticks, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.margins(y=0.15)
    left.legend(fontsize=7.5, loc="upper left", ncol=2)
    right.legend(fontsize=7.5, loc="upper left")
    names = " vs ".join(_NAMES.get(p, p) for p in protocols)
    lines = [
        f"recops local model server: {names}, batch {'/'.join(map(str, batches))}",
        _conditions(report),
    ]
    if report.get("sustained"):
        lines.append(_sustained_line(report))
    fig.suptitle("\n".join(lines), fontsize=9.5)
    fig.tight_layout()
    save_figure(fig, path)


def markdown(report: dict[str, Any]) -> str:
    """Per protocol and batch: the fixed-rate run, the closed loop; gRPC vs REST; sustained run."""
    protocols, batches, cell = _grid(report)
    lines = [
        f"{_conditions(report)}; closed loop: {report['concurrency']} client threads.",
        "",
        "| protocol | batch | offered QPS | achieved QPS | p50 ms | p99 ms | errors | "
        "capacity QPS | capacity rows/s | closed-loop p50 ms | closed-loop p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for protocol in protocols:
        for b in batches:
            r = cell.get((protocol, b))
            if r is None:
                continue
            a, c = r["at_rate"], r.get("capacity", {})
            lines.append(
                f"| {_NAMES.get(protocol, protocol)} | {b} | {a['target_qps']:.0f} | "
                f"{a['achieved_qps']:.1f} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} | "
                f"{a['errors']} | {r['capacity_qps']:,.1f} | "
                f"{r['capacity_rows_per_s']:,.0f} | {c.get('p50_ms', float('nan')):.2f} | "
                f"{c.get('p99_ms', float('nan')):.2f} |"
            )
    if {"rest", "grpc"} <= set(protocols):
        lines += ["", "gRPC vs REST (above 1: gRPC better):", "",
                  "| batch | p50 REST / gRPC | p99 REST / gRPC | capacity gRPC / REST |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        for b in batches:
            rest, grpc = cell.get(("rest", b)), cell.get(("grpc", b))
            if rest is None or grpc is None:
                continue
            lines.append(
                f"| {b} | {ratio_text(rest['at_rate']['p50_ms'], grpc['at_rate']['p50_ms'])} | "
                f"{ratio_text(rest['at_rate']['p99_ms'], grpc['at_rate']['p99_ms'])} | "
                f"**{ratio_text(grpc['capacity_qps'], rest['capacity_qps'])}** |"
            )
    if report.get("sustained"):
        line = _sustained_line(report)
        lines += ["", line[:1].upper() + line[1:] + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
