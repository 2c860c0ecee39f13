"""Served-model benchmark on the demo state: compressed vs float, and the recommend path.

    python -m benchmarks.recommend [--users 200] [--rate-seconds 6] [--max-seconds 4]
                                   [--seconds 60] [--rate 100]
                                   [--skip-compressed] [--skip-service]

Needs the state ``make demo`` (or ``recops run --dataset NAME``) leaves under
``RECOPS_HOME`` (default ``./.recops``): a trained, registered and served retrieval and
ranking model of the dataset ``RECOPS_DATASET`` names (for MovieLens-100K
``recops_retrieval`` and ``recops_ranking``).

**Compressed vs uncompressed.** The served retrieval version (``stable`` in the serving
config) is the compressed variant the nightly selected; its float SavedModel is the
baseline row of the selection table logged with that registry version
(``compression/table/variants.json``). Both are copied into a private server (fresh
folder, free ports, so the demo's server is untouched) as two versions of one model and
get the same load, interleaved per protocol and batch size (REST and gRPC; batch 1, 16,
64), each request holding real users' rows for exactly the inputs the SavedModel's
``serving_default`` takes (``user_id`` and one per user attribute of the dataset's spec):
an open-loop run at a fixed offered rate (p50/p99 from the scheduled send time) and a
closed loop of ``--concurrency`` threads (the throughput ceiling). Sizes on disk and
gzipped sit beside them; ratios are float / compressed.

**The recommend path.** What ``recops recommend`` does (``recops.serving.recommend``),
split into stages and timed per request for ``--users`` users against the demo's server:
the user's key to its id → Feast online profile → the served signature → retrieval
top-100 → the re-rank policy tag (MLflow) → ranker inputs (Feast online activity
features) → ranker → the seen items → fusion and item attributes. Users are picked from
the users table and asked for by their own key (string or integer). Over REST (what
the CLI uses) and with both model calls over gRPC, alternating user by user; the first
user's lists over both must be equal. Warm, in one process: a fresh
``recops recommend`` process adds its start-up, measured separately (``--cli-runs``).

**The recommendation service** (``benchmarks._recommend_service``, issue #17's targets):
``recops.service`` started against the same state (unless one answers), asked over real
HTTP (one keep-alive ``http.client`` connection, so the load generator adds little of its
own) at ``--rate`` requests per second, closed loop, for ``--seconds``, for
random users by their own keys (the in-process path above times the first ``--users``
of the same sequence, so the CLI/service ratio compares the same users in one run); then
every user's top-k against what the user has already seen: the seen share, which must be 0.

**Quality as served** (``benchmarks._recommend_quality``, after the timed parts so its
training never shares the machine with them): the served SavedModel re-scored through
its ``serving_default`` on its run's holdout (RecBole's protocol for ``random``) beside
the registry's figures for that version, and the same training config on the temporal
cut, each beside popularity and EASE on the same cut; the targets checked. The temporal
run trains once into ``--workdir`` (default ``RECOPS_HOME/bench/recommend``).

Results: ``benchmarks/results/recommend.json``, ``recommend.md``,
``recommend_compressed.png`` and ``recommend_path.png``. Server and load generator share
the machine, so the figures hold for this machine only (``machine`` in the JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recops_models.tf_env import use_legacy_keras

from benchmarks._common import (
    RESULTS_DIR,
    closed_loop,
    free_port,
    machine,
    percentile,
    pyplot,
    write_atomic,
    write_json,
)
from benchmarks._recommend_quality import quality_markdown, quality_section, registered_figures
from benchmarks._recommend_service import service_markdown, service_section, service_vs_cli

BATCHES = (1, 16, 64)
#: Offered rate per batch size for the "at rate" runs (requests per second); as benchmarks.serving.
RATES = {1: 100.0, 16: 40.0, 64: 15.0}
#: The timed stages of ``recops.serving.recommend.recommend``, in the order they run.
PATH_STAGES = (
    "user_key",
    "online_profile",
    "signature",
    "retrieval",
    "rerank_policy",
    "ranker_inputs",
    "ranker",
    "seen",
    "fuse_titles",
)


class DemoStateMissing(RuntimeError):
    """The demo's served state is not there."""


