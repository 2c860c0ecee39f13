"""Compression search benchmark on MovieLens-100K (a script, not a test).

    RECOPS_HOME=/tmp/h6home python -m benchmarks.compression [--latency-calls 2000]
        [--epochs N] [--variants int8_tables,prune_50] [--out DIR]

Trains the two-tower once (default ``TrainConfig``), builds every variant in
``recops.compression.VARIANTS`` with ``compress_variant``, runs ``select_variant`` (all
models measured side by side in one process, load memory in subprocesses) and prints the
served variant against the uncompressed model:

- gzip size ratio, float / served (target >= 4x);
- p99 latency of ``serving_default`` at batch 1, float / served (target >= 1.5x);
- relative NDCG@10 loss on the test split (target <= 1 %).

Work goes under ``$RECOPS_HOME/benchmarks/compression`` (reused when complete: every step
is idempotent). Results: ``benchmarks/results/compression.json``,
``compression_variants.md`` and ``compression_pareto.png`` (``--out`` picks another
folder). ``--epochs`` and ``--variants`` make a quick check (``--epochs 1 --variants
int8_tables``); the figures that count come from the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from recops_models.tf_env import use_legacy_keras

from benchmarks._common import fields_of
from benchmarks._ml100k import prepare_data

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGETS = {"gzip_ratio": 4.0, "p99_b1_ratio": 1.5, "ndcg_rel_loss": 0.01}


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if numerator is None or not denominator:
        return None
    return float(numerator) / float(denominator)


def main() -> None:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-calls", type=int, default=2000)
    parser.add_argument("--warmup-calls", type=int, default=50)
    parser.add_argument("--quality-budget", type=float, default=0.01)
    parser.add_argument("--no-memory", action="store_true", help="skip load-memory probes")
    parser.add_argument("--epochs", type=int, default=None, help="two-tower epochs")
    parser.add_argument(
        "--variants", default=None, help="comma-separated variants (default: every one)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    use_legacy_keras()
    from recops.compression import (
        VARIANTS,
        SelectConfig,
        VariantConfig,
        compress_variant,
        select_variant,
    )
    from recops.config import Settings
    from recops.training import TrainConfig, train

    names = tuple(args.variants.split(",")) if args.variants else tuple(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    workdir = Settings.from_env().home / "benchmarks" / "compression"
    uris = prepare_data(workdir)
    started = time.perf_counter()
    # Trained as the pipeline trains (recops.params.NIGHTLY defaults: early stopping off).
    epochs = {} if args.epochs is None else {"epochs": args.epochs}
    # A quick check keeps its runs apart, so it never meets the real runs' folders.
    runs = workdir / f"epochs_{args.epochs}" if epochs else workdir
    trained = train(
        TrainConfig(**uris, output_dir=str(runs / "train"), early_stopping_patience=0, **epochs)
    )
    train_seconds = time.perf_counter() - started
    train_dir = str(Path(trained.model_dir).parent)

    variants = {}
    for name in names:
        result = compress_variant(
            VariantConfig(
                variant=name,
                train_dir=train_dir,
                split_uri=trained.split_uri,
                output_dir=str(runs / "variants" / name),
                **fields_of(VariantConfig, uris),
            )
        )
        variants[name] = result.to_dict()
        print(f"{name:18s} {result.status:6s} {result.seconds:6.1f}s  NDCG@10={result.ndcg_at_10}")

    selection = select_variant(
        SelectConfig(
            **fields_of(
                SelectConfig, {"users_uri": uris["users_uri"], "spec_uri": uris["spec_uri"]}
            ),
            train_dir=train_dir,
            split_uri=trained.split_uri,
            variant_dirs=tuple(str(runs / "variants" / name) for name in names),
            output_dir=str(runs / "select"),
            quality_budget=args.quality_budget,
            latency_calls=args.latency_calls,
            warmup_calls=args.warmup_calls,
            measure_memory=not args.no_memory,
        )
    )
    rows = json.loads(Path(selection.table_uri).read_text())
    base = rows[0]
    served = selection.selected_metrics

    def figures(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "gzip_ratio": _ratio(base["gzip_bytes"], row.get("gzip_bytes")),
            "p99_b1_ratio": _ratio(base["p99_ms_b1"], row.get("p99_ms_b1")),
            "p50_b1_ratio": _ratio(base["p50_ms_b1"], row.get("p50_ms_b1")),
            "cpu_p50_b1_ratio": _ratio(base["cpu_p50_ms_b1"], row.get("cpu_p50_ms_b1")),
            "ndcg_rel_loss": row.get("ndcg_rel_loss"),
        }

    achieved = figures(served)
    met = {
        "gzip_ratio": (achieved["gzip_ratio"] or 0) >= TARGETS["gzip_ratio"],
        "p99_b1_ratio": (achieved["p99_b1_ratio"] or 0) >= TARGETS["p99_b1_ratio"],
        "ndcg_rel_loss": (achieved["ndcg_rel_loss"] or 0) <= TARGETS["ndcg_rel_loss"],
    }
    serving_rows = [r for r in rows[1:] if r["status"] == "ok" and r["serves"] == "saved_model"]
    closest = {
        "gzip_ratio": max(
            ((r["name"], figures(r)["gzip_ratio"], r["ndcg_rel_loss"]) for r in serving_rows),
            key=lambda t: t[1] or 0,
            default=None,
        ),
        "p50_b1_ratio": max(
            ((r["name"], figures(r)["p50_b1_ratio"], r["ndcg_rel_loss"]) for r in serving_rows),
            key=lambda t: t[1] or 0,
            default=None,
        ),
        "p99_b1_ratio": max(
            ((r["name"], figures(r)["p99_b1_ratio"], r["ndcg_rel_loss"]) for r in serving_rows),
            key=lambda t: t[1] or 0,
            default=None,
        ),
    }
    report = {
        "dataset": "ml-100k",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "train_seconds": train_seconds,
        "train": trained.to_dict(),
        "selected": selection.selected,
        "selection_reason": selection.selection_reason,
        "served": served,
        "baseline": selection.baseline_metrics,
        "achieved": achieved,
        "targets": TARGETS,
        "targets_met": met,
        "closest_saved_model_variant": closest,
        "variants": variants,
        "table": rows,
    }
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "compression.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, out / "compression.json")
    shutil.copyfile(selection.table_md_uri, out / "compression_variants.md")
    shutil.copyfile(selection.pareto_png_uri, out / "compression_pareto.png")

    print()
    print(Path(selection.table_md_uri).read_text())
    print(f"selected: {selection.selected} ({selection.selection_reason})")
    print(f"{'':24s}{'float':>14s}{selection.selected:>18s}{'ratio/loss':>14s}  target")
    for label, key, target in (
        ("gzip bytes", "gzip_bytes", f">= {TARGETS['gzip_ratio']}x smaller"),
        ("p99 ms, batch 1", "p99_ms_b1", f">= {TARGETS['p99_b1_ratio']}x lower"),
        ("p50 ms, batch 1", "p50_ms_b1", ""),
        ("CPU p50 ms, batch 1", "cpu_p50_ms_b1", ""),
        ("NDCG@10", "ndcg_at_10", f"<= {TARGETS['ndcg_rel_loss']:.0%} loss"),
    ):
        b, s = base.get(key), served.get(key)
        if key == "ndcg_at_10":
            change = f"{achieved['ndcg_rel_loss']:+.2%}"
        else:
            ratio = _ratio(b, s)
            change = f"{ratio:.2f}x" if ratio is not None else "-"
        print(f"{label:24s}{b!s:>14.8s}{s!s:>18.8s}{change:>14s}  {target}")
    print(f"targets met: {met}")
    print(f"closest SavedModel variants: {closest}")


if __name__ == "__main__":
    main()
