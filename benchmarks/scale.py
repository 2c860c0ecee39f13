"""Scale benchmark: the pipeline's stages as the data grows, per data-plane engine (a script).

    nice -n 10 python -m benchmarks.scale [--sizes 1000000,5000000] [--engines duckdb] [--force]
    python -m benchmarks.scale --sizes 1000000,5000000,20000000 --engines duckdb,baseline \\
        --stages features --baseline /tmp/recops-baseline    # #19's figures, then:
    python -m benchmarks.scale --sizes 5000000 --engines spark --stages features --add

For each size (interactions) a temporary base ``RECOPS_HOME`` gets synthetic data
(``recops.data.synthesize``: 100 events per user, ``2·√rows`` items, 30 days) and runs
**generate** (the raw tables), **validate** (GX on the whole history) and **publish** (daily
partitions), which do not depend on the engine. Each engine (``--engines``) then gets a home
whose ``data`` is a hard-link copy of the base's (stages replace files by rename; the script
checks that the base's files stay untouched) and runs **features** (rolling features,
``feast apply``, SQLite materialization, point-in-time training sets), **train** (one epoch
of the two-tower, embedding ``--dim``, batch 1024, 2 replicas) and **evaluate** (full-ranking
Recall/NDCG@10) there. Engines: ``duckdb``, ``pandas`` and ``spark`` (``RECOPS_ENGINE``;
Spark on ``RECOPS_SPARK_MASTER``, default ``local[2]``), and ``baseline``, the code before
#19 (pandas rolling, Feast's ``file`` store) from a checkout given by ``--baseline DIR``
(``git worktree add DIR 8a88542``): its stage processes import ``recops`` from there
(``PYTHONPATH`` precedes the editable install's finder; checked) and read its
``feature_repo``. ``--stages features`` runs only what features needs (generate, publish,
features); ``--engine-sizes spark=5000000`` gives an engine sizes of its own.

Every stage runs in its own process: its wall time, CPU seconds (user + system; they barely
move when other work shares the machine) and peak RSS, the larger of its ``ru_maxrss`` and
the summed RSS of its process session sampled every 0.5 s (which counts a Spark JVM beside
its driver). ``scale.md``: one row per (size, engine, stage), the features stage's ratios to
``baseline`` at the same size, and slopes (cost ∝ rows^slope); ``scale.png``: the features
stage's seconds and peak RSS against rows, one line per engine. Results in
``benchmarks/results/``. #19's targets (2 cores): features at 20M in ≤ 150 s and ≤ 4 GiB,
against 698 s and 11.1 GiB before. A (size, engine) whose expected peak (from that engine's
smaller sizes) exceeds 90 % of the available memory is skipped unless ``--force``.
``--add`` keeps the runs already in ``scale.json`` (same conditions; an older file's runs
count as ``baseline``) and replaces or adds those measured now, keyed by (rows, engine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from recops_models.tf_env import TF_ENV

from benchmarks._common import (
    RESULTS_DIR,
    machine,
    pyplot,
    ratio_text,
    redraw,
    write_atomic,
    write_json,
)

STAGES = ("generate", "validate", "publish", "features", "train", "evaluate")
#: The stages that do not depend on the engine: once per size, in the base home.
BASE_STAGES = ("generate", "validate", "publish")
#: What each stage reads from earlier ones: ``--stages`` runs these too.
NEEDS: dict[str, tuple[str, ...]] = {
    "generate": (),
    "validate": ("generate",),
    "publish": ("generate",),
    "features": ("publish",),
    "train": ("features",),
    "evaluate": ("features", "train"),
}
#: ``--engines``: ``RECOPS_ENGINE``'s values, and the code before #19 from ``--baseline``.
#: (Not imported from ``recops.config``: a baseline stage process imports this module
#: against the old package.)
ENGINES = ("duckdb", "baseline", "spark", "pandas")
#: What fits in about 10 minutes on the 2-core reference machine; pass --sizes for more.
DEFAULT_SIZES = "1000000,5000000"
DAYS = 30
#: Seconds between samples of the stage's process session (RSS and CPU from /proc).
SAMPLE_S = 0.5


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


def stages_for(selected: Iterable[str]) -> tuple[str, ...]:
    """``selected`` and every stage they need, in pipeline order."""
    todo, wanted = list(selected), set[str]()
    while todo:
        stage = todo.pop()
        if stage not in wanted:
            wanted.add(stage)
            todo.extend(NEEDS[stage])
    return tuple(s for s in STAGES if s in wanted)


def engine_of(run: dict[str, Any]) -> str:
    """A run's engine; files from before the engines were measured hold ``baseline`` runs."""
    return str(run.get("engine", "baseline"))


