"""Airflow as a subprocess: the metadata DB, ``airflow dags test`` with a task bar, DAG shape.

The embedded profile runs DAGs with ``airflow dags test``, through
``recops.cli.dag_test_runner`` so that each run keeps its task logs where the UI reads
them, a true duration, and every earlier run; this module starts it with the profile's
environment, keeps its whole output in ``RECOPS_HOME/logs``, follows its log lines to
draw one task bar, and reads a DAG's tasks from its file without importing Airflow (so
``recops --help`` and the DAG-structure check stay fast).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import typer

from recops.cli.common import fail
from recops.config import PROMOTION_POOL, REPO_ROOT, Settings, airflow_env

__all__ = [
    "DAG_ID",
    "DagTestRun",
    "DagTestTracker",
    "check_conf",
    "dag_task_ids",
    "ensure_airflow_db",
    "promote_challengers",
    "run_dag_test",
]

DAG_ID = "recsys_nightly"
#: The nightly's first task: it skips the run when the day's data never came.
SENSOR_TASK = "wait_for_data"


def _airflow_cmd(settings: Settings) -> tuple[str, dict[str, str]]:
    # The venv's airflow, with the embedded profile's environment on top of ours.
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"
    return exe, {**os.environ, **airflow_env(settings)}


def _airflow(args: list[str], settings: Settings, *, check: bool = True) -> int:
    # Setup chatter (migrations, pools) goes to a log file; only a failure is shown.
    exe, env = _airflow_cmd(settings)
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"airflow-{'-'.join(a for a in args[:2] if a.isidentifier())}.log"
    with log_path.open("a") as log:
        proc = subprocess.run(
            [exe, *args], env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if check and proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-15:]
        typer.echo("\n".join(tail), err=True)
        fail(
            f"`airflow {' '.join(args)}` exited with {proc.returncode}",
            f"its output is in {log_path}; `make clean` starts from an empty RECOPS_HOME",
        )
    return proc.returncode


def dag_task_ids(dag_id: str, dags_dir: Path | None = None) -> list[str]:
    """Task ids of a TaskFlow DAG, read from its file (``dags/<dag_id>.py``) without Airflow.

    One DAG per file, file name = dag_id (house rule), so the ``@task`` functions inside
    the ``@dag`` function are its tasks. A mapped task counts once here. Empty when the file
    is absent (installed without the source checkout).
    """
    dag_fn = _dag_function(dag_id, dags_dir)
    if dag_fn is None:
        return []
    return [
        node.name
        for node in dag_fn.body
        if isinstance(node, ast.FunctionDef)
        and any(_decorator_name(d) == "task" for d in node.decorator_list)
    ]


def _decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    while isinstance(target, ast.Attribute):  # @task.virtualenv -> task
        target = target.value
    return target.id if isinstance(target, ast.Name) else ""


def _dag_function(dag_id: str, dags_dir: Path | None) -> ast.FunctionDef | None:
    path = (dags_dir or REPO_ROOT / "dags") / f"{dag_id}.py"
    if not path.is_file():
        return None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == dag_id:
            return node
    return None


class DagTestTracker:
    """Follows ``airflow dags test`` log lines: which tasks started, finished and failed.

    ``dag.test()`` logs ``[DAG TEST] starting task_id=X map_index=N`` and ``[DAG TEST] end
    task ...`` around each task instance, and the Execution API logs ``new_state=failed``
    for a failed one. Mapped instances are only known once they start, so ``total`` grows
    by one for each map index beyond the first.
    """

    _START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
    _END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")

    def __init__(self, task_ids: list[str]) -> None:
        self.task_ids = list(task_ids)
        self.started: list[tuple[str, int]] = []
        self.finished: set[tuple[str, int]] = set()
        self.failed: list[tuple[str, int]] = []
        self.current: tuple[str, int] | None = None
        self.current_lines: list[str] = []
        self.failed_lines: list[str] = []
        self.run_failed = False
        self.skipped_reason = ""

    def feed(self, line: str) -> None:
        """Update the state from one log line."""
        if start := self._START.search(line):
            self.current = (start[1], int(start[2]))
            self.started.append(self.current)
            self.current_lines = []
        self.current_lines.append(line)
        if self.current == (SENSOR_TASK, -1) and "Skipping task." in line:
            # The whole run is skipped: its day's data never came (recops.arrival).
            self.skipped_reason = line.split("reason=", 1)[-1].strip().strip("'\"")
        if self.current is not None and (
            "new_state=failed" in line or "Task failed with exception" in line
        ):
            if self.current not in self.failed:
                self.failed.append(self.current)
        if end := self._END.search(line):
            key = (end[1], int(end[2]))
            self.finished.add(key)
            if key in self.failed:
                self.failed_lines = list(self.current_lines)
            self.current = None
        self.run_failed |= "DagRun failed" in line or (
            "DagRun Finished" in line and "state=failed" in line
        )

    @property
    def total(self) -> int:
        """Task instances known so far: every task once, each map index of a mapped one."""
        mapped = {task for task, index in self.started if index >= 0}
        known = {(task, -1) for task in self.task_ids if task not in mapped}
        return len(known | set(self.started))

    def describe(self) -> str:
        """Short text for the bar: the running task, or the last state."""
        if self.current is None:
            return "waiting for the next task" if not self.run_failed else "run failed"
        task, index = self.current
        return f"running {task}" + (f"[{index}]" if index >= 0 else "")

    def failed_names(self) -> list[str]:
        """Failed task instances as ``task`` or ``task[map_index]``."""
        return [task + (f"[{index}]" if index >= 0 else "") for task, index in self.failed]


class DagTestRun(NamedTuple):
    """One finished ``airflow dags test`` run.

    Attributes:
        dag_id: The DAG that ran.
        log_path: The command's whole output, under ``RECOPS_HOME/logs``.
        run_id: The Airflow run id (empty when the run was never created).
        logical_date: The logical date it ran at: the one asked for, or the first free
            one after it in the same data interval (earlier runs are kept).
    """

    dag_id: str
    log_path: Path
    run_id: str
    logical_date: str

    @property
    def url(self) -> str:
        """The run's page in the Airflow UI (``make ui``)."""
        from recops.links import airflow_run_url

        return airflow_run_url(self.dag_id, self.run_id) if self.run_id else ""


