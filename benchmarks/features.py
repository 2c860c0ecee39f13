"""Feature store benchmark: materialization and online reads, SQLite vs Redis (a script).

    python -m benchmarks.features [--rows 200000] [--users 5000] [--items 2000] [--days 30]
                                  [--reads 300]

One synthetic dataset (``recops.data.synthesize``) is published into two fresh state
folders, its rolling features are computed once, and each folder gets a different online
store: SQLite (the embedded default) and Redis (``RECOPS_REDIS_URL``, default
127.0.0.1:6379, on a private database number locked for the run). For each store it times:

* **materialization** from empty of every feature view up to the data's end
  (``recops.features.materialize``): online rows written per second (one row per entity
  and view, what the store ends up holding) and offline source rows scanned per second;
* **online reads**: ``get_online_features`` of the ``ranking_v1`` user-side features
  (profile + rolling activity) for 1 and for 100 users per call, p50/p99 over
  ``--reads`` calls after a warm-up.

Both stores run on the same machine as the benchmark, so the figures are for this machine
only (``machine`` in the JSON). Results go to ``benchmarks/results/features.json``, with
``features.md`` (the table and the Redis vs SQLite ratios) and ``features.png``
(materialization rows/s and online read p50/p99, side by side); ``--out`` picks another
folder, and ``--replot`` redraws the PNG and table from an existing ``features.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._common import (
    RESULTS_DIR,
    log_if_wide,
    pyplot,
    ratio_text,
    redraw,
    save_figure,
    write_atomic,
)


def user_refs(settings: Any) -> list[str]:
    """The ``ranking_v1`` user-side feature refs of the settings' dataset.

    One ``user_profile`` field per user attribute of its spec, then the rolling
    ``user_activity`` fields: the views ``recops.features.definitions`` generates.
    """
    from recops.features import PROFILE_VIEWS, ROLLING_FEATURES
    from recops.layout import active_layout

    profile = PROFILE_VIEWS["user_id"]
    refs = [f"{profile}:{f.name}" for f in active_layout(settings).user_features]
    return refs + [f"user_activity:{name}" for name in ROLLING_FEATURES["user_activity"]]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _lock_redis_db(url: str) -> tuple[Any, str, int]:
    import redis

    host, _, port = url.split(",")[0].partition(":")
    admin = redis.Redis(host=host, port=int(port or 6379), socket_connect_timeout=2)
    admin.ping()
    token = f"bench-{os.getpid()}"
    for db in range(15, 0, -1):
        if admin.set(f"recops-test-lock:{db}", token, nx=True, ex=1800):
            return admin, token, db
    raise RuntimeError(f"no free Redis database at {url}")


def _flush(url: str, db: int) -> None:
    import redis

    host, _, port = url.partition(":")
    client = redis.Redis(host=host, port=int(port or 6379), db=db)
    client.flushdb()
    client.close()


def _bench_store(settings: Any, end: datetime, users: int, reads: int) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from recops.features import (
        ROLLING_VIEWS,
        apply_repo,
        materialize,
        recops_home_env,
        rolling_source_path,
    )

    refs = user_refs(settings)
    # A feature every answer must carry: the first ref's field name.
    first = refs[0].split(":", 1)[1]
    store = apply_repo(settings)
    scanned = sum(
        pq.ParquetFile(p).metadata.num_rows for p in (settings.users_path, settings.items_path)
    )
    scanned += sum(
        pq.ParquetFile(rolling_source_path(settings, v)).metadata.num_rows for v in ROLLING_VIEWS
    )
    with recops_home_env(settings):
        start = time.perf_counter()
        materialize(store, end)
        seconds = time.perf_counter() - start
        written = 0
        for view in store.list_feature_views():
            source = pq.read_table(view.batch_source.path, columns=[view.entity_columns[0].name])
            written += len(set(source.column(0).to_pylist()))
        rng = random.Random(0)
        latency: dict[str, dict[str, float]] = {}
        for batch in (1, 100):
            samples = []
            for i in range(reads + 20):
                rows = [{"user_id": rng.randint(1, users)} for _ in range(batch)]
                t0 = time.perf_counter()
                out = store.get_online_features(features=refs, entity_rows=rows).to_dict()
                if i >= 20:  # warm-up calls fill caches and connections
                    samples.append((time.perf_counter() - t0) * 1000)
                assert len(out[first]) == batch
            latency[f"batch_{batch}"] = {
                "p50_ms": round(statistics.median(samples), 3),
                "p99_ms": round(_percentile(samples, 0.99), 3),
                "mean_ms": round(statistics.fmean(samples), 3),
            }
    return {
        "materialize_seconds": round(seconds, 3),
        "online_rows_written": written,
        "online_rows_per_s": round(written / seconds, 1),
        "source_rows_scanned": scanned,
        "source_rows_per_s": round(scanned / seconds, 1),
        "get_online_features": latency,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table, and write ``features.json``, ``.md`` and ``.png``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="folder for features.json/.md/.png"
    )
    parser.add_argument(
        "--replot", action="store_true", help="redraw features.png/.md from features.json"
    )
    args = parser.parse_args(argv)
    out_dir: Path = args.out
    if args.replot:
        return redraw(out_dir / "features.json", markdown, plot)

    from recops.config import Settings
    from recops.data import publish, synthesize
    from recops.features import RollingConfig, compute_rolling_features

    redis_url = os.environ.get("RECOPS_REDIS_URL", "127.0.0.1:6379").split(",")[0]
    admin, token, db = _lock_redis_db(redis_url)
    root = Path(tempfile.mkdtemp(prefix="recops-bench-features-"))
    try:
        tables = synthesize(
            rows=args.rows, users=args.users, items=args.items, days=args.days, seed=7
        )
        end = datetime(1998, 4, 23, tzinfo=UTC)
        results: dict[str, Any] = {}
        rolling_seconds = 0.0
        for kind in ("sqlite", "redis"):
            settings = dataclasses.replace(
                Settings.from_env(),
                home=root / kind,
                online_store=kind,
                redis_url=f"{redis_url},db={db}",
            )
            publish(settings, *tables, source="synthetic")
            start = time.perf_counter()
            compute_rolling_features(RollingConfig(interval_end=end), settings)
            rolling_seconds = time.perf_counter() - start
            if kind == "redis":
                _flush(redis_url, db)
            results[kind] = _bench_store(settings, end, args.users, args.reads)
    finally:
        _flush(redis_url, db)
        if admin.get(f"recops-test-lock:{db}") == token.encode():
            admin.delete(f"recops-test-lock:{db}")
        shutil.rmtree(root, ignore_errors=True)

    report = {
        "data": {
            "rows": args.rows, "users": args.users, "items": args.items, "days": args.days,
            "rolling_features_seconds": round(rolling_seconds, 3),
        },
        "stores": results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    print(f"{'':24}{'sqlite':>14}{'redis':>14}")
    rows = [
        ("materialize s", lambda r: r["materialize_seconds"]),
        ("online rows/s", lambda r: r["online_rows_per_s"]),
        ("source rows/s", lambda r: r["source_rows_per_s"]),
        ("get 1 p50 ms", lambda r: r["get_online_features"]["batch_1"]["p50_ms"]),
        ("get 1 p99 ms", lambda r: r["get_online_features"]["batch_1"]["p99_ms"]),
        ("get 100 p50 ms", lambda r: r["get_online_features"]["batch_100"]["p50_ms"]),
        ("get 100 p99 ms", lambda r: r["get_online_features"]["batch_100"]["p99_ms"]),
    ]
    for label, pick in rows:
        print(f"{label:24}{pick(results['sqlite']):>14}{pick(results['redis']):>14}")
    write_atomic(out_dir / "features.json", json.dumps(report, indent=2, sort_keys=True))
    write_atomic(out_dir / "features.md", markdown(report))
    plot(report, out_dir / "features.png")
    return report


# --------------------------------------------------------------------------- output

_STORES = {"sqlite": ("SQLite", "#8c8c8c", "#4d4d4d"), "redis": ("Redis", "#f0a08c", "#c0392b")}


def _conditions(report: dict[str, Any]) -> str:
    d, cpus = report["data"], report.get("machine", {}).get("cpus", "?")
    return (
        f"synthetic data: {d['rows']:,} interactions, {d['users']:,} users, {d['items']:,} items, "
        f"{d['days']} days; stores and benchmark on one machine, {cpus} CPUs"
    )


def plot(report: dict[str, Any], path: Path) -> None:
    """Materialization rows/s and online-read p50/p99 per store, side by side, with the ratios."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    stores = [k for k in _STORES if k in report["stores"]]
    res = report["stores"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5), gridspec_kw={"width_ratios": [1, 2]})

    rates = [res[k]["online_rows_per_s"] for k in stores]
    bars = left.bar(range(len(stores)), rates, 0.6, color=[_STORES[k][2] for k in stores],
                    edgecolor="black", linewidth=0.4)  # fmt: skip
    left.bar_label(bars, labels=[f"{res[k]['online_rows_per_s']:,.0f}\n"
                                 f"({res[k]['materialize_seconds']:.1f} s)"
                                 for k in stores], fontsize=8, padding=2)  # fmt: skip
    left.set_xticks(range(len(stores)))
    left.set_xticklabels([_STORES[k][0] for k in stores])
    left.set_xlim(-0.7, len(stores) - 0.3)
    left.set_ylim(0, max(rates) * 1.45)
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    left.set_ylabel("online rows written per second")
    title = "Materialization (higher is better)"
    if len(stores) == 2:
        title += f"\nRedis / SQLite = {ratio_text(rates[1], rates[0])}"
    left.set_title(title, fontsize=10)
    left.grid(True, axis="y", alpha=0.3)

    batches = sorted(res[stores[0]]["get_online_features"], key=lambda b: int(b.split("_")[1]))
    xs = list(range(len(batches)))
    series = [(k, q) for k in stores for q in ("p50_ms", "p99_ms")]
    width = 0.8 / len(series)
    values_all: list[float] = []
    for j, (store, key) in enumerate(series):
        values = [res[store]["get_online_features"][b][key] for b in batches]
        values_all += values
        name, light, dark = _STORES[store]
        bars = right.bar([x + (j - (len(series) - 1) / 2) * width for x in xs], values, width,
                         color=dark if key == "p99_ms" else light, edgecolor="black", linewidth=0.3,
                         label=f"{name} {key[:3]}")  # fmt: skip
        right.bar_label(
            bars,
            labels=[f"{v:.2f}" if v < 10 else f"{v:.1f}" for v in values],
            fontsize=7,
            padding=1,
        )
    wide = log_if_wide(right, values_all)
    top = max(values_all)
    if len(stores) == 2:
        for x, b in zip(xs, batches, strict=True):
            a, c = (res[k]["get_online_features"][b] for k in stores)
            right.text(x, top * (1.6 if wide else 1.12),
                       f"SQLite / Redis: p50 {ratio_text(a['p50_ms'], c['p50_ms'])}, "
                       f"p99 {ratio_text(a['p99_ms'], c['p99_ms'])}",
                       ha="center", va="bottom", fontsize=8, fontweight="bold")  # fmt: skip
    right.set_ylim(top=top * (5 if wide else 1.4))
    right.set_xticks(xs)
    right.set_xticklabels(
        [f"{b.split('_')[1]} user{'s' if b != 'batch_1' else ''} per call" for b in batches]
    )
    right.set_ylabel("get_online_features latency (ms" + (", log)" if wide else ")"))
    right.set_title("Online reads of the ranking_v1 user features (lower is better)", fontsize=10)
    right.legend(fontsize=8, loc="upper left", ncol=2)
    right.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"Feast online store: SQLite vs Redis\n{_conditions(report)}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def markdown(report: dict[str, Any]) -> str:
    """Both stores side by side, with the ratio of each figure."""
    stores = [k for k in _STORES if k in report["stores"]]
    res = report["stores"]
    both = len(stores) == 2
    head = (
        "| figure | " + " | ".join(_STORES[k][0] for k in stores) + (" | ratio |" if both else " |")
    )
    lines = [f"{_conditions(report)}.", "", head, "|" + " --- |" * (len(stores) + 1 + both)]

    def row(label: str, pick: Any, fmt: str, better: str | None) -> None:
        vals = [pick(res[k]) for k in stores]
        cells = [format(v, fmt) for v in vals]
        if both and better is None:
            cells.append("")
        elif both:
            ratio = (
                ratio_text(vals[1], vals[0]) if better == "high" else ratio_text(vals[0], vals[1])
            )
            cells.append(f"{'Redis / SQLite' if better == 'high' else 'SQLite / Redis'} {ratio}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("materialize s", lambda r: r["materialize_seconds"], ".2f", "low")
    row("online rows written", lambda r: r["online_rows_written"], ",d", None)
    row("online rows/s", lambda r: r["online_rows_per_s"], ",.0f", "high")
    row("source rows/s", lambda r: r["source_rows_per_s"], ",.0f", "high")
    for b in sorted(res[stores[0]]["get_online_features"], key=lambda b: int(b.split("_")[1])):
        n = b.split("_")[1]
        for q in ("p50_ms", "p99_ms"):
            row(
                f"get {n} {q[:3]} ms",
                lambda r, b=b, q=q: r["get_online_features"][b][q],
                ".3f",
                "low",
            )
    if both:
        lines += ["", "Ratios are written so that above 1 means Redis is better."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
