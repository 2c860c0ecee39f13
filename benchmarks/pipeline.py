"""Pipeline benchmark: per-task wall times of a DAG run and Airflow's overhead share (a script).

    python -m benchmarks.pipeline [--conn sqlite:///.recops/airflow/airflow.db]
                                  [--dag-id recsys_nightly] [--run-id RUN]

Reads one run of a DAG (the latest by default) from the Airflow metadata DB, SQLite or
Postgres alike (``run_timings``), and reports:

* each task instance's start, end and duration (mapped ``compress`` tasks one by one);
* the run's wall time, the time covered by at least one running task, and the
  **overhead share** = (wall − covered) / wall: scheduling, task start-up and the gaps
  between tasks, where no task code runs;
* the sum of task durations (above the covered time when tasks overlap).

By default it reads the demo's SQLite DB (``$RECOPS_HOME/airflow/airflow.db``, left by
``make demo``). Results: ``benchmarks/results/pipeline.json``, ``pipeline.md`` and
``pipeline.png`` (a Gantt chart of the tasks, gaps shaded).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS_DIR, machine, pyplot, write_atomic, write_json


def _as_utc(value: Any) -> datetime | None:
    # Postgres hands back aware datetimes; SQLite hands back naive UTC strings.
    if value is None or value == "":
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def covered_seconds(intervals: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of ``intervals`` clipped to ``[lo, hi]`` (seconds)."""
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo))
    total, cur_a, cur_b = 0.0, None, None
    for a, b in clipped:
        if cur_b is None or a > cur_b:
            if cur_b is not None and cur_a is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


def run_timings(sql_alchemy_conn: str, dag_id: str, run_id: str | None = None) -> dict[str, Any]:
    """Task and run timings of one DAG run, read from Airflow's metadata DB.

    Works on any database Airflow supports (plain SQL through SQLAlchemy; tested on SQLite,
    written for Postgres too). Only the latest try of each task instance is in
    ``task_instance``; its ``try_number`` is reported.

    The run's window is ``dag_run.start_date`` to ``dag_run.end_date``. Where those are
    unusable it falls back, and says so in ``window``: ``airflow dags test`` stamps
    ``start_date`` with the logical date, so a start before ``created_at`` is replaced by
    ``created_at``; a missing end by the last task end (by now while the run is running).

    Args:
        sql_alchemy_conn: SQLAlchemy URL of the metadata DB
            (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``).
        dag_id: The DAG.
        run_id: The run; the latest started run of ``dag_id`` when None.

    Returns:
        ``dag_id``, ``run_id``, ``state``, ``window`` (start, end and their sources),
        ``wall_s``, ``covered_s``, ``overhead_s``, ``overhead_share``,
        ``task_seconds_sum``, ``parallelism`` (sum / covered), ``tasks`` (one dict per task
        instance, by start) and ``not_run`` (task instances without a start).

    Raises:
        LookupError: No such DAG run.
    """
    from sqlalchemy import create_engine, text

    engine = create_engine(sql_alchemy_conn)
    try:
        with engine.connect() as conn:
            query = (
                "SELECT run_id, state, start_date, end_date, created_at, logical_date, "
                "run_type, conf FROM dag_run WHERE dag_id = :dag_id"
            )
            params: dict[str, Any] = {"dag_id": dag_id}
            if run_id is not None:
                query += " AND run_id = :run_id"
                params["run_id"] = run_id
            # Latest first: the most recently created run (start_date can be a logical date).
            query += " ORDER BY created_at DESC, id DESC"
            run = conn.execute(text(query), params).mappings().first()
            if run is None:
                what = f"run {run_id!r} of " if run_id else "any run of "
                raise LookupError(
                    f"no {what}DAG {dag_id!r} in {engine.url.render_as_string(hide_password=True)}"
                )
            rows = (
                conn.execute(
                    text(
                        "SELECT task_id, map_index, rendered_map_index, state, start_date, "
                        "end_date, duration, try_number FROM task_instance "
                        "WHERE dag_id = :dag_id AND run_id = :run_id "
                        "ORDER BY start_date, task_id, map_index"
                    ),
                    {"dag_id": dag_id, "run_id": run["run_id"]},
                )
                .mappings()
                .all()
            )
    finally:
        engine.dispose()
    return _summarise(dag_id, dict(run), [dict(r) for r in rows])