def _order(run: dict[str, Any]) -> tuple[int, int]:
    engine = engine_of(run)
    return run["rows"], ENGINES.index(engine) if engine in ENGINES else len(ENGINES)


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
            training_set_uri=state["features"]["training_set_uri"],
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


def _session_usage(sid: int) -> dict[int, tuple[int, float]]:
    """RSS (bytes) and CPU seconds of each live process in session ``sid``, from /proc."""
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    usage: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                text = fh.read()
        except OSError:  # gone since the listing
            continue
        # After "(comm) ": state, ppid, pgrp, session, ... utime, stime (11, 12), ... rss (21).
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # a zombie has exited
            usage[int(entry.name)] = (
                int(fields[21]) * page,
                (int(fields[11]) + int(fields[12])) / tick,
            )
    return usage


def _run_stage(stage: str, home: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``stage`` in a child process (a session of its own) and measure it."""
    log = home / f"stage-{stage}.log"
    begin = time.perf_counter()
    session_peak, cpu_seen = 0, dict[int, float]()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.scale", "--stage", stage, "--home", str(home)],
            env=env, cwd=Path(__file__).resolve().parents[1], stdout=fh,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        while True:
            usage = _session_usage(proc.pid)
            session_peak = max(session_peak, sum(rss for rss, _ in usage.values()))
            cpu_seen.update((pid, cpu) for pid, (_, cpu) in usage.items())
            try:
                proc.wait(timeout=SAMPLE_S)
                break
            except subprocess.TimeoutExpired:
                pass
        seconds = time.perf_counter() - begin
        # A Spark JVM outlives its driver by a moment: its CPU counts, its shutdown's time not.
        deadline = time.monotonic() + 30
        while usage := _session_usage(proc.pid):
            cpu_seen.update((pid, cpu) for pid, (_, cpu) in usage.items())
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this script started
                break
            time.sleep(SAMPLE_S)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{log.read_text()[-3000:]}")
    out = json.loads((home / f"stage-{stage}.json").read_text())
    own_peak, own_cpu = out["peak_rss_mib"], out.get("cpu_seconds") or 0.0
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(max(own_cpu, sum(cpu_seen.values())), 2),
        "peak_rss_mib": round(max(own_peak, session_peak / 2**20), 1),
        "ru_maxrss_mib": own_peak,
        "session_peak_mib": round(session_peak / 2**20, 1),
        "result": out["result"],
    }


def _env(home: Path, engine: str, baseline: Path | None) -> dict[str, str]:
    env = {**os.environ, "RECOPS_HOME": str(home), **TF_ENV, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if engine == "baseline":
        assert baseline is not None
        env.pop("RECOPS_ENGINE", None)
        # Before the editable install's finder (it comes after sys.path's entries).
        paths = [str(baseline / "plugins"), str(baseline / "models"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env["RECOPS_FEATURE_REPO"] = str(baseline / "feature_repo")
    else:
        env["RECOPS_ENGINE"] = engine
    return env


def check_baseline(baseline: Path) -> str:
    """The baseline checkout's commit, once its stage processes are seen to import it."""
    probe = "import recops, recops_models; print(recops.__file__); print(recops_models.__file__)"
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=_env(baseline, "baseline", baseline),
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
    )  # fmt: skip
    files = proc.stdout.split()
    if (
        proc.returncode != 0
        or len(files) != 2
        or not all(Path(f).resolve().is_relative_to(baseline) for f in files)
    ):
        raise SystemExit(
            f"--baseline {baseline}: its stage processes import {files or proc.stderr[-500:]}\n"
            "hint: pass a checkout of the code before #19 (git worktree add DIR 8a88542)"
        )
    head = subprocess.run(["git", "-C", str(baseline), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)  # fmt: skip
    return head.stdout.strip() or "unknown"


def _files(root: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(root)): (st.st_ino, st.st_mtime_ns, st.st_size)
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and (st := p.stat())
    }


