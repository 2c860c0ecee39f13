"""Scale benchmark: end-to-end cost of the pipeline's stages as the data grows (a script).

    nice -n 10 python -m benchmarks.scale [--sizes 1000000,5000000] [--dim 32] [--force]
    nice -n 10 python -m benchmarks.scale --sizes 20000000 --add   # join a larger size later

For each size (interactions) a fresh temporary ``RECOPS_HOME`` gets synthetic data
(``recops.data.synthesize``: 100 events per user, ``2·√rows`` items, 30 days, like
ml-100k's density) and the nightly's stages run on it, each in its own subprocess so its
wall time and peak RSS are its own:

1. **generate**: ``synthesize`` and write the raw tables;
2. **validate**: the Great Expectations suites on the whole history
   (``recops.validation.validate_history``, what ``recops data synth`` runs before
   publishing);
3. **publish**: daily parquet partitions (``recops.data.publish``);
4. **features**: rolling features, ``feast apply``, SQLite materialization and the
   point-in-time training sets (``recops.features.build_features``);
5. **train**: one epoch of the two-tower (``recops.training.train``, embedding ``--dim``,
   batch 1024, the DAG's 2 replicas, no early stopping);
6. **evaluate**: full-ranking Recall/NDCG@10 on the test split (``recops.evaluation``).

Peak RSS is the stage process's ``ru_maxrss`` (and that of any process it waited for);
CPU seconds (user + system) are recorded beside wall time because they barely move when
other work shares the machine.
The plot shows seconds per stage, stacked, and peak RSS against rows on log-log axes, with
the fitted slope (cost ∝ rows^slope; 1 is linear). Results:
``benchmarks/results/scale.json``, ``scale.md`` and ``scale.png``. On the 2-core, 24 GiB
reference machine 1M rows took 84 s and 5M 311 s (slope 0.81); the features stage
dominates time and memory (2.1 GiB at 1M, 3.1 GiB at 5M now that the training sets are
joined in 1M-row slices; 8.1 GiB before). 20M is supported
(``--sizes 1000000,5000000,20000000``) but takes over half an hour more (its features
stage alone: 698 s, 11.1 GiB), so it is not in the default, and the run stops before any size whose
expected peak (from the sizes done) exceeds 90 % of the available memory unless
``--force``. ``--add`` keeps the sizes already in ``scale.json`` (measured under the same
conditions) and measures larger ones beside them, so the long 20M point can be taken in
a run of its own and still land on the same plot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from recops_models.tf_env import TF_ENV

from benchmarks._common import RESULTS_DIR, machine, pyplot, redraw, write_atomic, write_json

STAGES = ("generate", "validate", "publish", "features", "train", "evaluate")
#: What fits in about 10 minutes on the 2-core reference machine; pass --sizes for more.
DEFAULT_SIZES = "1000000,5000000"
DAYS = 30


def shape_for(rows: int) -> tuple[int, int]:
    """Users and items for ``rows`` interactions: ~100 events per user, 2·√rows items.

    Catalogues grow slower than audiences in practice; ml-100k has 106 events per user.
    """
    return max(100, rows // 100), max(100, int(2 * math.sqrt(rows)))


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) on log(x): cost ∝ x^slope. None below two points."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    var = sum((p[0] - mx) ** 2 for p in points)
    if var == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var


# --------------------------------------------------------------------------- stages
# Each runs in a child process: ``python -m benchmarks.scale --stage NAME --home H``.
# It reads what earlier stages wrote in H/state.json and returns its own small result.


def _settings(home: Path) -> Any:
    import dataclasses

    from recops.config import Settings

    return dataclasses.replace(Settings.from_env(), home=home, online_store="sqlite")


def _read_raw(home: Path) -> tuple[Any, Any, Any]:
    import pandas as pd

    raw = home / "raw"
    return tuple(pd.read_parquet(raw / f"{n}.parquet") for n in ("interactions", "users", "items"))  # type: ignore[return-value]


def _stage_generate(home: Path, state: dict[str, Any]) -> dict[str, Any]:
    from recops.data import synthesize

    rows = int(state["rows"])
    users, items = shape_for(rows)
    tables = synthesize(rows=rows, users=users, items=items, days=DAYS, seed=7)
    raw = home / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, frame in zip(("interactions", "users", "items"), tables, strict=True):
        frame.to_parquet(raw / f"{name}.parquet", index=False)
    return {"interactions": len(tables[0]), "users": users, "items": items}


def _stage_validate(home: Path, state: dict[str, Any]) -> dict[str, Any]:
    from recops.data import normalise
    from recops.layout import active_layout, spec_path
    from recops.validation import validate_history

    settings = _settings(home)
    # The generator writes the published layout of the settings' dataset (its spec).
    layout = active_layout(settings)
    interactions, users, items = _read_raw(home)
    users, items, interactions = normalise(users, items, interactions)
    result = validate_history(
        interactions,
        users[list(layout.user_columns)],
        items[list(layout.item_columns)],
        report_dir=home / "reports" / "history",
        label=f"synthetic history ({len(interactions)} rows)",
        spec=spec_path(settings),
    )
    return {"success": bool(result.success), "warnings": len(result.warnings)}


def _stage_publish(home: Path, state: dict[str, Any]) -> dict[str, Any]:
    from recops.data import normalise, publish

    interactions, users, items = _read_raw(home)
    users, items, interactions = normalise(users, items, interactions)
    settings = _settings(home)
    settings.ensure_dirs()
    result = publish(settings, interactions, users, items, source="synthetic")
    return {"partitions_written": result.partitions_written, "last_date": result.last_date}


def _stage_features(home: Path, state: dict[str, Any]) -> dict[str, Any]:
    from recops.features import FeaturesConfig, build_features

    start = datetime.fromisoformat(state["publish"]["last_date"]).replace(tzinfo=UTC)
    result = build_features(
        FeaturesConfig(
            interval_start=start,
            interval_end=start + timedelta(days=1),
            output_dir=str(home / "runs" / "features"),
        ),
        _settings(home),
    )
    keep = ("training_set_uri", "users_uri", "items_uri", "n_rows", "n_users", "n_items")
    return {k: v for k, v in result.to_dict().items() if k in keep}


def _stage_train(home: Path, state: dict[str, Any]) -> dict[str, Any]:
    from recops.layout import spec_path
    from recops.training import TrainConfig, train

    feats = state["features"]
    result = train(
        TrainConfig(
            training_set_uri=feats["training_set_uri"],
            users_uri=feats["users_uri"],
            items_uri=feats["items_uri"],
            spec_uri=str(spec_path(_settings(home))),
            output_dir=str(home / "runs" / "train"),
            epochs=1,
            embedding_dim=int(state["dim"]),
            replicas=int(state["replicas"]),
            early_stopping_patience=0,
        )
    )
    keep = (
        "model_dir",
        "split_uri",
        "train_rows",
        "examples_per_s",
        "seconds_per_epoch",
        "final_loss",
    )
    return {k: v for k, v in result.to_dict().items() if k in keep}


def _stage_evaluate(home: Path, state: dict[str, Any]) -> dict[str, Any]:
    from recops.evaluation import EvalConfig, evaluate
    from recops.layout import spec_path

    result = evaluate(
        EvalConfig(
            model_dir=state["train"]["model_dir"],
            split_uri=state["train"]["split_uri"],
            users_uri=state["features"]["users_uri"],
            spec_uri=str(spec_path(_settings(home))),
        )
    ).to_dict()
    return {k: result[k] for k in ("recall_at_k", "ndcg_at_k", "n_users")}


_RUNNERS = {
    "generate": _stage_generate,
    "validate": _stage_validate,
    "publish": _stage_publish,
    "features": _stage_features,
    "train": _stage_train,
    "evaluate": _stage_evaluate,
}


def _child(stage: str, home: Path) -> int:
    os.environ["RECOPS_HOME"] = str(home)
    state = json.loads((home / "state.json").read_text())
    result = _RUNNERS[stage](home, state)
    own, waited = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    peak_kib = max(own.ru_maxrss, waited.ru_maxrss)
    # CPU seconds barely move when other work shares the machine; wall time does.
    cpu = own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime
    write_json(
        home / f"stage-{stage}.json",
        {"result": result, "peak_rss_mib": round(peak_kib / 1024, 1), "cpu_seconds": round(cpu, 2)},
    )
    return 0


# --------------------------------------------------------------------------- driver


def run_size(rows: int, *, dim: int, replicas: int, workdir: Path) -> dict[str, Any]:
    """Run every stage on ``rows`` synthetic interactions in a fresh ``RECOPS_HOME``."""
    home = Path(tempfile.mkdtemp(prefix=f"recops-scale-{rows}-", dir=workdir))
    state: dict[str, Any] = {"rows": rows, "dim": dim, "replicas": replicas}
    stages: dict[str, dict[str, Any]] = {}
    env = {
        **os.environ,
        "RECOPS_HOME": str(home),
        **TF_ENV,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    try:
        for stage in STAGES:
            write_json(home / "state.json", state)
            begin = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.scale", "--stage", stage, "--home", str(home)],
                env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
            )  # fmt: skip
            seconds = time.perf_counter() - begin
            if proc.returncode != 0:
                raise RuntimeError(f"stage {stage} at {rows} rows failed:\n{proc.stderr[-3000:]}")
            out = json.loads((home / f"stage-{stage}.json").read_text())
            state[stage] = out["result"]
            stages[stage] = {"seconds": round(seconds, 2), "cpu_seconds": out.get("cpu_seconds"),
                             "peak_rss_mib": out["peak_rss_mib"],
                             "result": out["result"]}  # fmt: skip
            print(f"  {rows:>11,} {stage:<9} {seconds:8.1f} s  "
                  f"CPU {out.get('cpu_seconds', 0):8.1f} s  "
                  f"peak RSS {out['peak_rss_mib']:8.0f} MiB", flush=True)  # fmt: skip
        disk = sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(home, ignore_errors=True)
    users, items = shape_for(rows)
    return {
        "rows": rows,
        "interactions": stages["generate"]["result"]["interactions"],
        "users": users,
        "items": items,
        "stages": stages,
        "total_seconds": round(sum(s["seconds"] for s in stages.values()), 2),
        "total_cpu_seconds": round(sum(s["cpu_seconds"] or 0.0 for s in stages.values()), 2),
        "peak_rss_mib": max(s["peak_rss_mib"] for s in stages.values()),
        "state_bytes": disk,
    }


def _slopes(runs: list[dict[str, Any]]) -> dict[str, Any]:
    xs = [r["rows"] for r in runs]
    out: dict[str, Any] = {
        "total_seconds": slope(xs, [r["total_seconds"] for r in runs]),
        "peak_rss_mib": slope(xs, [r["peak_rss_mib"] for r in runs]),
        "total_cpu_seconds": slope(xs, [r.get("total_cpu_seconds") or 0.0 for r in runs]),
    }
    for stage in STAGES:
        out[f"{stage}_seconds"] = slope(xs, [r["stages"][stage]["seconds"] for r in runs])
    return {k: (round(v, 2) if v is not None else None) for k, v in out.items()}


def _fmt_slope(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def plot(report: dict[str, Any], path: Path) -> None:
    """Stacked seconds per stage and peak RSS against rows, log-log, slopes annotated."""
    plt = pyplot()
    runs = report["runs"]
    slopes = report["slopes"]
    xs = [r["rows"] for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6.5))
    bottom = [0.0] * len(runs)
    colors = plt.get_cmap("tab10").colors
    # Stacked bars, as wide on the log axis at every size (x/1.25 to x*1.25).
    lefts = [x / 1.25 for x in xs]
    widths = [x * 1.25 - x / 1.25 for x in xs]
    for i, stage in enumerate(STAGES):
        values = [r["stages"][stage]["seconds"] for r in runs]
        label = f"{stage} (slope {_fmt_slope(slopes[f'{stage}_seconds'])})"
        left.bar(lefts, values, width=widths, bottom=bottom, align="edge", color=colors[i],
                 alpha=0.85, label=label, edgecolor="white", linewidth=0.5)  # fmt: skip
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    left.plot(xs, bottom, "k-o", label=f"total (slope {_fmt_slope(slopes['total_seconds'])})")
    for x, y in zip(xs, bottom, strict=True):
        left.annotate(
            f"{y:,.0f} s",
            (x, y),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    left.set(xscale="log", yscale="log", xlabel="interactions (rows, log)",
             ylabel="wall time, stacked by stage (s, log)",
             title="Pipeline cost vs data size (stacked)")  # fmt: skip
    left.set_ylim(
        bottom=max(0.5, min(r["stages"][STAGES[0]]["seconds"] for r in runs) / 2),
        top=max(bottom) * 3,
    )
    left.set_ylabel("wall time, stacked by stage (s, log)")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)

    peaks = {stage: [r["stages"][stage]["peak_rss_mib"] for r in runs] for stage in STAGES}
    for i, stage in enumerate(STAGES):
        right.plot(xs, peaks[stage], "-o", color=colors[i], label=stage, markersize=4)
    overall = [r["peak_rss_mib"] for r in runs]
    right.plot(
        xs, overall, "k--", label=f"max over stages (slope {_fmt_slope(slopes['peak_rss_mib'])})"
    )
    for x, y in zip(xs, overall, strict=True):
        right.annotate(
            f"{y:,.0f} MiB",
            (x, y),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    right.set_ylim(min(min(v) for v in peaks.values()) / 1.5, max(overall) * 2)
    right.set(xscale="log", yscale="log", xlabel="interactions (rows, log)",
              ylabel="peak RSS of the stage process (MiB, log)",
              title="Peak memory per stage vs data size")  # fmt: skip
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    _log_axes(left, xs)
    _log_axes(right, xs)
    fig.suptitle(
        f"recops stages on synthetic data, {report['machine']['cpus']} CPUs; "
        "slope = d log(cost) / d log(rows)",
        fontsize=10,
    )
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _log_axes(ax: Any, xs: list[int]) -> None:
    # Few sizes: label each one on x; on y, plain numbers at 1-2-5 steps (log scale's
    # default 10^n labels vanish when the data spans less than a decade).
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x / 1e6:g}M" for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(xs[0] / 1.6, xs[-1] * 1.6)
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.grid(True, which="major", alpha=0.3)


def markdown(report: dict[str, Any]) -> str:
    """The seconds and peak-RSS table, one row per size, and the slopes."""
    head = (
        "| rows | users | items | "
        + " | ".join(f"{s} s" for s in STAGES)
        + " | total s | total CPU s | peak RSS MiB |"
    )
    lines = [head, "|" + " --- |" * (len(STAGES) + 6)]
    for r in report["runs"]:
        cells = [f"{r['rows']:,}", f"{r['users']:,}", f"{r['items']:,}"]
        cells += [f"{r['stages'][s]['seconds']:.1f}" for s in STAGES]
        cpu = r.get("total_cpu_seconds")
        cells += [
            f"{r['total_seconds']:.1f}",
            f"{cpu:.1f}" if cpu else "",
            f"{r['peak_rss_mib']:,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    s = report["slopes"]
    cells = ["slope", "", ""] + [_fmt_slope(s[f"{st}_seconds"]) for st in STAGES]
    cells += [
        _fmt_slope(s["total_seconds"]),
        _fmt_slope(s.get("total_cpu_seconds")),
        _fmt_slope(s["peak_rss_mib"]),
    ]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _available_mib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _conditions(args: argparse.Namespace) -> dict[str, str]:
    return {
        "data": f"recops.data.synthesize, {DAYS} days, 100 events per user, "
        "2·sqrt(rows) items, seed 7",
        "train": f"1 epoch, embedding {args.dim}, batch 1024, {args.replicas} replicas, "
        "no early stopping",
        "stage_process": "each stage in its own Python process; seconds include its imports",
        "online_store": "sqlite",
    }


def _write_report(
    out: Path,
    args: argparse.Namespace,
    runs: list[dict[str, Any]],
    started: float,
    *,
    complete: bool,
) -> str:
    report = {
        "benchmark": "scale",
        "complete": complete,
        "conditions": _conditions(args),
        "runs": runs,
        "slopes": _slopes(runs),
        "machine": machine(),
        "wall_s": round(time.time() - started, 1),
    }
    write_json(out / "scale.json", report)
    table = markdown(report)
    write_atomic(out / "scale.md", table)
    plot(report, out / "scale.png")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sizes, print the table, write scale.json/.md/.png."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated interaction counts")
    parser.add_argument("--dim", type=int, default=32, help="two-tower embedding size")
    parser.add_argument(
        "--replicas", type=int, default=2, help="training replicas (logical CPU devices)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary homes")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="folder for scale.json/.md/.png"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="run a size even if its expected peak RSS exceeds free memory",
    )
    parser.add_argument(
        "--replot", action="store_true", help="redraw scale.png/.md from scale.json"
    )
    parser.add_argument("--add", action="store_true",
                        help="keep the sizes already in scale.json (same conditions) "
                        "and add these")  # fmt: skip
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        return _child(args.stage, args.home)

    out: Path = args.out
    if args.replot:
        redraw(out / "scale.json", markdown, plot)
        return 0
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not sizes or min(sizes) < 1000:
        parser.error("--sizes needs interaction counts >= 1000")
    workdir = args.workdir or Path(tempfile.gettempdir())
    runs: list[dict[str, Any]] = []
    if args.add and (out / "scale.json").is_file():
        # A long size (20M) can be measured on its own later and joined to the same plot,
        # but only with figures taken under the same conditions.
        earlier = json.loads((out / "scale.json").read_text())
        train = _conditions(args)["train"]
        if earlier["conditions"]["train"] != train:
            parser.error(
                f"--add: scale.json was measured with {earlier['conditions']['train']!r}, "
                f"not {train!r}"
            )
        runs = sorted(
            (r for r in earlier["runs"] if r["rows"] not in sizes), key=lambda r: r["rows"]
        )
        sizes = [rows for rows in sizes if rows > runs[-1]["rows"]] if runs else sizes
        if not sizes:
            parser.error("--add measures sizes larger than those already in scale.json")
    started = time.time()
    table = ""
    for rows in sizes:
        if runs:  # say what is coming, from how cost grew so far (linear with one size)
            prev, done = runs[-1], [r["rows"] for r in runs]
            grow = slope(done, [r["total_seconds"] for r in runs]) or 1.0
            guess = prev["total_seconds"] * (rows / prev["rows"]) ** grow
            peak = prev["peak_rss_mib"] * (rows / prev["rows"]) ** (
                slope(done, [r["peak_rss_mib"] for r in runs]) or 1.0
            )
            print(
                f"{rows:,} rows: expect about {guess / 60:.0f} min and a peak of "
                f"{peak / 1024:.1f} GiB",
                flush=True,
            )
            free = _available_mib()
            if free is not None and peak > 0.9 * free and not args.force:
                print(f"stopping before {rows:,} rows: the expected peak is above 90 % of the "
                      f"{free / 1024:.1f} GiB available (--force runs it anyway)",
                      flush=True)  # fmt: skip
                break
        runs.append(run_size(rows, dim=args.dim, replicas=args.replicas, workdir=workdir))
        # Written after every size, so a long run stopped midway keeps what it measured.
        table = _write_report(
            out, args, runs, started, complete=sum(r["rows"] in sizes for r in runs) == len(sizes)
        )
    if not runs:
        return 1
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