# --------------------------------------------------------------------------- demo state


def find_models(settings: Any) -> dict[str, Any]:
    """The served retrieval version, its compressed SavedModel and its float baseline.

    Raises:
        DemoStateMissing: Nothing served, or the registry or run folders lack the models.
    """
    from recops.promotion import served_stable
    from recops.registry import mlflow_client

    version = served_stable(settings, settings.model_name)
    if version is None:
        raise DemoStateMissing(
            f"no `stable` {settings.model_name} in {settings.models_config_path}"
        )
    served_dir = settings.model_base_path / settings.model_name / str(version)
    if not (served_dir / "saved_model.pb").is_file():
        raise DemoStateMissing(f"served version {version} has no SavedModel at {served_dir}")
    client = mlflow_client(settings)
    scratch = tempfile.mkdtemp(prefix="recops-bench-")
    try:
        mv = client.get_model_version(settings.model_name, str(version))
        table_dir = Path(client.download_artifacts(str(mv.run_id), "compression/table", scratch))
        rows = json.loads((table_dir / "variants.json").read_text())
    except Exception as exc:
        raise DemoStateMissing(f"registry {settings.mlflow_tracking_uri} has no "
                               f"{settings.model_name} v{version} "
                               f"with its compression table: {exc}") from exc  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    baseline = rows[0]
    chosen = mv.tags.get("recops.lineage.compression", "")
    selected = next((r for r in rows if r.get("name") == chosen), None)
    float_dir = Path(baseline["model_dir"])
    if not (float_dir / "saved_model.pb").is_file():
        raise DemoStateMissing(f"the float SavedModel of v{version} is gone: {float_dir}")
    from recops.serving.recommend import rerank_policy

    ranker_version = served_stable(settings, settings.ranking_model_name)
    ranker = None
    if ranker_version is not None:
        # What the service does with it: the policy the nightly recorded on its version.
        ranker = {
            "version": ranker_version,
            "served_dir": settings.model_base_path
            / settings.ranking_model_name
            / str(ranker_version),
            "policy": rerank_policy(settings, ranker_version),
        }
    return {
        "version": version,
        "variant": chosen,
        "ranker": ranker,
        "served_dir": served_dir,
        "float_dir": float_dir,
        "selection_row": {k: selected.get(k) for k in ("name", "ndcg_at_10", "recall_at_10")}
        if selected
        else {},
        "baseline_row": {k: baseline.get(k) for k in ("name", "ndcg_at_10", "recall_at_10")},
    }


# --------------------------------------------------------------------------- part A


def signature_instances(model_dir: Path, users: Any) -> list[dict[str, Any]]:
    """Row-format instances of ``users`` holding exactly the inputs ``serving_default`` takes.

    The retrieval signature takes ``user_id`` plus one input per user attribute the model
    was trained with; the names and dtypes are read from the SavedModel, so the request
    fits whatever dataset it was trained on.
    """
    import tensorflow as tf
    from recops.serving.requests import loaded_inputs, row_instances

    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    return row_instances(users.reset_index(drop=True), loaded_inputs(signature))