def run_size(
    rows: int,
    *,
    engines: Sequence[str],
    stages: Sequence[str],
    dim: int,
    replicas: int,
    workdir: Path,
    baseline: Path | None = None,
    details: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The base stages on ``rows`` synthetic interactions once, then each engine's stages.

    Returns one run (a dict) per engine, in ``engines``' order.
    """
    base = Path(tempfile.mkdtemp(prefix=f"recops-scale-{rows}-", dir=workdir))
    state: dict[str, Any] = {"rows": rows, "dim": dim, "replicas": replicas}
    shared: dict[str, dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []

    def measure(stage: str, home: Path, engine: str, state: dict[str, Any]) -> dict[str, Any]:
        write_json(home / "state.json", state)
        try:
            figures = _run_stage(stage, home, _env(home, engine, baseline))
        except RuntimeError as exc:
            raise RuntimeError(f"{rows:,} rows, {engine}: {exc}") from None
        state[stage] = figures["result"]
        who = "(base)" if stage in BASE_STAGES else engine
        print(f"  {rows:>11,} {who:<8} {stage:<9} {figures['seconds']:8.1f} s  "
              f"CPU {figures['cpu_seconds']:8.1f} s  "
              f"peak RSS {figures['peak_rss_mib']:8.0f} MiB", flush=True)  # fmt: skip
        return figures

    try:
        for stage in (s for s in stages if s in BASE_STAGES):
            shared[stage] = measure(stage, base, "duckdb", state)
        base_bytes = sum(p.stat().st_size for p in base.rglob("*") if p.is_file())
        before = _files(base / "data") if (base / "data").is_dir() else {}
        for engine in engines:
            home = Path(tempfile.mkdtemp(prefix=f"recops-scale-{rows}-{engine}-", dir=workdir))
            try:
                if (base / "data").is_dir():
                    shutil.copytree(base / "data", home / "data", copy_function=os.link)
                own_state, measured = dict(state), dict(shared)
                for stage in (s for s in stages if s not in BASE_STAGES):
                    measured[stage] = measure(stage, home, engine, own_state)
                # What the engine wrote (files linked to the base's have st_nlink 2).
                files = [p.stat() for p in home.rglob("*") if p.is_file()]
                written = sum(st.st_size for st in files if st.st_nlink == 1)
            except RuntimeError as exc:  # the other engines still run; main exits 1
                print(exc, file=sys.stderr, flush=True)
                continue
            finally:
                shutil.rmtree(home, ignore_errors=True)
            if before and _files(base / "data") != before:
                raise RuntimeError(f"{engine} changed a file of the shared data in place")
            runs.append(
                _summary(rows, engine, measured, base_bytes + written, (details or {}).get(engine))
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return runs


def _summary(
    rows: int, engine: str, stages: dict[str, dict[str, Any]], state_bytes: int, detail: str | None
) -> dict[str, Any]:
    users, items = shape_for(rows)
    return {
        "rows": rows,
        "engine": engine,
        "engine_detail": detail,
        "interactions": stages.get("generate", {}).get("result", {}).get("interactions", rows),
        "users": users,
        "items": items,
        "stages": stages,
        "shared_stages": [s for s in BASE_STAGES if s in stages],
        "total_seconds": round(sum(s["seconds"] for s in stages.values()), 2),
        "total_cpu_seconds": round(sum(s["cpu_seconds"] or 0.0 for s in stages.values()), 2),
        "peak_rss_mib": max(s["peak_rss_mib"] for s in stages.values()),
        "state_bytes": state_bytes,
    }


def _by_engine(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(runs, key=_order):
        groups.setdefault(engine_of(run), []).append(run)
    return groups


def _slopes(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Slopes of one engine's runs: totals, and each stage over the runs that have it."""
    xs = [r["rows"] for r in runs]
    out: dict[str, float | None] = {
        "total_seconds": slope(xs, [r["total_seconds"] for r in runs]),
        "peak_rss_mib": slope(xs, [r["peak_rss_mib"] for r in runs]),
        "total_cpu_seconds": slope(xs, [r.get("total_cpu_seconds") or 0.0 for r in runs]),
    }
    for stage in STAGES:
        have = [r for r in runs if stage in r["stages"]]
        for key in ("seconds", "peak_rss_mib"):
            out[f"{stage}_{key}"] = slope(
                [r["rows"] for r in have], [r["stages"][stage][key] for r in have]
            )
    return {k: (round(v, 2) if v is not None else None) for k, v in out.items()}


def _fmt_slope(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def plot(report: dict[str, Any], path: Path) -> None:
    """The features stage's seconds and peak RSS against rows, one line per engine, log-log.

    Runs without a features stage are drawn by their totals instead.
    """
    plt = pyplot()
    runs = report["runs"]
    stage = "features" if any("features" in r["stages"] for r in runs) else None
    what = "the features stage" if stage else "all stages"
    fig, axes = plt.subplots(1, 2, figsize=(13, 6))
    colors = plt.get_cmap("tab10").colors
    for ax, key, unit in zip(axes, ("seconds", "peak_rss_mib"), ("s", "MiB"), strict=True):
        total = "total_seconds" if key == "seconds" else key
        for i, (engine, group) in enumerate(_by_engine(runs).items()):
            points = [(r["rows"], r["stages"][stage][key] if stage else r[total])
                      for r in group if not stage or stage in r["stages"]]  # fmt: skip
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            fitted = _fmt_slope(slope(xs, ys))
            ax.plot(xs, ys, "-o", color=colors[i % len(colors)],
                    label=f"{engine} (slope {fitted})")  # fmt: skip
            for x, y in points:
                ax.annotate(f"{y:,.0f} {unit}", (x, y), textcoords="offset points",
                            xytext=(0, 6), ha="center", fontsize=8)  # fmt: skip
        label = "wall time (s, log)" if key == "seconds" else "peak RSS (MiB, log)"
        ax.set(xscale="log", yscale="log", xlabel="interactions (rows, log)", ylabel=label,
               title=f"{what}: {label.split(' (')[0]} vs data size")  # fmt: skip
        ax.legend(fontsize=8)
        _log_axes(ax, sorted({r["rows"] for r in runs}))
    fig.suptitle(
        f"recops on synthetic data, {report['machine']['cpus']} CPUs, per engine; "
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


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _stage_cells(figures: dict[str, Any]) -> list[str]:
    cpu = figures.get("cpu_seconds")
    return [
        f"{figures['seconds']:.1f}",
        f"{cpu:.1f}" if cpu else "",
        f"{figures['peak_rss_mib']:,.0f}",
    ]


def markdown(report: dict[str, Any]) -> str:
    """Seconds, CPU seconds and peak RSS per (size, engine, stage); ratios; slopes."""
    runs = sorted(report["runs"], key=_order)
    lines = [_row(["rows", "engine", "stage", "seconds", "CPU s", "peak RSS MiB"]),
             "|" + " --- |" * 6]  # fmt: skip
    for rows in sorted({r["rows"] for r in runs}):
        here = [r for r in runs if r["rows"] == rows]
        # Base stages measured once and shared by several engines are listed once.
        shared: list[tuple[dict[str, Any], list[str]]] = []
        for r in here:
            stages = {s: r["stages"][s] for s in r.get("shared_stages", [])}
            match = next((engines for got, engines in shared if got == stages), None)
            if match is None:
                shared.append((stages, [engine_of(r)]))
            else:
                match.append(engine_of(r))
        for stages, engines in shared:
            for stage, figures in stages.items():
                who = "base: " + ", ".join(engines)
                lines.append(_row([f"{rows:,}", who, stage, *_stage_cells(figures)]))
        for r in here:
            for stage in STAGES:
                if stage in r["stages"] and stage not in r.get("shared_stages", []):
                    figures = r["stages"][stage]
                    lines.append(_row([f"{rows:,}", engine_of(r), stage, *_stage_cells(figures)]))
            total = {"seconds": r["total_seconds"], "cpu_seconds": r.get("total_cpu_seconds"),
                     "peak_rss_mib": r["peak_rss_mib"]}  # fmt: skip
            lines.append(_row([f"{rows:,}", engine_of(r), "**total**", *_stage_cells(total)]))
    lines += ["", *_ratios(runs), *_slope_table(runs)]
    return "\n".join(lines).rstrip() + "\n"


RATIO_COLUMNS = ("rows", "engine", "features s", "baseline s", "time ratio",
                 "peak RSS MiB", "baseline MiB", "memory ratio")  # fmt: skip


def _ratios(runs: list[dict[str, Any]]) -> list[str]:
    """The features stage on each engine against ``baseline`` at the same size."""
    feats = [r for r in runs if "features" in r["stages"]]
    base = {r["rows"]: r["stages"]["features"] for r in feats if engine_of(r) == "baseline"}
    pairs = [
        (r, base[r["rows"]]) for r in feats if engine_of(r) != "baseline" and r["rows"] in base
    ]
    if not pairs:
        return []
    lines = [
        "features stage against `baseline` (the code before #19) at the same size; "
        "#19's targets at 20M: ≤ 150 s and ≤ 4 GiB, against 698 s and 11.1 GiB:",
        "",
        _row(RATIO_COLUMNS),
        "|" + " --- |" * 8,
    ]
    for r, b in pairs:
        f = r["stages"]["features"]
        lines.append(_row([
            f"{r['rows']:,}", engine_of(r),
            f"{f['seconds']:.1f}", f"{b['seconds']:.1f}", ratio_text(f["seconds"], b["seconds"]),
            f"{f['peak_rss_mib']:,.0f}", f"{b['peak_rss_mib']:,.0f}",
            ratio_text(f["peak_rss_mib"], b["peak_rss_mib"]),
        ]))  # fmt: skip
    return [*lines, ""]


def _slope_table(runs: list[dict[str, Any]]) -> list[str]:
    """Per engine with two sizes or more: cost ∝ rows^slope."""
    groups = {e: _slopes(g) for e, g in _by_engine(runs).items() if len({r["rows"] for r in g}) > 1}
    if not groups:
        return []
    lines = [
        "slope = d log(cost) / d log(rows), per engine (1 is linear):",
        "",
        _row(["engine", "total s", "total CPU s", "peak RSS", "features s", "features RSS"]),
        "|" + " --- |" * 6,
    ]
    keys = ("total_seconds", "total_cpu_seconds", "peak_rss_mib", "features_seconds",
            "features_peak_rss_mib")  # fmt: skip
    lines += [_row([e, *(_fmt_slope(s[k]) for k in keys)]) for e, s in groups.items()]
    return lines


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
        "engines": "generate, validate and publish once per size (current code); features, "
        "train and evaluate per engine on a hard-link copy of the published data",
    }


def _write_report(
    out: Path,
    args: argparse.Namespace,
    runs: list[dict[str, Any]],
    started: float,
    *,
    complete: bool,
) -> str:
    runs = sorted(runs, key=_order)
    report = {
        "benchmark": "scale",
        "complete": complete,
        "conditions": _conditions(args),
        "runs": runs,
        "slopes": {e: _slopes(g) for e, g in _by_engine(runs).items()},
        "machine": machine(),
        "wall_s": round(time.time() - started, 1),
    }
    write_json(out / "scale.json", report)
    table = markdown(report)
    write_atomic(out / "scale.md", table)
    plot(report, out / "scale.png")
    return table


def _forecast(rows: int, done: list[dict[str, Any]]) -> tuple[float, float] | None:
    """Expected seconds and peak MiB at ``rows`` from an engine's smaller runs (same stages)."""
    done = [r for r in done if r["rows"] < rows]
    if not done:
        return None
    prev, xs = done[-1], [r["rows"] for r in done]
    grow = slope(xs, [r["total_seconds"] for r in done]) or 1.0
    peak = slope(xs, [r["peak_rss_mib"] for r in done]) or 1.0
    scale = rows / prev["rows"]
    return prev["total_seconds"] * scale**grow, prev["peak_rss_mib"] * scale**peak


def _parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated interaction counts")
    parser.add_argument("--engines", default="duckdb",
                        help=f"comma-separated, of {', '.join(ENGINES)}")  # fmt: skip
    parser.add_argument("--engine-sizes", action="append", default=[], metavar="ENGINE=N[,N]",
                        help="sizes one engine runs instead of --sizes (repeatable), "
                        "e.g. spark=5000000")  # fmt: skip
    parser.add_argument("--stages", default=",".join(STAGES),
                        help="comma-separated; the stages they need run too")  # fmt: skip
    parser.add_argument("--baseline", type=Path, default=None,
                        help="checkout of the code before #19 (baseline engine)")  # fmt: skip
    parser.add_argument("--dim", type=int, default=32, help="two-tower embedding size")
    parser.add_argument("--replicas", type=int, default=2,
                        help="training replicas (logical CPU devices)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary homes")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="folder for scale.json/.md/.png")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="run a size whose expected peak exceeds free memory")  # fmt: skip
    parser.add_argument("--replot", action="store_true",
                        help="redraw scale.png/.md from scale.json")  # fmt: skip
    parser.add_argument("--add", action="store_true",
                        help="keep the runs already in scale.json (same conditions) "
                        "and add or replace these")  # fmt: skip
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    return parser, parser.parse_args(argv)