def _summarise(dag_id: str, run: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = []
    not_run: list[dict[str, Any]] = []
    for row in rows:
        start, end = _as_utc(row["start_date"]), _as_utc(row["end_date"])
        name = (
            row["task_id"]
            if int(row["map_index"]) < 0
            else f"{row['task_id']}[{int(row['map_index'])}]"
        )
        entry = {
            "task": name,
            "task_id": row["task_id"],
            "map_index": int(row["map_index"]),
            "label": row.get("rendered_map_index") or None,
            "state": row["state"],
            "try_number": row["try_number"],
        }
        if start is None:
            not_run.append(entry)
            continue
        entry["start"], entry["end"] = start, end
        tasks.append(entry)

    created = _as_utc(run.get("created_at"))
    start, start_source = _as_utc(run["start_date"]), "dag_run.start_date"
    if start is None or (created is not None and start < created):
        start, start_source = created, "dag_run.created_at"
    if start is None and tasks:
        start, start_source = min(t["start"] for t in tasks), "first task start"
    ends = [t["end"] for t in tasks if t["end"] is not None]
    end, end_source = _as_utc(run["end_date"]), "dag_run.end_date"
    if end is None or (start is not None and end < start):
        if run["state"] in {"running", "queued"}:  # still going: its window so far
            end, end_source = datetime.now(UTC), "now (run not finished)"
        else:
            end, end_source = (
                max([*ends, *(t["start"] for t in tasks)], default=start),
                "last task end",
            )
    if start is None or end is None:
        raise LookupError(f"run {run['run_id']!r} of {dag_id!r} has not started")

    def rel(when: datetime) -> float:
        return (when - start).total_seconds()

    wall = max(0.0, rel(end))
    intervals = []
    for t in tasks:
        t_end = t["end"] if t["end"] is not None else end
        t["start_s"], t["end_s"] = round(rel(t["start"]), 3), round(rel(t_end), 3)
        t["seconds"] = round((t_end - t["start"]).total_seconds(), 3)
        t["start"], t["end"] = t["start"].isoformat(), (t["end"].isoformat() if t["end"] else None)
        intervals.append((t["start_s"], t["end_s"]))
    tasks.sort(key=lambda t: (t["start_s"], t["task"]))
    covered = covered_seconds(intervals, 0.0, wall)
    busy = sum(t["seconds"] for t in tasks)
    return {
        "dag_id": dag_id,
        "run_id": run["run_id"],
        "run_type": run.get("run_type"),
        "state": run["state"],
        "logical_date": str(_as_utc(run.get("logical_date")) or ""),
        "conf": _conf(run.get("conf")),
        "window": {
            "start": start.isoformat(),
            "start_source": start_source,
            "end": end.isoformat(),
            "end_source": end_source,
        },  # fmt: skip
        "wall_s": round(wall, 3),
        "covered_s": round(covered, 3),
        "overhead_s": round(wall - covered, 3),
        "overhead_share": round((wall - covered) / wall, 4) if wall > 0 else None,
        "task_seconds_sum": round(busy, 3),
        "parallelism": round(busy / covered, 4) if covered > 0 else None,
        "tasks": tasks,
        "not_run": not_run,
    }


def _conf(value: Any) -> dict[str, Any]:
    import json

    if isinstance(value, dict):
        return value
    if isinstance(value, str | bytes) and value:
        try:
            loaded = json.loads(value)
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return {}


def markdown(report: dict[str, Any]) -> str:
    """Run summary and the per-task table."""
    t = report["timings"]
    lines = [
        f"**{t['dag_id']}** run `{t['run_id']}` ({t['state']}): wall {t['wall_s']:.1f} s, "
        f"tasks cover {t['covered_s']:.1f} s, Airflow overhead {t['overhead_s']:.1f} s "
        f"(**{100 * (t['overhead_share'] or 0):.1f} %**), sum of task durations "
        f"{t['task_seconds_sum']:.1f} s.",
        "",
        "| task | state | try | start s | end s | seconds | share of wall |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task in t["tasks"]:
        name = task["task"] + (f" ({task['label']})" if task.get("label") else "")
        share = task["seconds"] / t["wall_s"] if t["wall_s"] else 0.0
        lines.append(
            f"| {name} | {task['state']} | {task['try_number']} | {task['start_s']:.1f} | "
            f"{task['end_s']:.1f} | {task['seconds']:.1f} | {100 * share:.1f} % |"
        )
    for task in t["not_run"]:
        lines.append(f"| {task['task']} | {task['state'] or 'none'} | | | | | |")
    return "\n".join(lines) + "\n"


def plot(timings: dict[str, Any], path: Path, variants: Sequence[str] = ()) -> None:
    """Gantt chart: one bar per task instance, gaps where no task runs shaded."""
    plt = pyplot()
    tasks = timings["tasks"]
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(tasks) + 2.2))
    colors = {
        "success": "tab:green",
        "failed": "tab:red",
        "skipped": "tab:gray",
        "running": "tab:blue",
    }
    labels = []
    for i, task in enumerate(tasks):
        label = task["task"]
        variant = task.get("label") or (
            variants[task["map_index"]]
            if task["task_id"] == "compress" and 0 <= task["map_index"] < len(variants)
            else ""
        )
        if variant:
            label += f" {variant}"
        labels.append(label)
        ax.barh(i, task["end_s"] - task["start_s"], left=task["start_s"], height=0.6,
                color=colors.get(task["state"] or "", "tab:orange"), edgecolor="black",
                linewidth=0.4)  # fmt: skip
        ax.text(
            task["end_s"] + timings["wall_s"] * 0.005,
            i,
            f"{task['seconds']:.1f} s",
            va="center",
            fontsize=8,
        )
    # Shade the stretches of the run where no task was running: Airflow's own time.
    edges = sorted((t["start_s"], t["end_s"]) for t in tasks)
    cursor = 0.0
    for a, b in [*edges, (timings["wall_s"], timings["wall_s"])]:
        if a > cursor:
            ax.axvspan(cursor, a, color="0.85", zorder=0)
        cursor = max(cursor, b)
    ax.set_yticks(range(len(tasks)))
    ax.set_yticklabels(labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, timings["wall_s"] * 1.08)
    ax.set_xlabel("seconds since the run started")
    ax.set_title(
        f"{timings['dag_id']}: wall {timings['wall_s']:.0f} s, "
        f"tasks {timings['task_seconds_sum']:.0f} s, "
        f"Airflow overhead {100 * (timings['overhead_share'] or 0):.1f} % (grey: no task running)",
        fontsize=10,
    )
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _default_conn() -> str:
    from recops.config import Settings, airflow_env

    env_conn = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if env_conn:
        return env_conn
    return airflow_env(Settings.from_env())["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def _variants_of(conf: dict[str, Any]) -> list[str]:
    # The mapped compress tasks fan out over the run's `variants` Param (default when unset).
    from recops.params import NIGHTLY_DEFAULTS

    return [str(v) for v in conf.get("variants") or NIGHTLY_DEFAULTS["variants"]]


def main(argv: Sequence[str] | None = None) -> int:
    """Read a run, print the table, write pipeline.json/.md/.png."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--conn", default=None, help="SQLAlchemy URL of the Airflow DB (default: the demo's)"
    )
    parser.add_argument("--dag-id", default="recsys_nightly")
    parser.add_argument("--run-id", default=None, help="default: the latest run")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="folder for pipeline.json/.md/.png"
    )
    args = parser.parse_args(argv)
    conn = args.conn or _default_conn()
    if conn.startswith("sqlite:///") and not Path(conn.removeprefix("sqlite:///")).is_file():
        print(f"error: no Airflow DB at {conn.removeprefix('sqlite:///')}; run `make demo` first "
              "(or pass --conn)", file=sys.stderr)  # fmt: skip
        return 2
    try:
        timings = run_timings(conn, args.dag_id, args.run_id)
    except LookupError as exc:
        print(f"error: {exc}; run `make demo` first (or pass --dag-id/--run-id)", file=sys.stderr)
        return 2
    report = {"benchmark": "pipeline", "timings": timings, "machine": machine()}
    out: Path = args.out
    write_json(out / "pipeline.json", report)
    table = markdown(report)
    write_atomic(out / "pipeline.md", table)
    plot(
        timings,
        out / "pipeline.png",
        _variants_of(timings["conf"]) if args.dag_id == "recsys_nightly" else [],
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