def compare_compressed(
    settings: Any, models: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Same load on the float and the served compressed SavedModel, side by side."""
    import pandas as pd
    from recops.compression import directory_bytes, gzip_bytes
    from recops.serving import models_config as mc
    from recops.serving.loadtest import LoadConfig, _GrpcSender, _RestSender, run_load
    from recops.serving.server import start_background, stop_background

    home = Path(tempfile.mkdtemp(prefix="recops-bench-recommend-"))
    private = dataclasses.replace(settings, home=home, grpc_port=free_port(), rest_port=free_port())
    name = settings.model_name
    versions = {"float": 1, "compressed": 2}
    base = private.model_base_path / name
    shutil.copytree(models["float_dir"], base / "1")
    shutil.copytree(models["served_dir"], base / "2")
    entry = mc.make_model_config(name=name, base_path=base, versions=[1, 2], labels=versions)
    mc.write_config(private.models_config_path, mc.with_model(mc.empty_config(), entry))
    users = pd.read_parquet(settings.users_path)
    users = users.sort_values("event_timestamp").drop_duplicates("user_id", keep="last")
    rng = random.Random(0)
    picked = users.iloc[rng.sample(range(len(users)), min(len(users), max(BATCHES)))]
    picked = picked.iloc[[i % len(picked) for i in range(max(BATCHES))]]
    instances = signature_instances(models["float_dir"], picked)

    def config(label: str, protocol: str, batch: int, qps: float, seconds: float) -> Any:
        return LoadConfig(
            model=name, instances=instances[:batch], rest_port=private.rest_port,
            grpc_port=private.grpc_port, label=label, qps=qps, duration_s=seconds,
            concurrency=args.concurrency, protocol=protocol, timeout_s=30.0,
        )  # fmt: skip

    rows: list[dict[str, Any]] = []
    start_background(private)
    try:
        for protocol in ("rest", "grpc"):
            for label in versions:  # warm both paths
                run_load(config(label, protocol, 1, 20.0, 1.0))
            for batch in BATCHES:
                row: dict[str, Any] = {"protocol": protocol, "batch": batch}
                for label in versions:
                    at_rate = run_load(
                        config(label, protocol, batch, RATES[batch], args.rate_seconds)
                    ).to_dict()
                    cfg = config(label, protocol, batch, 1.0, args.max_seconds)
                    sender = _RestSender(cfg) if protocol == "rest" else _GrpcSender(cfg)
                    capacity = closed_loop(sender, args.max_seconds, args.concurrency)
                    row[label] = {
                        "offered_qps": RATES[batch], "p50_ms": at_rate["p50_ms"],
                        "p99_ms": at_rate["p99_ms"], "errors": at_rate["errors"],
                        "capacity_qps": capacity["qps"], "capacity_p50_ms": capacity["p50_ms"],
                        "capacity_p99_ms": capacity["p99_ms"],
                    }  # fmt: skip
                f, c = row["float"], row["compressed"]
                row["ratio_float_over_compressed"] = {
                    "p50": _ratio(f["p50_ms"], c["p50_ms"]),
                    "p99": _ratio(f["p99_ms"], c["p99_ms"]),
                    "capacity_qps": _ratio(f["capacity_qps"], c["capacity_qps"]),
                }
                print(f"  {protocol:<4} batch {batch:>2}: p99 float {f['p99_ms']:.1f} ms / "
                      f"compressed {c['p99_ms']:.1f} ms; capacity {f['capacity_qps']:.0f} / "
                      f"{c['capacity_qps']:.0f} QPS",
                      flush=True)  # fmt: skip
                rows.append(row)
    finally:
        stop_background(private)
        shutil.rmtree(home, ignore_errors=True)
    sizes = {
        label: {"saved_model_bytes": directory_bytes(d), "gzip_bytes": gzip_bytes(d)}
        for label, d in (("float", models["float_dir"]), ("compressed", models["served_dir"]))
    }
    return {
        "model": name,
        "version": models["version"],
        "variant": models["variant"],
        "float_dir": str(models["float_dir"]),
        "served_dir": str(models["served_dir"]),
        "quality": {"float": models["baseline_row"], "compressed": models["selection_row"]},
        "sizes": sizes,
        "size_ratio": {
            "saved_model": _ratio(
                sizes["float"]["saved_model_bytes"], sizes["compressed"]["saved_model_bytes"]
            ),
            "gzip": _ratio(sizes["float"]["gzip_bytes"], sizes["compressed"]["gzip_bytes"]),
        },
        "load": rows,
        "concurrency": args.concurrency,
    }


def _ratio(a: Any, b: Any) -> float | None:
    return round(float(a) / float(b), 3) if a is not None and b else None


# --------------------------------------------------------------------------- part B


def recommend_staged(
    settings: Any,
    client: Any,
    user_id: int | str,
    k: int,
    protocol: str,
    times: dict[str, list[float]],
) -> list[dict[str, Any]]:
    """``recops.serving.recommend.recommend`` (what ``recops recommend`` runs), each stage
    timed into ``times`` (ms)."""
    from collections import defaultdict

    from recops.errors import RecommendError
    from recops.serving.recommend import RecommendConfig, recommend

    staged: defaultdict[str, list[float]] = defaultdict(list)
    try:
        out = recommend(
            RecommendConfig(user_id=user_id, k=k, protocol=protocol),
            settings,
            client=client,
            timings=staged,
        )
    except RecommendError as exc:
        raise DemoStateMissing(str(exc)) from exc
    for stage, values in staged.items():
        times.setdefault(stage, []).extend(values)
    return out


def user_keys(settings: Any) -> list[int | str]:
    """Every user's own key (string or integer), as ``recops recommend --user-id`` takes it."""
    import pandas as pd
    from recops.data import lookup_keys

    ids = pd.read_parquet(settings.users_path, columns=["user_id"])["user_id"].drop_duplicates()
    keys = lookup_keys(settings, "users", ids.reset_index(drop=True)).dropna()
    return [k if isinstance(k, str) else int(k) for k in keys]


def recommend_path(
    settings: Any, args: argparse.Namespace, sample: list[int | str]
) -> dict[str, Any]:
    """Per-stage and end-to-end latency of the recommend path for the ``sample`` users."""
    from recops.serving.client import ServingClient

    out: dict[str, Any] = {"users": len(sample), "k": args.k, "protocols": {}}
    with ServingClient.from_settings(settings) as client:
        # Both protocols must answer the same list, or their timings do not compare.
        by_rest = recommend_staged(
            settings, client, sample[0], args.k, "rest", {s: [] for s in PATH_STAGES}
        )
        by_grpc = recommend_staged(
            settings, client, sample[0], args.k, "grpc", {s: [] for s in PATH_STAGES}
        )
        if [r["item_id"] for r in by_rest] != [r["item_id"] for r in by_grpc]:
            raise RuntimeError(f"REST and gRPC recommend different items for user {sample[0]}")
        out["rest_equals_grpc"] = True
        protocols = ("rest", "grpc")
        times: dict[str, dict[str, list[float]]] = {
            p: {s: [] for s in PATH_STAGES} for p in protocols
        }
        total: dict[str, list[float]] = {p: [] for p in protocols}
        for protocol in protocols:
            for uid in sample[:5]:  # warm caches and connections
                recommend_staged(
                    settings, client, uid, args.k, protocol, {s: [] for s in PATH_STAGES}
                )
        # Alternate the protocols user by user, so both see the same machine load.
        for uid in sample:
            for protocol in protocols:
                begin = time.perf_counter()
                recommend_staged(settings, client, uid, args.k, protocol, times[protocol])
                total[protocol].append((time.perf_counter() - begin) * 1000.0)
        for protocol in protocols:
            out["protocols"][protocol] = {
                "stages": {s: _stats(v) for s, v in times[protocol].items() if v},
                "end_to_end": _stats(total[protocol]),
            }
            e2e = out["protocols"][protocol]["end_to_end"]
            print(f"  recommend over {protocol}: p50 {e2e['p50_ms']:.1f} ms, "
                  f"p99 {e2e['p99_ms']:.1f} ms ({len(sample)} users)", flush=True)  # fmt: skip
    out["cli_process"] = _cli_runs(settings, sample[: args.cli_runs], args.k)
    return out


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "mean_ms": round(sum(values) / len(values), 2),
    }


