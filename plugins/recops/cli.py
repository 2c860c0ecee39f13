"""The ``recops`` command line: demo, ui, status, recommend, history, rollback, bench, data.

Heavy libraries are imported inside each command, so ``recops --help`` answers at once.
Progress bars (``rich``) go to stderr, and only when stderr is a terminal and ``--json``
is not given, so stdout stays clean for scripts: with ``--json`` it carries JSON only.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from recops.cli_scale import scale_app
from recops.config import REPO_ROOT, Settings, airflow_env

app = typer.Typer(
    help="recops: MLOps for search and recommendation models.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(
    help="Fetch or generate data into the published layout.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(scale_app, name="scale")

DAG_ID = "recsys_nightly"


#: Next step for a home with no state yet.
FIRST_RUN_HINT = "run `make demo` (or `recops demo`) to ingest data, train and serve a model"
NO_MODEL_HINT = (
    "run `make demo`, or trigger recsys_promote in the Airflow UI (`make ui`) for a blessed version"
)
#: A step reporter ``(step, done, total)``; the same shape as ``recops.data.ProgressCallback``.
StepReporter = Callable[[str, int, int | None], None]


def _fail(message: str, hint: str) -> NoReturn:
    # Every error names the next thing to do; a bare traceback is a bug in this file.
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(code=1)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        _fail(str(exc), "fix or unset that environment variable (.env.example lists them all)")


def _progress_enabled(as_json: bool) -> bool:
    # Bars are for people at a terminal; pipes, CI logs and --json get none.
    return not as_json and sys.stderr.isatty()


@contextmanager
def _step_bars(enabled: bool) -> Iterator[StepReporter | None]:
    """One progress bar per step name, on stderr; yields None (report nothing) when disabled."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    bars: dict[str, TaskID] = {}
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=Console(stderr=True),
    ) as progress:  # fmt: skip

        def report(step: str, done: int, total: int | None) -> None:
            if step not in bars:
                bars[step] = progress.add_task(step, total=total)
            progress.update(bars[step], completed=done, total=total)

        yield report


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
        _fail(
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

    def feed(self, line: str) -> None:
        """Update the state from one log line."""
        if start := self._START.search(line):
            self.current = (start[1], int(start[2]))
            self.started.append(self.current)
            self.current_lines = []
        self.current_lines.append(line)
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


def _run_dag_test(
    settings: Settings,
    logical_date: str,
    conf: str,
    dag_id: str = DAG_ID,
    *,
    show_progress: bool = False,
) -> Path:
    """Run ``airflow dags test`` and keep its whole output in ``RECOPS_HOME/logs``.

    With ``show_progress`` a task bar replaces the log on the terminal; otherwise the log
    streams to stdout as it comes (CI logs keep everything). Returns the log file.
    """
    # `airflow dags test` can exit 0 on a failed run, so its final line is checked too.
    exe, env = _airflow_cmd(settings)
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = re.sub(r"[^0-9A-Za-z]+", "", logical_date)[:15]
    log_path = log_dir / f"{dag_id}-{stamp}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    tracker = DagTestTracker(dag_task_ids(dag_id))
    proc = subprocess.Popen(
        [exe, "dags", "test", dag_id, logical_date, "--conf", conf],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    with log_path.open("w") as log, _task_bar(show_progress, dag_id) as update:
        for line in proc.stdout:
            log.write(line)
            tracker.feed(line)
            if update is None:
                sys.stdout.write(line)
            else:
                update(tracker)
        returncode = proc.wait()
    if returncode != 0 or tracker.run_failed or tracker.failed:
        if show_progress and tracker.failed_lines:
            typer.echo("".join(tracker.failed_lines[-40:]), err=True)
        failed = ", ".join(tracker.failed_names()) or "see the log"
        _fail(
            f"{dag_id} run for {logical_date} failed (failed task: {failed})",
            f"the full log is {log_path}; each task's log is also in the Airflow UI (`make ui`)",
        )
    return log_path


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


def _promote_challengers(settings: Settings, *, show_progress: bool = False) -> list[str]:
    """Run recsys_promote for each model whose newest version the gate blessed.

    A scheduler would do this on the ``recops_blessed`` asset; ``airflow dags test`` runs
    one DAG, so the demo triggers the promotion itself with the same Params a UI user
    would set.
    """
    from datetime import UTC, datetime, timedelta

    from recops.pipeline import PROMOTABLE_MODELS
    from recops.promotion import served_stable
    from recops.registry import registry_status

    done = []
    when = datetime.now(UTC).replace(microsecond=0)
    for i, model in enumerate(PROMOTABLE_MODELS):
        status = registry_status(settings, model)
        newest = status.versions[0] if status.versions else None
        if (
            newest is None
            or not newest["blessed"]
            or served_stable(settings, model) == newest["version"]
        ):
            continue
        conf = json.dumps(
            {"model_name": model, "version": newest["version"], "reason": "recops demo"}
        )
        when_i = (when + timedelta(seconds=i)).isoformat()
        _run_dag_test(settings, when_i, conf, dag_id="recsys_promote", show_progress=show_progress)
        done.append(f"{model} v{newest['version']}")
    return done


#: The 1-slot pool recsys_promote's promote task runs in (one promotion at a time).
PROMOTION_POOL = "recops_promotion"


def _ensure_airflow_db(settings: Settings) -> None:
    if not (settings.airflow_home / "airflow.db").exists():
        typer.echo("Setting up the Airflow metadata DB (SQLite) ...")
        _airflow(["db", "migrate"], settings)
        _airflow(["pools", "set", PROMOTION_POOL, "1", "one promotion at a time"], settings)


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON only (no progress bars).")]


def _ingest(config: Any, as_json: bool) -> None:
    """Run ``recops.data.ingest`` with bars on stderr and print its result as JSON."""
    from recops.data import DataError, ingest
    from recops.validation import DataValidationError

    settings = _settings()
    try:
        with _step_bars(_progress_enabled(as_json)) as report:
            result = ingest(config, settings, progress=report)
    except DataValidationError as exc:
        _fail(
            str(exc),
            f"the report is under {settings.data_dir / 'reports'}; see docs/data_contracts.md",
        )
    except DataError as exc:
        _fail(
            str(exc),
            "check the network for the one-time wheel download, or use `recops data synth`",
        )
    # The result is JSON either way (scripts and the tests read it); --json only drops the bars.
    typer.echo(json.dumps(result.to_dict(), indent=2))


@data_app.command("fetch")
def data_fetch(as_json: JsonOption = False) -> None:
    """Fetch MovieLens-100K (from the recbole wheel) and publish it as parquet partitions."""
    from recops.data import IngestConfig

    _ingest(IngestConfig(source="movielens"), as_json)


@data_app.command("synth")
def data_synth(
    rows: Annotated[int, typer.Option(help="Interactions to generate.", min=1)] = 20_000,
    users: Annotated[int, typer.Option(help="Users to generate.", min=1)] = 300,
    items: Annotated[int, typer.Option(help="Items to generate.", min=1)] = 400,
    days: Annotated[
        int, typer.Option(help="Days the events span (ending 1998-04-22).", min=1)
    ] = 30,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 7,
    as_json: JsonOption = False,
) -> None:
    """Generate deterministic synthetic data with planted structure and publish it."""
    from recops.data import IngestConfig

    config = IngestConfig(
        source="synthetic", synthetic_rows=rows, synthetic_users=users,
        synthetic_items=items, synthetic_days=days, seed=seed,
    )  # fmt: skip
    _ingest(config, as_json)


@data_app.command("import")
def data_import(
    interactions: Annotated[
        Path, typer.Option(help="Interactions table (.parquet, .csv or .tsv).")
    ],
    users: Annotated[Path, typer.Option(help="Users table (.parquet, .csv or .tsv).")],
    items: Annotated[Path, typer.Option(help="Items table (.parquet, .csv or .tsv).")],
    mapping: Annotated[
        str,
        typer.Option(
            help='JSON: our column -> yours, e.g. \'{"user_id": "uid", "event_timestamp": "ts"}\'.'
        ),
    ] = "{}",
    stage_last_days: Annotated[
        int,
        typer.Option(
            help="Last N days go to staging for the nightly run; the rest is validated and published.",
            min=0,
        ),
    ] = 1,
    as_json: JsonOption = False,
) -> None:
    """Bring your own data: map your columns onto ours, validate the history, stage the last days."""
    from recops.data import DataError, ImportConfig, import_tables
    from recops.validation import DataValidationError

    try:
        columns = json.loads(mapping)
    except json.JSONDecodeError as exc:
        _fail(
            f"--mapping is not valid JSON: {exc}",
            "quote keys and values with double quotes inside single shell quotes",
        )
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        _fail(
            "--mapping must be a JSON object of column names",
            'e.g. --mapping \'{"user_id": "uid", "event_timestamp": "ts"}\' (docs/data_contracts.md)',
        )
    config = ImportConfig(
        interactions_path=str(interactions), users_path=str(users), items_path=str(items),
        mapping=columns, stage_last_days=stage_last_days,
    )  # fmt: skip
    settings = _settings()
    try:
        with _step_bars(_progress_enabled(as_json)) as report:
            result = import_tables(config, settings, progress=report)
    except (DataError, DataValidationError) as exc:
        _fail(str(exc), "see docs/data_contracts.md for the schema and the mapping")
    typer.echo(json.dumps(result.to_dict(), indent=2))


@app.command()
def demo(
    source: Annotated[str, typer.Option(help="movielens or synthetic.")] = "movielens",
    date: Annotated[
        str | None, typer.Option(help="Day to run (YYYY-MM-DD); default: the last day of data.")
    ] = None,
    conf: Annotated[str, typer.Option(help="JSON DAG Params, e.g. '{\"epochs\": 2}'.")] = "{}",
    user_id: Annotated[int, typer.Option(help="User to recommend for at the end.")] = 1,
) -> None:
    """Ingest data, run recsys_nightly end to end with `airflow dags test`, then recommend.

    Progress bars show on a terminal; the whole Airflow log is kept in RECOPS_HOME/logs.
    """
    from recops.data import DataError, IngestConfig, ingest
    from recops.validation import DataValidationError

    # Check every argument before anything is written, so a typo costs nothing.
    _check_conf(conf)
    if source not in {"movielens", "synthetic"}:
        _fail(
            f"--source {source!r} is not a source", "use --source movielens or --source synthetic"
        )
    if date is not None:
        from datetime import date as date_type

        try:
            date_type.fromisoformat(date)
        except ValueError:
            _fail(
                f"--date {date!r} is not a YYYY-MM-DD day",
                "e.g. --date 1998-04-22, or leave it out",
            )
    settings = _settings()
    settings.ensure_dirs()
    show = _progress_enabled(False)
    started = time.monotonic()
    typer.echo(f"[1/5] Ingesting {source} into {settings.data_dir} ...")
    try:
        with _step_bars(show) as report:
            ingested = ingest(IngestConfig(source=source), settings, progress=report)
    except DataValidationError as exc:
        _fail(
            str(exc),
            f"the report is under {settings.data_dir / 'reports'}; see docs/data_contracts.md",
        )
    except DataError as exc:
        _fail(
            str(exc),
            "check the network for the one-time wheel download, or try `recops demo --source synthetic`",
        )
    typer.echo(
        f"      {ingested.n_interactions} interactions in {ingested.n_partitions} daily partitions"
    )
    from recops.pipeline import logical_date_for

    day = date or ingested.last_date
    typer.echo("[2/5] Preparing Airflow (SQLite) ...")
    _ensure_airflow_db(settings)
    logical = logical_date_for(day)
    typer.echo(f"[3/5] Running `airflow dags test {DAG_ID} {logical}` (data interval {day}) ...")
    log_path = _run_dag_test(settings, logical, conf, show_progress=show)
    typer.echo(f"      log: {log_path}")
    typer.echo("[4/5] Promoting what the gate blessed with `airflow dags test recsys_promote` ...")
    promoted = _promote_challengers(settings, show_progress=show)
    typer.echo(
        f"      promoted: {', '.join(promoted) or 'nothing new (the champion keeps serving)'}"
    )
    typer.echo(f"[5/5] Top-10 for user {user_id}: retrieval top-100, then the ranker:")
    _print_recommendations(settings, user_id, 10, as_json=False)
    status_data = _status(settings)
    typer.echo("")
    typer.echo(f"champion: version {status_data['registry']['champion_version']}  "
               f"served: {status_data['serving']['versions']}  "
               f"metrics: {json.dumps(status_data['last_run_metrics'])}")  # fmt: skip
    typer.echo(
        f"REST:  http://{settings.serving_host}:{settings.rest_port}/v1/models/{settings.model_name}"
    )
    typer.echo(f"gRPC:  {settings.serving_host}:{settings.grpc_port}")
    typer.echo(
        f"demo finished in {time.monotonic() - started:.0f} s; `make ui` opens Airflow, MLflow and the Feast UI."
    )


def _check_conf(conf: str) -> dict[str, Any]:
    """Parse ``--conf`` and check it against recsys_nightly's Param schemas before any work."""
    from recops.params import NIGHTLY_SCHEMAS, check_params

    try:
        params = json.loads(conf)
    except json.JSONDecodeError as exc:
        _fail(
            f"--conf is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})",
            "quote keys and strings with double quotes inside single shell quotes: --conf '{\"epochs\": 2}'",
        )
    if not isinstance(params, dict):
        _fail(
            f"--conf must be a JSON object, got {type(params).__name__}",
            "e.g. --conf '{\"epochs\": 2}'",
        )
    try:
        return check_params(params, NIGHTLY_SCHEMAS)
    except ValueError as exc:
        _fail(
            f"--conf: {exc}",
            f"{DAG_ID}'s Params and their ranges are in its Trigger form in `make ui`",
        )


def _recommend(settings: Settings, user_id: int, k: int) -> list[dict[str, Any]]:
    """Online features → retrieval top-100 → ranker → top ``k`` (``recops.serving.recommend``)."""
    from recops.serving.recommend import RecommendConfig, RecommendError, recommend

    try:
        return recommend(RecommendConfig(user_id=user_id, k=k), settings)
    except RecommendError as exc:
        _fail(str(exc), exc.hint)
        raise  # _fail exits; this keeps the type checker informed


def _print_recommendations(settings: Settings, user_id: int, k: int, *, as_json: bool) -> None:
    recs = _recommend(settings, user_id, k)
    if as_json:
        typer.echo(json.dumps({"user_id": user_id, "recommendations": recs}, indent=2))
        return
    for rec in recs:
        typer.echo(
            f"  {rec['rank']:>2}. [{rec['item_id']:>5}] {rec['title'][:60]:<60} {rec['score']:.4f}"
        )


@app.command()
def recommend(
    user_id: Annotated[int, typer.Option("--user-id", help="User to recommend for.")],
    k: Annotated[int, typer.Option("--k", help="How many items.", min=1, max=100)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-K items for a user: online features from Feast, then the served model."""
    _print_recommendations(_settings(), user_id, k, as_json=as_json)


def _local_sqlite_missing(uri: str) -> bool:
    # An embedded-profile database that was never created: there is nothing to read, and
    # opening it would create (and migrate) an empty one just to say so.
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()


def _status(settings: Settings) -> dict[str, Any]:
    from recops.registry import RegistryStatus, registry_status
    from recops.serving.client import ServingClient

    registry_exists = not _local_sqlite_missing(settings.mlflow_tracking_uri)
    if registry_exists:
        reg = registry_status(settings)
    else:
        reg = RegistryStatus(
            model_name=settings.model_name,
            champion_version=None,
            challenger_version=None,
            versions=[],
        )
    client = ServingClient(settings.serving_host, settings.grpc_port, settings.rest_port)
    try:
        versions = client.model_status(settings.model_name)
        serving: dict[str, Any] = {"up": True, "versions": versions}
    except Exception as exc:
        serving = {"up": False, "versions": {}, "error": str(exc)[:200]}
    champion = next((v for v in reg.versions if v["version"] == reg.champion_version), None)
    state = {
        "data": settings.items_path.is_file(),
        "airflow_db": (settings.airflow_home / "airflow.db").is_file(),
        "registry": registry_exists,
        "registered_versions": len(reg.versions),
        "served": bool(serving["versions"]),
    }
    if not state["data"]:
        next_step: str | None = FIRST_RUN_HINT
    elif not state["registered_versions"]:
        next_step = (
            "run `make demo` (or trigger recsys_nightly in `make ui`) to train and register a model"
        )
    elif not serving["up"]:
        next_step = "start serving with `recops serve --detach`"
    else:
        next_step = None
    return {
        "model_name": reg.model_name,
        "registry": {
            "champion_version": reg.champion_version,
            "challenger_version": reg.challenger_version,
            "versions": [v["version"] for v in reg.versions],
        },
        "serving": {
            **serving,
            "rest": f"http://{settings.serving_host}:{settings.rest_port}",
            "grpc": f"{settings.serving_host}:{settings.grpc_port}",
        },
        "last_run_metrics": (reg.versions[0]["metrics"] if reg.versions else {}),
        "champion_metrics": champion["metrics"] if champion else {},
        "home": str(settings.home),
        "state": state,
        "next_step": next_step,
    }


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Champion version, served versions and endpoints, and the last run's metrics."""
    data = _status(_settings())
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    typer.echo(f"home       {data['home']}")
    typer.echo(f"model      {data['model_name']}")
    typer.echo(f"champion   {data['registry']['champion_version']}")
    typer.echo(f"challenger {data['registry']['challenger_version']}")
    typer.echo(
        f"serving    {'up' if data['serving']['up'] else 'down'} {data['serving']['versions']}"
    )
    typer.echo(f"endpoints  {data['serving']['rest']}  {data['serving']['grpc']}")
    typer.echo(f"metrics    {json.dumps(data['last_run_metrics'])}")
    if data["next_step"]:
        typer.echo(f"next       {data['next_step']}")


@app.command()
def history(
    model: Annotated[str, typer.Option(help="Registered model.")] = "recops_retrieval",
    limit: Annotated[int, typer.Option(help="How many entries.", min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The audit ledger: every alias move of a model, newest first, with who and why."""
    from recops.ledger import history as ledger_history

    settings = _settings()
    ledger_url = os.environ.get("RECOPS_LEDGER_URL", "").strip() or settings.mlflow_tracking_uri
    # Nothing recorded yet when the embedded registry was never created.
    entries = (
        [] if _local_sqlite_missing(ledger_url) else ledger_history(settings, model, limit=limit)
    )
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        typer.echo(f"no alias changes recorded for {model} yet (run `make demo`)")
    for e in entries:
        move = f"{e.from_version if e.from_version is not None else '-'} -> {e.to_version}"
        typer.echo(f"{e.at}  {e.alias:<10} {move:<9} {e.source:<14} {e.actor:<24} {e.reason[:90]}")


@app.command()
def rollback(
    to: Annotated[
        int | None, typer.Option("--to", help="Version to serve; default: the previous one.", min=1)
    ] = None,
    model: Annotated[str, typer.Option(help="Served model.")] = "recops_retrieval",
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Move `stable` (and alias `champion`) back to an older served version."""
    from recops.promotion import PromotionError, rollback_model

    settings = _settings()
    if not settings.models_config_path.is_file() and not (
        settings.tfserving_rest or settings.tfserving_grpc
    ):
        _fail(
            f"nothing is served from {settings.home} yet, so there is nothing to roll back",
            NO_MODEL_HINT,
        )
    try:
        result = rollback_model(model, to, reason=reason or "rollback from the CLI", source="cli")
    except PromotionError as exc:
        _fail(str(exc), "`recops status` lists the versions still served; `--to N` picks one")
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(
        f"{model}: stable now v{result.version} (was v{result.previous_version}); served {result.served_versions}"
    )


@app.command()
def serve(
    detach: Annotated[
        bool, typer.Option(help="Run in the background (pidfile under RECOPS_HOME).")
    ] = False,
) -> None:
    """Run the local TF Serving-compatible server (gRPC 8500, REST 8501)."""
    from recops.serving import server

    settings = _settings()
    if detach:
        try:
            pid = server.start_background(settings)
        except RuntimeError as exc:
            _fail(
                str(exc), f"{_PORT_HINT}; the server log is {settings.serving_dir / 'server.log'}"
            )
        typer.echo(
            f"serving in the background, pid {pid}: http://{settings.serving_host}:{settings.rest_port}"
        )
        return
    for port, variable in (
        (settings.rest_port, "RECOPS_REST_PORT"),
        (settings.grpc_port, "RECOPS_GRPC_PORT"),
    ):
        _require_free_port(settings.serving_host, port, variable)
    server.main([])


@app.command()
def stop() -> None:
    """Stop the background serving process."""
    from recops.serving import server

    stopped = server.stop_background(_settings())
    typer.echo("stopped" if stopped else "no background server was running")


@app.command()
def ui() -> None:
    """Start Airflow (standalone), the MLflow and Feast UIs and serving; print URLs and the login."""
    from recops.features import feast_ui_command

    settings = _settings()
    airflow_port = int(os.environ.get("AIRFLOW__API__PORT") or 8080)
    mlflow_port = int(os.environ.get("RECOPS_MLFLOW_PORT") or 5000)
    feast_port = int(os.environ.get("RECOPS_FEAST_UI_PORT") or 8888)
    _require_free_port("127.0.0.1", airflow_port, "AIRFLOW__API__PORT")
    _require_free_port("127.0.0.1", mlflow_port, "RECOPS_MLFLOW_PORT")
    _require_free_port("127.0.0.1", feast_port, "RECOPS_FEAST_UI_PORT")
    try:
        feast_argv, feast_env = feast_ui_command(settings, feast_port)
    except FileNotFoundError as exc:
        # Airflow and MLflow are still worth opening before the first run.
        feast_argv, feast_note = [], str(exc)
    else:
        feast_note = f"http://127.0.0.1:{feast_port}"
    settings.ensure_dirs()
    _ensure_airflow_db(settings)
    from recops.serving import server

    try:
        server.start_background(settings)
    except RuntimeError as exc:
        _fail(str(exc), f"{_PORT_HINT}; the server log is {settings.serving_dir / 'server.log'}")
    bin_dir = Path(sys.executable).parent
    # `airflow standalone` starts its components as `airflow ...` from PATH.
    env = {
        **os.environ,
        **airflow_env(settings),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    procs = [
        subprocess.Popen([str(bin_dir / "airflow"), "standalone"], env=env),
        subprocess.Popen(
            [
                str(bin_dir / "mlflow"),
                "ui",
                "--backend-store-uri",
                settings.mlflow_tracking_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
            ],
            env=env,
        ),  # fmt: skip
    ]
    if feast_argv:
        procs.append(subprocess.Popen(feast_argv, env={**env, **feast_env}))
    password_file = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + 120
    while not password_file.exists() and time.monotonic() < deadline:
        time.sleep(1)
    login = (
        password_file.read_text().strip()
        if password_file.exists()
        else "(see the airflow standalone output)"
    )
    typer.echo("")
    typer.echo(f"Airflow  http://127.0.0.1:{airflow_port}   login {login}")
    typer.echo(f"MLflow   http://127.0.0.1:{mlflow_port}")
    typer.echo(f"Feast    {feast_note}")
    typer.echo(
        f"Serving  http://{settings.serving_host}:{settings.rest_port}/v1/models/{settings.model_name}"
    )
    typer.echo("Ctrl-C stops Airflow, MLflow and Feast (`recops stop` stops serving).")
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)


_PORT_HINT = (
    "free the port, or pick others with RECOPS_REST_PORT / RECOPS_GRPC_PORT (or `recops stop`)"
)


def _require_free_port(host: str, port: int, variable: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            _fail(
                f"port {port} on {host} is already in use",
                f"stop what holds it, or set {variable} to a free port",
            )


# --- benchmarks -------------------------------------------------------------------------

#: The Makefile's ``bench`` target is the one list of benchmarks; ``recops bench`` runs
#: exactly its ``python -m benchmarks.X ...`` lines, so adding a line there adds it here.
BENCH_LINE = re.compile(r"^\t(.*?)\$\(BIN\)/python\s+-m\s+benchmarks\.(\w+)(.*)$")


def benchmark_plan(repo_root: Path = REPO_ROOT) -> list[tuple[str, list[str], list[str]]]:
    """``(name, prefix, args)`` of each benchmark, in the order of the Makefile's ``bench`` target.

    ``prefix`` is what the line runs Python under (``nice -n 10``), ``args`` what follows
    the module name.

    Raises:
        FileNotFoundError: No ``benchmarks/`` or ``Makefile`` (installed without the checkout).
    """
    makefile = repo_root / "Makefile"
    if not (repo_root / "benchmarks").is_dir() or not makefile.is_file():
        raise FileNotFoundError(f"no benchmarks/ and Makefile under {repo_root}")
    plan: list[tuple[str, list[str], list[str]]] = []
    in_bench = False
    for line in makefile.read_text().splitlines():
        if not line.startswith("\t"):
            in_bench = line.startswith("bench:")
            continue
        if in_bench and (match := BENCH_LINE.match(line)):
            plan.append((match[2], shlex.split(match[1]), shlex.split(match[3])))
    return plan


@app.command()
def bench(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this benchmark (repeatable).")
    ] = None,
    list_only: Annotated[
        bool, typer.Option("--list", help="List the benchmarks and exit.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --list: print JSON.")] = False,
) -> None:
    """Run the benchmarks of `make bench` (results under benchmarks/results/)."""
    try:
        plan = benchmark_plan()
    except FileNotFoundError as exc:
        _fail(
            str(exc),
            "benchmarks run from the source checkout: clone the repo and run `make bench` there",
        )
    names = [name for name, _, _ in plan]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        _fail(
            f"unknown benchmark {', '.join(unknown)}",
            f"choose from: {', '.join(names)} (`recops bench --list`)",
        )
    chosen = [step for step in plan if not only or step[0] in only]
    if list_only:
        rows = [
            {"name": name, "module": f"benchmarks.{name}", "args": args, "prefix": prefix}
            for name, prefix, args in chosen
        ]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            for name, prefix, args in chosen:
                typer.echo(
                    f"{name:<14} {shlex.join([*prefix, 'python', '-m', f'benchmarks.{name}', *args])}"
                )
        return
    env = {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    for i, (name, prefix, args) in enumerate(chosen, start=1):
        command = [*prefix, sys.executable, "-m", f"benchmarks.{name}", *args]
        typer.echo(
            f"[{i}/{len(chosen)}] {shlex.join([*prefix, 'python', *command[len(prefix) + 1 :]])}",
            err=True,
        )
        started = time.monotonic()
        code = subprocess.run(command, cwd=REPO_ROOT, env=env, check=False).returncode
        if code != 0:
            _fail(
                f"benchmarks.{name} exited with {code}",
                f"its output is above; rerun it alone with `recops bench --only {name}`",
            )
        typer.echo(f"      {name} done in {time.monotonic() - started:.0f} s", err=True)


def main() -> None:
    """Entry point of the ``recops`` console script."""
    app()


if __name__ == "__main__":
    main()
