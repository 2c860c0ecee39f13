"""``python -m recops.cli.dag_test_runner``: ``airflow dags test`` whose runs the UI can show.

``airflow dags test`` runs every task in its own process, without an executor, which
leaves three marks on the run in the Airflow UI:

- **No task logs.** The task logs go to the command's stdout only, so the UI answers
  "Log file not found on worker". This runner tees its own stdout and stderr, splits the
  lines by task instance (``[DAG TEST] starting task_id=... map_index=...``), and writes
  each one, as the JSON lines Airflow's task handler writes, to the file the UI reads
  (``[logging] base_log_folder`` plus ``log_filename_template``, one file per attempt).
- **Absurd run durations.** ``dags test`` stamps the run's ``start_date`` with its
  *logical* date (``airflow.models.dagrun.get_or_create_dagrun``), so a MovieLens run for
  1998 read "Total: 10452d". The runner sets it to when the run was created.
- **Deleted runs.** ``dags test`` deletes the DAG's run at the same logical date before
  it starts, so a second ``make demo`` deleted the run a model version's lineage links
  to (a 404). The runner picks the first free logical date in the same daily data
  interval instead (the wanted date, then one minute later, and so on), so every run
  is kept, as a run triggered in the UI would be.

We keep ``dags test`` rather than the real scheduler because the demo must also run
where no API server or scheduler is up (CI, ``make demo`` before ``make ui``), and
because it starts each task at once instead of a scheduler loop later.

Prints ``[RECOPS] run_id=...`` and ``[RECOPS] logical_date=...`` lines for the caller
(``recops.cli.dag_runs.run_dag_test``); exits 1 when the run failed. Airflow is imported
only inside ``main``: this module is run as a program, never imported by the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["LOGICAL_DATE_MARK", "RUN_ID_MARK", "json_log_lines", "main", "split_by_task"]

#: Prefix of the lines this runner prints for its caller.
RUN_ID_MARK = "[RECOPS] run_id="
LOGICAL_DATE_MARK = "[RECOPS] logical_date="
_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
_END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: A structlog console line: ``2026-12-06T17:39:09.458339Z [info     ] event [logger] k=v``.
_CONSOLE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z?) \[(\w+)\s*\] (.*)$")
_LOGGER_TAIL = re.compile(r"^(.*)\s+\[([\w.\-]+)\]((?: \S+=.*)?)$")
#: How far past the wanted logical date a free one is looked for (same daily interval).
_MAX_SHIFT_MINUTES = 23 * 60


def split_by_task(lines: list[str]) -> dict[tuple[str, int], list[list[str]]]:
    """The lines of each task instance, one list per time it ran, keyed (task, map index).

    A task's lines run from its ``[DAG TEST] starting`` line to its ``end task`` line.
    """
    out: dict[tuple[str, int], list[list[str]]] = {}
    current: list[str] | None = None
    for line in lines:
        if start := _START.search(line):
            current = []
            out.setdefault((start[1], int(start[2])), []).append(current)
        if current is not None:
            current.append(line)
        if _END.search(line):
            current = None
    return out


def json_log_lines(lines: list[str]) -> list[str]:
    """Console log lines as the JSON lines Airflow's task log handler writes.

    Lines without a timestamp (a traceback, a library's print) inherit the previous
    line's timestamp; they are errors only inside an error's traceback.
    """
    out: list[str] = []
    timestamp: str | None = None
    level = "info"
    for raw in lines:
        line = _ANSI.sub("", raw).rstrip("\n")
        if not line.strip():
            continue
        record: dict[str, Any]
        if match := _CONSOLE.match(line):
            timestamp, level, rest = match[1], match[2].lower(), match[3]
            record = {"timestamp": timestamp, "level": level}
            if tail := _LOGGER_TAIL.match(rest):
                record["event"] = tail[1].rstrip() + tail[3]
                record["logger"] = tail[2]
            else:
                record["event"] = rest
        else:
            record = {"event": line, "level": level if level in {"error", "critical"} else "info"}
            if timestamp is not None:
                record["timestamp"] = timestamp
        out.append(json.dumps(record))
    return out


@contextmanager
def _tee() -> Iterator[list[str]]:
    """Copy everything written to fds 1 and 2 (C libraries too) to stdout and a list."""
    lines: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sentinel = f"\x00recops-tee-{os.getpid()}\x00"

    def pump() -> None:
        # Stops at the sentinel rather than at EOF: a daemon a task started may hold the
        # pipe's write end for hours.
        with os.fdopen(read_fd, "r", errors="replace", newline="") as source:
            for line in source:
                head, found, _ = line.partition(sentinel)
                if head:
                    os.write(saved_out, head.encode())
                    lines.append(head)
                if found:
                    return

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield lines
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(1, (sentinel + "\n").encode())
        thread.join(timeout=60)
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)


def _free_logical_date(dag_id: str, wanted: datetime) -> datetime:
    # The first logical date from `wanted` on, minute by minute, that no run of the DAG
    # holds: `dags test` would delete that run. Same day, so the same data interval.
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        taken = set(
            session.scalars(
                select(DagRun.logical_date).where(
                    DagRun.dag_id == dag_id,
                    DagRun.logical_date >= wanted,
                    DagRun.logical_date <= wanted + timedelta(minutes=_MAX_SHIFT_MINUTES),
                )
            )
        )
    taken_utc = {
        t.replace(tzinfo=wanted.tzinfo) if t.tzinfo is None else t for t in taken if t is not None
    }
    for minute in range(_MAX_SHIFT_MINUTES + 1):
        candidate = wanted + timedelta(minutes=minute)
        if candidate not in taken_utc:
            return candidate
    return wanted  # a day's worth of runs: let `dags test` replace the first


def _dags_test(dag_id: str, logical_date: datetime, conf: str) -> int:
    # What `airflow dags test` does from its __main__, in this process (so its output
    # goes through our tee).
    from airflow.cli import cli_parser
    from airflow.configuration import write_default_airflow_configuration_if_needed

    write_default_airflow_configuration_if_needed()
    args = cli_parser.get_parser().parse_args(
        ["dags", "test", dag_id, logical_date.isoformat(), "--conf", conf]
    )
    try:
        args.func(args)
    except SystemExit as exc:  # "DagRun failed", or an argument error
        return 0 if exc.code in (None, 0) else 1
    return 0


def _finish(dag_id: str, logical_date: datetime, lines: list[str]) -> str | None:
    """Fix the run's start date and write each task instance's log; returns the run id."""
    from airflow.configuration import conf
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.log.file_task_handler import FileTaskHandler
    from airflow.utils.session import create_session
    from sqlalchemy import select

    base = Path(conf.get("logging", "base_log_folder"))
    handler = FileTaskHandler(base_log_folder=str(base))
    segments = split_by_task(lines)
    with create_session() as session:
        run = session.scalar(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date)
        )
        if run is None:
            return None
        run.start_date = getattr(run, "created_at", None) or run.run_after
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id
            )
        ).all()
        for ti in tis:
            runs = segments.get((ti.task_id, ti.map_index), [])
            final = max(int(ti.try_number or 1), 1)
            # Retries inside `dags test` ran as earlier attempts; a reschedule (a sensor's
            # next poke) continues the same one, as Airflow's own handler appends to it.
            first = max(final - len(runs) + 1, 1)
            for i, part in enumerate(runs):
                attempt = min(first + i, final)
                path = base / handler._render_filename(ti, attempt, session=session)
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as out:
                    out.writelines(f"{record}\n" for record in json_log_lines(part))
        return str(run.run_id)


def main(argv: list[str] | None = None) -> int:
    """Run ``airflow dags test`` as described above; 0 when the run succeeded."""
    parser = argparse.ArgumentParser(prog="python -m recops.cli.dag_test_runner")
    parser.add_argument("dag_id")
    parser.add_argument("logical_date", help="ISO date or date-time (UTC when naive)")
    parser.add_argument("--conf", default="{}")
    args = parser.parse_args(argv)
    wanted = datetime.fromisoformat(args.logical_date)
    if wanted.tzinfo is None:
        from datetime import UTC

        wanted = wanted.replace(tzinfo=UTC)
    # Line-buffered, so the caller's task bar follows the tasks as they run.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)
    import airflow.settings  # noqa: F401  (configures the ORM, as the CLI does)

    logical = _free_logical_date(args.dag_id, wanted)
    print(f"{LOGICAL_DATE_MARK}{logical.isoformat()}", flush=True)
    with _tee() as lines:
        code = _dags_test(args.dag_id, logical, args.conf)
    run_id = _finish(args.dag_id, logical, lines)
    print(f"{RUN_ID_MARK}{run_id or ''}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