def _cli_runs(settings: Any, users: list[int | str], k: int) -> dict[str, Any]:
    # A fresh `recops recommend` process per call: imports and connections are paid each time.
    exe = shutil.which("recops", path=str(Path(sys.executable).parent))
    if exe is None or not users:
        return {}
    walls = []
    for uid in users:
        begin = time.perf_counter()
        proc = subprocess.run([exe, "recommend", "--dataset", settings.dataset,
                               "--user-id", str(uid), "--k", str(k), "--json"],
                              capture_output=True, text=True,
                              env={**os.environ, "RECOPS_HOME": str(settings.home)})  # fmt: skip
        walls.append((time.perf_counter() - begin) * 1000.0)
        if proc.returncode != 0:
            raise RuntimeError(f"recops recommend failed: {proc.stderr[-1000:]}")
    from recops.service.daemon import service_answers

    return {
        "runs": len(walls),
        "via_service": service_answers(settings, 1.0),
        "p50_ms": round(percentile(walls, 50), 1),
        "max_ms": round(max(walls), 1),
    }


# --------------------------------------------------------------------------- output


def plot_compressed(part: dict[str, Any], path: Path) -> None:
    """p99 at the offered rate, closed-loop capacity and size: float vs compressed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8), gridspec_kw={"width_ratios": [3, 3, 1.4]})
    labels = [f"{r['protocol'].upper()}\nbatch {r['batch']}" for r in part["load"]]
    xs = list(range(len(labels)))
    width = 0.38
    colors = {"float": "tab:gray", "compressed": "tab:blue"}
    names = {"float": "float (uncompressed)", "compressed": f"served: {part['variant']}"}
    for ax, key, ylabel, title in (
        (axes[0], "p99_ms", "p99 latency (ms)", "p99 at a fixed offered rate (lower is better)"),
        (
            axes[1],
            "capacity_qps",
            "requests per second",
            f"Closed-loop capacity, {part['concurrency']} threads",
        ),
    ):
        for j, label in enumerate(("float", "compressed")):
            values = [r[label][key] for r in part["load"]]
            bars = ax.bar(
                [x + (j - 0.5) * width for x in xs],
                values,
                width,
                color=colors[label],
                label=names[label],
            )
            ax.bar_label(
                bars, fmt="%.0f" if key == "capacity_qps" else "%.1f", fontsize=7, padding=1
            )
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.3)
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(True, axis="y", alpha=0.3)
    sizes = part["sizes"]
    kinds = ("saved_model_bytes", "gzip_bytes")
    for j, label in enumerate(("float", "compressed")):
        values = [sizes[label][k] / 1e6 for k in kinds]
        bars = axes[2].bar(
            [x + (j - 0.5) * width for x in range(2)], values, width, color=colors[label]
        )
        axes[2].bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    axes[2].set_xticks(range(2))
    axes[2].set_xticklabels(["SavedModel", "gzip"], fontsize=8)
    axes[2].set_ylabel("size (MB)")
    ratio = part["size_ratio"]
    axes[2].set_title(
        f"Size: {ratio['saved_model']:.2f}× / {ratio['gzip']:.2f}× smaller", fontsize=10
    )
    axes[2].margins(y=0.15)
    axes[2].grid(True, axis="y", alpha=0.3)
    fig.suptitle(
        f"{part.get('model', 'recops_retrieval')} v{part['version']}: float vs served "
        "compressed variant, "
        "same load, same server",
        fontsize=11,
    )
    fig.tight_layout()
    _save(fig, plt, path)


def plot_path(part: dict[str, Any], path: Path) -> None:
    """Stacked p50 per stage of the recommend path, with the end-to-end p50 and p99."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.2))
    protocols = list(part["protocols"])
    colors = plt.get_cmap("tab10").colors
    for j, protocol in enumerate(protocols):
        left = 0.0
        stages = part["protocols"][protocol]["stages"]
        for i, stage in enumerate(PATH_STAGES):
            if stage not in stages:
                continue
            width = stages[stage]["p50_ms"]
            ax.barh(
                j,
                width,
                left=left,
                color=colors[i],
                edgecolor="white",
                label=stage if j == 0 else None,
            )
            left += width
        e2e = part["protocols"][protocol]["end_to_end"]
        ax.plot(
            [e2e["p99_ms"]],
            [j],
            "k|",
            markersize=22,
            markeredgewidth=2,
            label="end-to-end p99" if j == 0 else None,
        )
        ax.text(
            e2e["p99_ms"],
            j + 0.3,
            f" p50 {e2e['p50_ms']:.0f} ms, p99 {e2e['p99_ms']:.0f} ms",
            fontsize=8,
            va="center",
        )
    ax.set_yticks(range(len(protocols)))
    ax.set_yticklabels([f"model calls over {p.upper()}" for p in protocols])
    ax.set_ylim(-0.6, len(protocols) - 0.1)
    ax.set_xlabel("latency per recommendation (ms); bars: p50 of each stage, stacked")
    ax.set_title(
        f"recops recommend path, warm, {part['users']} users, top-{part['k']}", fontsize=10
    )
    ax.set_xlim(0, max(part["protocols"][p]["end_to_end"]["p99_ms"] for p in protocols) * 1.45)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def markdown(report: dict[str, Any]) -> str:
    """Both tables: float vs compressed, and the recommend path per stage."""
    lines = service_markdown(report.get("service")) + quality_markdown(report.get("quality"))
    c = report.get("compressed_vs_float")
    if not c:
        lines += ["## float vs served compressed", "", "Not measured in this run "
                  "(`--skip-compressed`).", ""]  # fmt: skip
        return "\n".join(lines) + _path_markdown(report)
    lines += [
        f"## {c.get('model', 'recops_retrieval')} v{c['version']}: "
        f"float vs served `{c['variant']}`",
        "",
        f"Size: SavedModel {c['sizes']['float']['saved_model_bytes']:,} B → "
        f"{c['sizes']['compressed']['saved_model_bytes']:,} B "
        f"(**{c['size_ratio']['saved_model']}×**), "
        f"gzip {c['sizes']['float']['gzip_bytes']:,} B → "
        f"{c['sizes']['compressed']['gzip_bytes']:,} B "
        f"(**{c['size_ratio']['gzip']}×**).",
        "",
        "| protocol | batch | offered QPS | p50 ms float / comp. | p99 ms float / comp. "
        "| p99 ratio | capacity QPS float / comp. | capacity ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in c["load"]:
        f, p, q = r["float"], r["compressed"], r["ratio_float_over_compressed"]
        lines.append(
            f"| {r['protocol']} | {r['batch']} | {f['offered_qps']:.0f} | "
            f"{f['p50_ms']:.1f} / {p['p50_ms']:.1f} | "
            f"{f['p99_ms']:.1f} / {p['p99_ms']:.1f} | {q['p99']} | {f['capacity_qps']:.0f} / "
            f"{p['capacity_qps']:.0f} | {q['capacity_qps']} |"
        )
    return "\n".join(lines) + "\n" + _path_markdown(report)


def _path_markdown(report: dict[str, Any]) -> str:
    """The in-process recommend path per stage."""
    lines: list[str] = []
    path = report["recommend_path"]
    lines += ["", f"## recommend path ({path['users']} users, top-{path['k']}, warm)", "",
              "| stage | " + " | ".join(f"{p} p50 ms | {p} p99 ms" for p in path["protocols"])
              + " |",
              "| --- |" + " --- | --- |" * len(path["protocols"])]  # fmt: skip
    for stage in (*PATH_STAGES, "end_to_end"):
        cells = []
        for p in path["protocols"].values():
            s = p["end_to_end"] if stage == "end_to_end" else p["stages"].get(stage)
            cells += [f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}"] if s else ["", ""]
        name = f"**{stage}**" if stage == "end_to_end" else stage
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cli = path.get("cli_process") or {}
    if cli:
        via = " (it asked the running service)" if cli.get("via_service") else ""
        lines += ["", f"A fresh `recops recommend --json` process: p50 {cli['p50_ms']:.0f} ms over "
                      f"{cli['runs']} runs (start-up and imports included){via}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts on the demo state and write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.recommend", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--users", type=int, default=200, help="users timed on the recommend path")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rate-seconds", type=float, default=6.0, help="seconds per open-loop run")
    parser.add_argument(
        "--max-seconds", type=float, default=4.0, help="seconds per closed-loop run"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--cli-runs", type=int, default=3, help="fresh `recops recommend` processes timed"
    )
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="seconds of the service's paced closed loop")  # fmt: skip
    parser.add_argument("--rate", type=float, default=100.0,
                        help="requests per second the service's loop offers")  # fmt: skip
    parser.add_argument("--skip-compressed", action="store_true",
                        help="leave out the float vs compressed comparison")  # fmt: skip
    parser.add_argument("--skip-service", action="store_true",
                        help="leave out the recommendation service")  # fmt: skip
    parser.add_argument("--skip-quality", action="store_true",
                        help="leave out the quality as served (it trains once)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None,
                        help="the quality part's training folder")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--replot", action="store_true", help="redraw the PNGs and table from recommend.json"
    )
    args = parser.parse_args(argv)
    if args.replot:
        report = json.loads((args.out / "recommend.json").read_text())
        write_atomic(args.out / "recommend.md", markdown(report))
        if report.get("compressed_vs_float"):
            plot_compressed(report["compressed_vs_float"], args.out / "recommend_compressed.png")
        plot_path(report["recommend_path"], args.out / "recommend_path.png")
        return 0
    use_legacy_keras()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from recops.config import Settings
    from recops.serving.daemon import rest_answers, start_background, stop_background

    settings = Settings.from_env()
    try:
        models = find_models(settings)
    except DemoStateMissing as exc:
        print(f"error: {exc}.\nRun `make demo` first: it leaves a trained, registered and "
              f"served model under RECOPS_HOME ({settings.home}).", file=sys.stderr)  # fmt: skip
        return 2
    started = time.time()
    compressed = None
    if args.skip_compressed:
        print("float vs served compressed: skipped (--skip-compressed)", flush=True)
    else:
        print(f"float vs served {models['variant']} (v{models['version']}), same load:",
              flush=True)  # fmt: skip
        compressed = compare_compressed(settings, models, args)
    keys = user_keys(settings)
    # One sequence of random users by their own keys: the service's paced loop goes
    # through it, and the in-process path times its first --users, so both see the same
    # users.
    rng = random.Random(1)
    sequence = [rng.choice(keys) for _ in range(int(args.rate * args.seconds) + 100)]
    ours = not rest_answers(settings.serving_host, settings.rest_port, 1.0)
    if ours:  # the demo's server is down: bring it up for the path, and stop it after
        start_background(settings)
    try:
        print("recommend path (in process, as `recops recommend` without the service):",
              flush=True)  # fmt: skip
        path_part = recommend_path(settings, args, sequence[: args.users])
        service_part = None
        if not args.skip_service:
            print(f"recommendation service (HTTP, {args.rate:g} req/s closed loop, "
                  f"{args.seconds:g} s):", flush=True)  # fmt: skip
            service_part = service_section(settings, args, keys, sequence)
            service_part["vs_cli"] = service_vs_cli(service_part, path_part)
            ratio = service_part["vs_cli"]
            print(f"  CLI path / service: p50 {ratio['p50']}x, p99 {ratio['p99']}x", flush=True)
    finally:
        if ours:
            stop_background(settings)
    quality = None
    if args.skip_quality:
        print("quality as served: skipped (--skip-quality)", flush=True)
    else:
        print("quality as served (serving_default, known history, same-cut baselines):",
              flush=True)  # fmt: skip
        workdir = args.workdir or settings.home / "bench" / "recommend"
        registered = registered_figures(settings, int(models["version"]))
        quality = quality_section(
            models, workdir, history_max=settings.history_max, registered=registered
        )
    report = {
        "benchmark": "recommend",
        "home": str(settings.home),
        "compressed_vs_float": compressed,
        "recommend_path": path_part,
        "service": service_part,
        "quality": quality,
        "machine": machine(),
        "wall_s": round(time.time() - started, 1),
    }
    out: Path = args.out
    write_json(out / "recommend.json", report)
    table = markdown(report)
    write_atomic(out / "recommend.md", table)
    if compressed is not None:
        plot_compressed(compressed, out / "recommend_compressed.png")
    plot_path(path_part, out / "recommend_path.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
