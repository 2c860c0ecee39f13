"""Quality on both shipped datasets, side by side (a script, not a test).

    python -m benchmarks.datasets [--epochs N] [--datasets ml-100k,shop-synthetic]
        [--shop-users 2000] [--shop-items 1500] [--shop-days 60] [--shop-rows N]

Per dataset, one split and three models scored on it:

- ``two-tower``: the real train stage (``recops.training.train`` with the stage's default
  knobs, ``--epochs`` aside), scored by ``recops.evaluation.evaluate``;
- ``popularity``: items ordered by their count of train rows of a positive event type;
- ``EASE``: ``recops_models.ease`` (λ = ``--ease-l2``) on every train row, whatever its
  event type, as the two-tower model trains on every train row.

The baselines read the split the two-tower run wrote (``split.parquet``: one row per
user and item, its strongest event type) and go through
``recops.evaluation.evaluate_scores`` with the spec's positive and seen event types, so
all three rows count the same hits (only the spec's ``positives``) and mask the same seen
items (its ``seen`` types, train and valid) over the same catalogue (the items table).

The datasets are the published layout of their shipped specs:

- ``ml-100k``: ``benchmarks._ml100k.prepare_data`` (``datasets/movielens-100k.yaml``;
  every rating is a positive and seen);
- ``shop-synthetic``: the synthetic generator's ``shop`` mode
  (``recops.data.synthetic.synthesize``, i.e. its files through ``recops.data.convert``,
  string keys interned as a first import would), ``datasets/shop-synthetic.yaml``: views,
  carts and purchases; hits are carts and purchases, any event makes a product seen.

The table gives Recall@10 and NDCG@10 and each model over popularity; the figure to read
is two-tower / popularity per dataset. Those are offline proxies (the evaluator masks seen
items). Beside them, the **as served** table replays the same holdout through the
exported ``serving_default`` with each user's known seen items, as the recommendation
service calls it (``recops.served_eval``), with popularity over the last 14 days and EASE
on the same cut, and the share of already-seen items served. Each dataset is split with
its spec's first evaluation protocol (as a nightly run with an empty ``protocol`` Param:
random for ml-100k, temporal for shop-synthetic); ``--protocol random|temporal`` makes it
that one for both. Trained runs and data are kept under
``--workdir`` and reused by a re-run with the same settings. Results go to
``benchmarks/results/datasets.json`` and ``datasets.md``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from recops_models.tf_env import use_legacy_keras

from benchmarks._common import RESULTS_DIR, machine, write_atomic, write_json
from benchmarks._ml100k import prepare_data

log = logging.getLogger("benchmarks.datasets")

DATASETS = ("ml-100k", "shop-synthetic")
METRICS = (("recall_at_k", "Recall@10"), ("ndcg_at_k", "NDCG@10"))
#: Views per customer when ``--shop-rows`` is left out (carts and purchases come on top).
SHOP_VIEWS_PER_USER = 40
#: Per-user RecBole protocol as ``recops.splits`` cuts it.
PROTOCOLS = {
    "random": "per-user random 80/10/10 (RecBole, split seed 2020)",
    "temporal": "per-user 80/10/10 by time (oldest to train, newest to test)",
}


def _train_default(name: str) -> Any:
    """The default of a ``TrainConfig`` field (the pipeline's knob)."""
    from recops.training import TrainConfig

    return next(f.default for f in fields(TrainConfig) if f.name == name)


# --------------------------------------------------------------------------- data


def _write_tables(folder: Path, frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Write each frame as ``folder/<name>.parquet`` atomically; their URIs by ``<name>_uri``."""
    folder.mkdir(parents=True, exist_ok=True)
    uris = {}
    for name, frame in frames.items():
        path = folder / f"{name}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        uris[f"{name}_uri"] = str(path)
    return uris


def prepare_shop(
    workdir: Path, *, users: int, items: int, days: int, rows: int, seed: int
) -> dict[str, str]:
    """The shop dataset's training set, users and items under ``workdir/data``.

    The generator is deterministic, so files already written for the same arguments (the
    folder is named after them by the caller) are reused.

    Returns:
        ``training_set_uri``, ``users_uri``, ``items_uri`` and ``spec_uri``.
    """
    import pyarrow.parquet as pq
    from recops.data.synthetic import mode_spec_path, synthesize
    from recops.dataset_spec import load_spec
    from recops.layout import layout_from_spec

    spec_uri = str(mode_spec_path("shop"))
    layout = layout_from_spec(load_spec(spec_uri))
    columns = {
        "training_set": layout.training_set_columns,
        "users": layout.user_columns,
        "items": layout.item_columns,
    }
    data = workdir / "data"
    paths = {name: data / f"{name}.parquet" for name in columns}
    if all(p.is_file() and tuple(pq.read_schema(p).names) == columns[n] for n, p in paths.items()):
        return {**{f"{n}_uri": str(p) for n, p in paths.items()}, "spec_uri": spec_uri}
    interactions, user_table, item_table = synthesize(
        rows=rows, users=users, items=items, days=days, seed=seed, mode="shop"
    )
    # The training set as the features stage's retrieval service gives it: each event with
    # its user's and item's attributes (profiles have one row per entity here).
    user_attrs = [f.name for f in layout.user_features]
    item_attrs = [f.name for f in layout.item_features]
    training_set = interactions.merge(
        user_table[["user_id", *user_attrs]], on="user_id", how="left", validate="many_to_one"
    ).merge(item_table[["item_id", *item_attrs]], on="item_id", how="left", validate="many_to_one")
    frames = {
        "training_set": training_set[list(columns["training_set"])],
        "users": user_table[list(columns["users"])],
        "items": item_table[list(columns["items"])],
    }
    return {**_write_tables(data, frames), "spec_uri": spec_uri}


def _stats(uris: dict[str, str]) -> dict[str, Any]:
    """Sizes of a prepared dataset: events, pairs, users, catalogue, events per type."""
    frame = pd.read_parquet(uris["training_set_uri"], columns=["user_id", "item_id", "event_type"])
    items = pd.read_parquet(uris["items_uri"], columns=["item_id"])
    types = frame["event_type"].value_counts()
    return {
        "events": len(frame),
        "user_item_pairs": int((~frame.duplicated(["user_id", "item_id"])).sum()),
        "users": int(frame["user_id"].nunique()),
        "items_with_events": int(frame["item_id"].nunique()),
        "catalogue": int(items["item_id"].nunique()),
        "events_by_type": {str(k): int(v) for k, v in types.items()},
    }


# --------------------------------------------------------------------------- models


def _popularity(
    train: pd.DataFrame, item_ids: np.ndarray, positives: Sequence[str]
) -> Callable[[np.ndarray], np.ndarray]:
    """Scores every user alike: the item's count of train rows of a positive type."""
    from recops.splits import of_types

    counts = of_types(train, positives)["item_id"].value_counts()
    scores = counts.reindex(item_ids, fill_value=0).to_numpy(np.float64)
    return lambda users: np.tile(scores, (users.size, 1))


def _row(model: str, result: Any, seconds: float, **extra: Any) -> dict[str, Any]:
    """One table row from an ``EvalResult``."""
    return {
        "model": model,
        "recall_at_k": result.recall_at_k,
        "ndcg_at_k": result.ndcg_at_k,
        "hit_at_k": result.hit_at_k,
        "mrr_at_k": result.mrr_at_k,
        "precision_at_k": result.precision_at_k,
        "n_users": result.n_users,
        "seconds": round(seconds, 1),
        **extra,
    }


def run_dataset(
    name: str, uris: dict[str, str], run_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Train the two-tower model on one dataset and score it and the baselines on its split."""
    from recops.evaluation import EvalConfig, evaluate, evaluate_scores, event_types_of
    from recops.layout import history_length_of, protocol_of
    from recops.served_eval import ServedEvalConfig, evaluate_served
    from recops.splits import read_typed_split
    from recops.training import TrainConfig, train
    from recops_models.ease import fit_ease

    positives, seen = event_types_of(uris["spec_uri"])
    # Left out: the spec's first protocol, as a nightly run with an empty Param splits.
    protocol = protocol_of(args.protocol, uris["spec_uri"])
    epochs = args.epochs if args.epochs is not None else _train_default("epochs")
    started = time.perf_counter()
    config = TrainConfig(
        training_set_uri=uris["training_set_uri"],
        users_uri=uris["users_uri"],
        items_uri=uris["items_uri"],
        spec_uri=uris["spec_uri"],
        output_dir=str(run_dir / f"two_tower_{protocol}_e{epochs}"),
        epochs=epochs,
        protocol=protocol,
    )
    trained = train(config)
    result = evaluate(
        EvalConfig(
            model_dir=trained.model_dir,
            split_uri=trained.split_uri,
            users_uri=uris["users_uri"],
            spec_uri=uris["spec_uri"],
            training_set_uri=uris["training_set_uri"],
        )
    )
    started_served = time.perf_counter()
    served = evaluate_served(
        ServedEvalConfig(
            model_dir=trained.model_dir,
            split_uri=trained.split_uri,
            users_uri=uris["users_uri"],
            spec_uri=uris["spec_uri"],
            training_set_uri=uris["training_set_uri"],
        )
    )
    served_seconds = time.perf_counter() - started_served
    two_tower = _row(
        "two-tower",
        result,
        time.perf_counter() - started,
        epochs_run=trained.epochs_run,
        history_length=history_length_of(config.history_length, config.spec_uri),
        train_rows=trained.train_rows,
        seconds_per_epoch=round(trained.seconds_per_epoch, 2),
    )

    split = read_typed_split(trained.split_uri)
    item_ids = np.unique(pd.read_parquet(uris["items_uri"], columns=["item_id"])["item_id"])
    item_ids = item_ids.astype(np.int64)
    if item_ids.size != trained.n_candidates:
        # Then the baselines rank another catalogue than the model: say so, loudly.
        log.warning(
            "%s: the items table has %d items, the model embeds %d candidates",
            name, item_ids.size, trained.n_candidates,
        )  # fmt: skip
    train_split = split[split["split"] == "train"]
    common: dict[str, Any] = {
        "split": split,
        "item_ids": item_ids,
        "positive_types": positives,
        "seen_types": seen,
    }
    started = time.perf_counter()
    popularity = _row(
        "popularity",
        evaluate_scores(_popularity(train_split, item_ids, positives), name="popularity",
                        **common),
        time.perf_counter() - started,
    )  # fmt: skip
    started = time.perf_counter()
    ease = fit_ease(
        train_split["user_id"].to_numpy(),
        train_split["item_id"].to_numpy(),
        item_ids,
        l2=args.ease_l2,
    )
    ease_row = _row(
        f"EASE (λ={args.ease_l2:g})",
        evaluate_scores(ease.scores, name="ease", **common),
        time.perf_counter() - started,
    )
    rows = [popularity, ease_row, two_tower]
    for row in rows:
        row["over_popularity"] = {
            metric: _ratio(row[metric], popularity[metric]) for metric, _ in METRICS
        }
        log.info("%s %s: %s", name, row["model"], {m: round(row[m], 4) for m, _ in METRICS})
    as_served = [
        {
            "model": "two-tower",
            "recall_at_10": served.recall_at_k,
            "ndcg_at_10": served.ndcg_at_k,
            "n_users": served.n_users,
            "seen_share": served.seen_share,
            "seconds": round(served_seconds, 2),
        },
        *(
            {"model": f"{baseline} (same cut)", **_served_baseline(figures)}
            for baseline, figures in served.baselines.items()
        ),
    ]
    log.info("%s as served: %s", name, as_served)
    return {
        "name": name,
        "spec_uri": uris["spec_uri"],
        "protocol": protocol,
        "as_served": as_served,
        "positive_types": list(positives) or "every event",
        "seen_types": list(seen) or "every event",
        "split_uri": trained.split_uri,
        "split_rows": {str(k): int(v) for k, v in split["split"].value_counts().items()},
        "stats": _stats(uris),
        "rows": rows,
        "two_tower_over_popularity": two_tower["over_popularity"],
    }


def _served_baseline(figures: dict[str, Any]) -> dict[str, Any]:
    """A served baseline's row: its figures, or why it was skipped."""
    if "skipped" in figures:
        return {"skipped": figures["skipped"]}
    return {
        "recall_at_10": figures["recall_at_k"],
        "ndcg_at_10": figures["ndcg_at_k"],
        "n_users": int(figures["n_users"]),
    }


def _ratio(a: float, b: float) -> float | None:
    """``a / b``, None when ``b`` is zero or either is NaN."""
    if not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


# --------------------------------------------------------------------------- report


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare each chosen dataset, train and score its rows; the JSON-able report."""
    from recops.training import select_strategy

    # Logical CPU devices can only be set before TensorFlow starts.
    select_strategy(_train_default("replicas"))
    workdir = Path(args.workdir)
    shop_rows = args.shop_rows or SHOP_VIEWS_PER_USER * args.shop_users
    shop_args = {
        "users": args.shop_users,
        "items": args.shop_items,
        "days": args.shop_days,
        "rows": shop_rows,
        "seed": args.shop_seed,
    }
    results = []
    for name in args.datasets:
        if name == "ml-100k":
            run_dir = workdir / "ml-100k"
            uris = prepare_data(run_dir)
        else:
            tag = "-".join(f"{k[0]}{v}" for k, v in shop_args.items())
            run_dir = workdir / f"shop-synthetic-{tag}"
            uris = prepare_shop(run_dir, **shop_args)
        results.append(run_dataset(name, uris, run_dir, args))
    epochs = args.epochs if args.epochs is not None else _train_default("epochs")
    return {
        "benchmark": "datasets",
        "protocols": PROTOCOLS,
        "metrics": (
            "full ranking over the catalogue (the items table), @10, test split, averaged over "
            "users with a positive in test; hits: the spec's positive event types; masked: "
            "train and valid items of the spec's seen event types"
        ),
        "baselines": (
            "popularity: train rows of a positive type per item; EASE: binary matrix of every "
            "train row (any event type), the two-tower model's train rows"
        ),
        "settings": {
            "two_tower_epochs": epochs,
            "two_tower": "TrainConfig defaults otherwise",
            "protocol": args.protocol or "each spec's first",
            "ease_l2": args.ease_l2,
            "shop": shop_args,
        },
        "datasets": results,
        "machine": machine(),
    }


def _cell(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table with a short legend."""
    header = ["Dataset", "Model", *(label for _, label in METRICS),
              *(f"{label} ÷ pop" for _, label in METRICS)]  # fmt: skip
    epochs = report["settings"]["two_tower_epochs"]
    lines = [
        "# Quality on both shipped datasets",
        "",
        f"Metrics: {report['metrics']}.",
        f"Baselines: {report['baselines']}.",
        f"Two-tower: {epochs} epoch{'' if epochs == 1 else 's'}, "
        f"{report['settings']['two_tower']}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for dataset in report["datasets"]:
        for row in dataset["rows"]:
            cells = [dataset["name"], row["model"]]
            cells += [_cell(row[metric]) for metric, _ in METRICS]
            cells += [
                "–" if (r := row["over_popularity"][metric]) is None else f"{r:.2f}×"
                for metric, _ in METRICS
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## As served",
        "",
        "The exported `serving_default` with each user's known seen items "
        "(`recops.served_eval`): no masking by the evaluator. Baselines on the same cut "
        "exclude the same items; popularity counts the last 14 days of known events.",
        "",
        "| Dataset | Split | Model | Recall@10 | NDCG@10 | Users | Seen share |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset in report["datasets"]:
        for row in dataset.get("as_served", []):
            if "skipped" in row:
                lines.append(
                    f"| {dataset['name']} | {dataset['protocol']} | {row['model']} | "
                    f"skipped: {row['skipped']} | | | |"
                )
                continue
            share = row.get("seen_share")
            lines.append(
                f"| {dataset['name']} | {dataset['protocol']} | {row['model']} | "
                f"{_cell(row['recall_at_10'])} | {_cell(row['ndcg_at_10'])} | "
                f"{row['n_users']:,} | {'–' if share is None else f'{share:.2%}'} |"
            )
    lines += ["", "| Dataset | Split | Events | Users | Catalogue | Test users | Hits | Seen |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for dataset in report["datasets"]:
        stats = dataset["stats"]
        hits, seen = dataset["positive_types"], dataset["seen_types"]
        lines.append(
            f"| {dataset['name']} | {dataset['protocol']} | {stats['events']:,} | "
            f"{stats['users']:,} | {stats['catalogue']:,} | {dataset['rows'][0]['n_users']:,} | "
            f"{hits if isinstance(hits, str) else ', '.join(hits)} | "
            f"{seen if isinstance(seen, str) else ', '.join(seen)} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print and write the table."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.datasets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="two-tower epochs (default: TrainConfig's)"
    )
    parser.add_argument(
        "--datasets",
        default=",".join(DATASETS),
        help=f"comma-separated subset of {', '.join(DATASETS)}",
    )
    parser.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default=None,
        help="split protocol (default: each dataset spec's first, as the nightly's)",
    )
    parser.add_argument("--ease-l2", type=float, default=400.0, help="EASE ridge strength λ")
    parser.add_argument("--shop-users", type=int, default=2000, help="shop customers")
    parser.add_argument("--shop-items", type=int, default=1500, help="shop products")
    parser.add_argument("--shop-days", type=int, default=60, help="days the shop log spans")
    parser.add_argument(
        "--shop-rows",
        type=int,
        default=None,
        help=f"shop views (default: {SHOP_VIEWS_PER_USER} per customer)",
    )
    parser.add_argument("--shop-seed", type=int, default=42, help="shop generator seed")
    parser.add_argument(
        "--workdir",
        default=None,
        help="data and trained runs (default: $RECOPS_HOME/benchmarks/datasets)",
    )
    parser.add_argument("--out", default=str(RESULTS_DIR), help="folder for datasets.json/.md")
    args = parser.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown or not args.datasets:
        parser.error(f"--datasets: unknown {unknown}; choose from {', '.join(DATASETS)}")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    for flag in ("shop_users", "shop_items", "shop_days"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.shop_rows is not None and args.shop_rows < 1:
        parser.error("--shop-rows must be >= 1")
    if args.workdir is None:
        from recops.config import Settings

        args.workdir = str(Settings.from_env().home / "benchmarks" / "datasets")
    use_legacy_keras()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    report = run(args)
    report["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    table = markdown(report)
    write_json(out / "datasets.json", report)
    write_atomic(out / "datasets.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