def _sizes(text: str) -> list[int]:
    return sorted({int(s) for s in text.split(",") if s.strip()})


def _plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[int, list[str]]:
    """Which engines run at each size, smallest size first."""
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if not engines or unknown:
        parser.error(f"--engines: {unknown or 'none'}; expected some of {', '.join(ENGINES)}")
    own: dict[str, list[int]] = {}
    for item in args.engine_sizes:
        engine, _, sizes = item.partition("=")
        if engine not in engines or not sizes:
            parser.error(f"--engine-sizes {item!r}: expected ENGINE=N[,N] for one of --engines")
        own[engine] = _sizes(sizes)
    plan: dict[int, list[str]] = {}
    for engine in sorted(engines, key=ENGINES.index):
        for rows in own.get(engine) or _sizes(args.sizes):
            plan.setdefault(rows, []).append(engine)
    if not plan or min(plan) < 1000:
        parser.error("--sizes needs interaction counts >= 1000")
    return dict(sorted(plan.items()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sizes on the engines, print the table, write scale.json/.md/.png."""
    parser, args = _parse_args(argv)
    if args.stage:
        return _child(args.stage, args.home)

    out: Path = args.out
    if args.replot:
        redraw(out / "scale.json", markdown, plot)
        return 0
    plan = _plan(parser, args)
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    if not wanted or set(wanted) - set(STAGES):
        parser.error(f"--stages: expected some of {', '.join(STAGES)}")
    stages = stages_for(wanted)
    details: dict[str, str] = {"spark": os.environ.get("RECOPS_SPARK_MASTER", "local[2]")}
    baseline: Path | None = None
    if any("baseline" in engines for engines in plan.values()):
        if args.baseline is None:
            parser.error("--engines baseline needs --baseline DIR (a checkout of 8a88542)")
        baseline = args.baseline.resolve()
        details["baseline"] = check_baseline(baseline)
    workdir = args.workdir or Path(tempfile.gettempdir())
    runs: list[dict[str, Any]] = []
    if args.add and (out / "scale.json").is_file():
        # A long size (20M) or another engine can be measured later and joined to the same
        # report, but only with figures taken under the same conditions.
        earlier = json.loads((out / "scale.json").read_text())
        train = _conditions(args)["train"]
        if earlier["conditions"]["train"] != train:
            parser.error(
                f"--add: scale.json was measured with {earlier['conditions']['train']!r}, "
                f"not {train!r}"
            )
        now = {(rows, e) for rows, engines in plan.items() for e in engines}
        runs = [r for r in earlier["runs"] if (r["rows"], engine_of(r)) not in now]
    started = time.time()
    measured, failed, table = 0, 0, ""
    for rows, engines in plan.items():
        go = []
        for engine in engines:
            done = [r for r in sorted(runs, key=_order)
                    if engine_of(r) == engine and set(r["stages"]) == set(stages)]  # fmt: skip
            guess = _forecast(rows, done)
            if guess is None:
                go.append(engine)
                continue
            seconds, peak = guess
            print(f"{rows:,} rows on {engine}: expect about {seconds / 60:.0f} min and a peak "
                  f"of {peak / 1024:.1f} GiB", flush=True)  # fmt: skip
            free = _available_mib()
            if free is not None and peak > 0.9 * free and not args.force:
                print(f"skipping {rows:,} rows on {engine}: the expected peak is above 90 % of "
                      f"the {free / 1024:.1f} GiB available (--force runs it anyway)",
                      flush=True)  # fmt: skip
                continue
            go.append(engine)
        if not go:
            continue
        done = run_size(rows, engines=go, stages=stages, dim=args.dim, replicas=args.replicas,
                        workdir=workdir, baseline=baseline, details=details)  # fmt: skip
        runs, measured, failed = runs + done, measured + len(done), failed + len(go) - len(done)
        if not done:
            continue
        # Written after every size, so a long run stopped midway keeps what it measured.
        complete = measured == sum(len(e) for e in plan.values())
        table = _write_report(out, args, runs, started, complete=complete)
    print(table)
    return 1 if failed or not measured else 0


if __name__ == "__main__":
    sys.exit(main())
