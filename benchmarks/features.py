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
only (``machine`` in the JSON). Results go to ``benchmarks/results/features.json``.
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

RESULTS_DIR = Path(__file__).resolve().parent / "results"
USER_REFS = [
    "user_profile:age", "user_profile:gender", "user_profile:occupation",
    "user_activity:user_events_7d", "user_activity:user_events_30d",
    "user_activity:user_mean_rating_30d", "user_activity:user_top_genre_30d",
    "user_activity:user_top_genre_share_30d",
]  # fmt: skip


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
    from recops.features import _recops_home_env, apply_repo, materialize, rolling_source_path

    store = apply_repo(settings)
    scanned = sum(
        pq.ParquetFile(p).metadata.num_rows for p in (settings.users_path, settings.items_path)
    )
    scanned += sum(
        pq.ParquetFile(rolling_source_path(settings, v)).metadata.num_rows
        for v in ("user_activity", "item_popularity")
    )
    with _recops_home_env(settings):
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
                out = store.get_online_features(features=USER_REFS, entity_rows=rows).to_dict()
                if i >= 20:  # warm-up calls fill caches and connections
                    samples.append((time.perf_counter() - t0) * 1000)
                assert len(out["age"]) == batch
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
    """Run the benchmark, print a table, and write ``benchmarks/results/features.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args(argv)

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
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
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
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    target = RESULTS_DIR / "features.json"
    tmp = target.with_name(f"{target.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True))
    os.replace(tmp, target)
    return report


if __name__ == "__main__":
    main()