def run_dag_test(
    settings: Settings,
    logical_date: str,
    conf: str,
    dag_id: str = DAG_ID,
    *,
    show_progress: bool = False,
) -> DagTestRun:
    """Run ``airflow dags test`` and keep its whole output in ``RECOPS_HOME/logs``.

    The run goes through ``recops.cli.dag_test_runner``: its task logs land where the
    Airflow UI reads them, its duration is true, and an earlier run at the same logical
    date is kept (this one takes the next free minute of the same data interval). With
    ``show_progress`` a task bar replaces the log on the terminal; otherwise the log
    streams to stdout as it comes (CI logs keep everything).
    """
    # `airflow dags test` can exit 0 on a failed run, so its final line is checked too.
    _, env = _airflow_cmd(settings)
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = re.sub(r"[^0-9A-Za-z]+", "", logical_date)[:15]
    log_path = log_dir / f"{dag_id}-{stamp}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    tracker = DagTestTracker(dag_task_ids(dag_id))
    from recops.cli.dag_test_runner import LOGICAL_DATE_MARK, RUN_ID_MARK

    run_id, logical = "", logical_date
    proc = subprocess.Popen(
        [sys.executable, "-m", "recops.cli.dag_test_runner", dag_id, logical_date, "--conf", conf],
        env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    with log_path.open("w") as log, _task_bar(show_progress, dag_id) as update:
        for line in proc.stdout:
            log.write(line)
            tracker.feed(line)
            if line.startswith(RUN_ID_MARK):
                run_id = line.removeprefix(RUN_ID_MARK).strip()
            elif line.startswith(LOGICAL_DATE_MARK):
                logical = line.removeprefix(LOGICAL_DATE_MARK).strip()
            if update is None:
                sys.stdout.write(line)
            else:
                update(tracker)
        returncode = proc.wait()
    run = DagTestRun(dag_id=dag_id, log_path=log_path, run_id=run_id, logical_date=logical)
    if returncode != 0 or tracker.run_failed or tracker.failed:
        if show_progress and tracker.failed_lines:
            typer.echo("".join(tracker.failed_lines[-40:]), err=True)
        failed = ", ".join(tracker.failed_names()) or "see the log"
        where = f"; in the Airflow UI (`make ui`): {run.url}" if run.url else ""
        fail(
            f"{dag_id} run for {logical} failed (failed task: {failed})",
            f"the full log is {log_path}{where}",
        )
    if tracker.skipped_reason:
        fail(
            f"{dag_id} run for {logical} was skipped: {tracker.skipped_reason}",
            "pick a day with data (--date), or land that day first",
        )
    return run


@contextmanager
def _task_bar(enabled: bool, dag_id: str) -> Iterator[Callable[[DagTestTracker], None] | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"{dag_id} tasks"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=Console(stderr=True),
    ) as progress:  # fmt: skip
        bar = progress.add_task("starting airflow dags test", total=None)

        def update(tracker: DagTestTracker) -> None:
            progress.update(
                bar, completed=len(tracker.finished), total=tracker.total or None,
                description=tracker.describe(),
            )  # fmt: skip

        yield update


def ensure_airflow_db(settings: Settings) -> None:
    """Create the embedded Airflow metadata DB and the promotion pool, once per home."""
    if not (settings.airflow_home / "airflow.db").exists():
        typer.echo("Setting up the Airflow metadata DB (SQLite) ...")
        _airflow(["db", "migrate"], settings)
        _airflow(["pools", "set", PROMOTION_POOL, "1", "one promotion at a time"], settings)


def check_conf(conf: str) -> dict[str, Any]:
    """Parse ``--conf`` and check it against recsys_nightly's Param schemas before any work."""
    from recops.params import NIGHTLY_SCHEMAS, check_params

    try:
        params = json.loads(conf)
    except json.JSONDecodeError as exc:
        fail(
            f"--conf is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno} (char {exc.pos})",
            "quote keys and strings with double quotes inside single shell quotes: "
            "--conf '{\"epochs\": 2}'",
        )
    if not isinstance(params, dict):
        fail(
            f"--conf must be a JSON object, got {type(params).__name__}",
            "e.g. --conf '{\"epochs\": 2}'",
        )
    try:
        return check_params(params, NIGHTLY_SCHEMAS)
    except ValueError as exc:
        fail(
            f"--conf: {exc}",
            f"{DAG_ID}'s Params and their ranges are in its Trigger form in `make ui`",
        )


def promote_challengers(settings: Settings, *, show_progress: bool = False) -> list[str]:
    """Run recsys_promote for each model whose newest version the gate blessed.

    A scheduler would do this on the ``recops_blessed`` asset; ``airflow dags test`` runs
    one DAG, so the demo triggers the promotion itself with the same Params a UI user
    would set. A retriever's run also rolls out its paired ranker, so the ranker's own
    run is skipped then.

    Returns:
        ``"<model> v<version>"`` for each model whose ``stable`` moved.
    """
    from datetime import UTC, datetime, timedelta

    from recops.promotion import pair_refusal, served_stable
    from recops.registry import registry_status

    before = {model: served_stable(settings, model) for model in settings.promotable_models}
    when = datetime.now(UTC).replace(microsecond=0)
    for i, model in enumerate(settings.promotable_models):
        status = registry_status(settings, model)
        newest = status.versions[0] if status.versions else None
        if (
            newest is None
            or not newest["blessed"]
            or served_stable(settings, model) == newest["version"]
        ):
            continue
        if model == settings.ranking_model_name and (
            refusal := pair_refusal(settings, int(newest["version"]))
        ):
            # As the nightly's announcement: a ranker whose retriever the gate refused
            # stays where it is; the promotion would refuse it (and fail the command).
            typer.echo(f"      not promoted: {refusal}")
            continue
        conf = json.dumps(
            {"model_name": model, "version": newest["version"], "reason": "recops demo"}
        )
        when_i = (when + timedelta(seconds=i)).isoformat()
        run_dag_test(settings, when_i, conf, dag_id="recsys_promote", show_progress=show_progress)
    after = {model: served_stable(settings, model) for model in settings.promotable_models}
    return [f"{m} v{v}" for m, v in after.items() if v is not None and v != before[m]]
