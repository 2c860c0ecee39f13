"""The ``recops`` command line: demo, serve, recommend, status, data and ui.

Heavy libraries are imported inside each command, so ``recops --help`` answers at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from recops.config import Settings, airflow_env

app = typer.Typer(
    help="recops: MLOps for search and recommendation models.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Fetch or generate data into the published layout.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DAG_ID = "recsys_nightly"


def _fail(message: str, hint: str = "") -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(code=1)


def _airflow_cmd(settings: Settings) -> tuple[str, dict[str, str]]:
    # The venv's airflow, with the embedded profile's environment on top of ours.
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"
    return exe, {**os.environ, **airflow_env(settings)}


def _airflow(args: list[str], settings: Settings, *, check: bool = True) -> int:
    exe, env = _airflow_cmd(settings)
    proc = subprocess.run([exe, *args], env=env, check=False)
    if check and proc.returncode != 0:
        _fail(f"`airflow {' '.join(args)}` exited with {proc.returncode}", "read the task log above")
    return proc.returncode


def _run_dag_test(settings: Settings, logical_date: str, conf: str, dag_id: str = DAG_ID) -> None:
    # `airflow dags test` can exit 0 on a failed run, so its final line is checked too.
    exe, env = _airflow_cmd(settings)
    proc = subprocess.Popen(
        [exe, "dags", "test", dag_id, logical_date, "--conf", conf],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    failed = False
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        failed |= "DagRun failed" in line or ("DagRun Finished" in line and "state=failed" in line)
    if proc.wait() != 0 or failed:
        _fail(f"{dag_id} run for {logical_date} failed", "the failing task's log is above")


def _promote_challengers(settings: Settings) -> list[str]:
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
        if newest is None or not newest["blessed"] or served_stable(settings, model) == newest["version"]:
            continue
        conf = json.dumps({"model_name": model, "version": newest["version"], "reason": "recops demo"})
        _run_dag_test(settings, (when + timedelta(seconds=i)).isoformat(), conf, dag_id="recsys_promote")
        done.append(f"{model} v{newest['version']}")
    return done


#: The 1-slot pool recsys_promote's promote task runs in (one promotion at a time).
PROMOTION_POOL = "recops_promotion"


def _ensure_airflow_db(settings: Settings) -> None:
    if not (settings.airflow_home / "airflow.db").exists():
        typer.echo("Setting up the Airflow metadata DB (SQLite) ...")
        _airflow(["db", "migrate"], settings)
        _airflow(["pools", "set", PROMOTION_POOL, "1", "one promotion at a time"], settings)


@data_app.command("fetch")
def data_fetch() -> None:
    """Fetch MovieLens-100K (from the recbole wheel) and publish it as parquet partitions."""
    from recops.data import IngestConfig, ingest

    result = ingest(IngestConfig(source="movielens"))
    typer.echo(json.dumps(result.to_dict(), indent=2))


@data_app.command("synth")
def data_synth(
    rows: Annotated[int, typer.Option(help="Interactions to generate.", min=1)] = 20_000,
    users: Annotated[int, typer.Option(help="Users to generate.", min=1)] = 300,
    items: Annotated[int, typer.Option(help="Items to generate.", min=1)] = 400,
    days: Annotated[int, typer.Option(help="Days the events span (ending 1998-04-22).", min=1)] = 30,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 7,
) -> None:
    """Generate deterministic synthetic data with planted structure and publish it."""
    from recops.data import IngestConfig, ingest

    config = IngestConfig(
        source="synthetic", synthetic_rows=rows, synthetic_users=users,
        synthetic_items=items, synthetic_days=days, seed=seed,
    )  # fmt: skip
    typer.echo(json.dumps(ingest(config).to_dict(), indent=2))


@data_app.command("import")
def data_import(
    interactions: Annotated[Path, typer.Option(help="Interactions table (.parquet, .csv or .tsv).")],
    users: Annotated[Path, typer.Option(help="Users table (.parquet, .csv or .tsv).")],
    items: Annotated[Path, typer.Option(help="Items table (.parquet, .csv or .tsv).")],
    mapping: Annotated[str, typer.Option(help='JSON: our column -> yours, e.g. \'{"user_id": "uid", "event_timestamp": "ts"}\'.')] = "{}",
    stage_last_days: Annotated[int, typer.Option(help="Last N days go to staging for the nightly run; the rest is validated and published.", min=0)] = 1,
) -> None:
    """Bring your own data: map your columns onto ours, validate the history, stage the last days."""
    from recops.data import DataError, ImportConfig, import_tables
    from recops.validation import DataValidationError

    try:
        columns = json.loads(mapping)
    except json.JSONDecodeError as exc:
        _fail(f"--mapping is not valid JSON: {exc}")
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        _fail("--mapping must be a JSON object of column names, e.g. '{\"user_id\": \"uid\"}'")
    config = ImportConfig(
        interactions_path=str(interactions), users_path=str(users), items_path=str(items),
        mapping=columns, stage_last_days=stage_last_days,
    )  # fmt: skip
    try:
        result = import_tables(config)
    except (DataError, DataValidationError) as exc:
        _fail(str(exc), "see docs/data_contracts.md for the schema and the mapping")
    typer.echo(json.dumps(result.to_dict(), indent=2))


@app.command()
def demo(
    source: Annotated[str, typer.Option(help="movielens or synthetic.")] = "movielens",
    date: Annotated[str | None, typer.Option(help="Day to run (YYYY-MM-DD); default: the last day of data.")] = None,
    conf: Annotated[str, typer.Option(help="JSON DAG Params, e.g. '{\"epochs\": 2}'.")] = "{}",
    user_id: Annotated[int, typer.Option(help="User to recommend for at the end.")] = 1,
) -> None:
    """Ingest data, run recsys_nightly end to end with `airflow dags test`, then recommend."""
    from recops.data import IngestConfig, ingest

    settings = Settings.from_env()
    settings.ensure_dirs()
    try:
        json.loads(conf)
    except json.JSONDecodeError as exc:
        _fail(f"--conf is not valid JSON: {exc}")
    started = time.monotonic()
    typer.echo(f"[1/5] Ingesting {source} into {settings.data_dir} ...")
    ingested = ingest(IngestConfig(source=source), settings)
    typer.echo(f"      {ingested.n_interactions} interactions in {ingested.n_partitions} daily partitions")
    from recops.pipeline import logical_date_for

    day = date or ingested.last_date
    typer.echo("[2/5] Preparing Airflow (SQLite) ...")
    _ensure_airflow_db(settings)
    logical = logical_date_for(day)
    typer.echo(f"[3/5] Running `airflow dags test {DAG_ID} {logical}` (data interval {day}) ...")
    _run_dag_test(settings, logical, conf)
    typer.echo("[4/5] Promoting what the gate blessed with `airflow dags test recsys_promote` ...")
    promoted = _promote_challengers(settings)
    typer.echo(f"      promoted: {', '.join(promoted) or 'nothing new (the champion keeps serving)'}")
    typer.echo(f"[5/5] Top-10 for user {user_id}: retrieval top-100, then the ranker:")
    _print_recommendations(settings, user_id, 10, as_json=False)
    status_data = _status(settings)
    typer.echo("")
    typer.echo(f"champion: version {status_data['registry']['champion_version']}  "
               f"served: {status_data['serving']['versions']}  "
               f"metrics: {json.dumps(status_data['last_run_metrics'])}")  # fmt: skip
    typer.echo(f"REST:  http://{settings.serving_host}:{settings.rest_port}/v1/models/{settings.model_name}")
    typer.echo(f"gRPC:  {settings.serving_host}:{settings.grpc_port}")
    typer.echo(f"demo finished in {time.monotonic() - started:.0f} s; `make ui` opens Airflow and MLflow.")


def _recommend(settings: Settings, user_id: int, k: int) -> list[dict[str, Any]]:
    """Online features → retrieval top-100 → ranker → top ``k`` (fused ranks)."""
    import pandas as pd

    from recops.features import online_user_features
    from recops.pipeline import RANKING_MODEL
    from recops.promotion import ranking_instances, served_stable
    from recops.serving.client import ServingClient

    try:
        profile = online_user_features([user_id], settings)[0]
    except KeyError as exc:
        _fail(str(exc).strip("'\""), "is the user id in the data? run `recops demo` first")
    client = ServingClient.from_settings(settings)
    try:
        reply = client.predict_rest(settings.model_name, instances=[profile], label="stable")
    except Exception as exc:
        _fail(f"the served model did not answer: {exc}", "start serving with `recops serve --detach`")
    row = reply["predictions"][0]
    candidates = [int(i) for i in row["item_ids"]]
    retrieval = {item: float(score) for item, score in zip(candidates, row["scores"], strict=True)}
    order = candidates
    ranker: dict[int, float] = {}
    ranker_version = served_stable(settings, RANKING_MODEL)
    if ranker_version is not None:
        inputs = ("user_id", "age", "gender", "occupation", "item_ids", *_ranker_user_inputs())
        request = ranking_instances(settings, [profile], [candidates], inputs)
        ranked = client.predict_rest(RANKING_MODEL, instances=request, label="stable")["predictions"][0]
        ranker = {item: float(score) for item, score in zip(candidates, ranked["scores"], strict=True)}
        by_click = sorted(candidates, key=lambda i: -ranker[i])
        click_rank = {item: r for r, item in enumerate(by_click, start=1)}
        # Reciprocal-rank fusion of the two orders: the best of both on ml-100k (see
        # benchmarks/quality.py); the ranker alone trades recall for long-tail reach.
        fused = {item: 1 / (60 + r) + 1 / (60 + click_rank[item]) for r, item in enumerate(candidates, start=1)}
        if _rerank_policy(settings, ranker_version) == "fusion":
            order = sorted(candidates, key=lambda i: -fused[i])
    titles = pd.read_parquet(settings.items_path, columns=["item_id", "title"]).set_index("item_id")["title"]
    return [
        {"rank": r, "item_id": item, "title": str(titles.get(item, "?")), "score": retrieval[item],
         **({"ranker_score": ranker[item]} if ranker else {})}
        for r, item in enumerate(order[:k], start=1)
    ]  # fmt: skip


def _rerank_policy(settings: Settings, version: int) -> str:
    """``fusion`` when the nightly measured the re-ranked list better, else ``retrieval``.

    The evaluate task compares both orders on the same holdout and records the winner on
    the ranker's registered version (tag ``recops.lineage.rerank_policy``).
    """
    from recops.pipeline import RANKING_MODEL
    from recops.registry import _client

    try:
        tags = _client(settings).get_model_version(RANKING_MODEL, str(version)).tags
    except Exception:  # no registry at hand: keep the retrieval order, the safe default
        return "retrieval"
    return str(tags.get("recops.lineage.rerank_policy", "retrieval"))


def _ranker_user_inputs() -> tuple[str, ...]:
    from recops.pipeline import RANKER_USER_FEATURES

    return RANKER_USER_FEATURES


def _print_recommendations(settings: Settings, user_id: int, k: int, *, as_json: bool) -> None:
    recs = _recommend(settings, user_id, k)
    if as_json:
        typer.echo(json.dumps({"user_id": user_id, "recommendations": recs}, indent=2))
        return
    for rec in recs:
        typer.echo(f"  {rec['rank']:>2}. [{rec['item_id']:>5}] {rec['title'][:60]:<60} {rec['score']:.4f}")


@app.command()
def recommend(
    user_id: Annotated[int, typer.Option("--user-id", help="User to recommend for.")],
    k: Annotated[int, typer.Option("--k", help="How many items.", min=1, max=100)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-K items for a user: online features from Feast, then the served model."""
    _print_recommendations(Settings.from_env(), user_id, k, as_json=as_json)


def _status(settings: Settings) -> dict[str, Any]:
    from recops.registry import registry_status
    from recops.serving.client import ServingClient

    reg = registry_status(settings)
    client = ServingClient(settings.serving_host, settings.grpc_port, settings.rest_port)
    try:
        versions = client.model_status(settings.model_name)
        serving: dict[str, Any] = {"up": True, "versions": versions}
    except Exception as exc:
        serving = {"up": False, "versions": {}, "error": str(exc)[:200]}
    champion = next((v for v in reg.versions if v["version"] == reg.champion_version), None)
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
    }


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Champion version, served versions and endpoints, and the last run's metrics."""
    data = _status(Settings.from_env())
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    typer.echo(f"model      {data['model_name']}")
    typer.echo(f"champion   {data['registry']['champion_version']}")
    typer.echo(f"challenger {data['registry']['challenger_version']}")
    typer.echo(f"serving    {'up' if data['serving']['up'] else 'down'} {data['serving']['versions']}")
    typer.echo(f"endpoints  {data['serving']['rest']}  {data['serving']['grpc']}")
    typer.echo(f"metrics    {json.dumps(data['last_run_metrics'])}")


@app.command()
def history(
    model: Annotated[str, typer.Option(help="Registered model.")] = "recops_retrieval",
    limit: Annotated[int, typer.Option(help="How many entries.", min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The audit ledger: every alias move of a model, newest first, with who and why."""
    from recops.ledger import history as ledger_history

    entries = ledger_history(Settings.from_env(), model, limit=limit)
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        typer.echo(f"no alias changes recorded for {model} yet (run `recops demo`)")
    for e in entries:
        move = f"{e.from_version if e.from_version is not None else '-'} -> {e.to_version}"
        typer.echo(f"{e.at}  {e.alias:<10} {move:<9} {e.source:<14} {e.actor:<24} {e.reason[:90]}")


@app.command()
def rollback(
    to: Annotated[int | None, typer.Option("--to", help="Version to serve; default: the previous one.", min=1)] = None,
    model: Annotated[str, typer.Option(help="Served model.")] = "recops_retrieval",
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Move `stable` (and alias `champion`) back to an older served version."""
    from recops.promotion import PromotionError, rollback_model

    try:
        result = rollback_model(model, to, reason=reason or "rollback from the CLI", source="cli")
    except PromotionError as exc:
        _fail(str(exc), "`recops status` lists the versions still served; `--to N` picks one")
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f"{model}: stable now v{result.version} (was v{result.previous_version}); served {result.served_versions}")


@app.command()
def serve(
    detach: Annotated[bool, typer.Option(help="Run in the background (pidfile under RECOPS_HOME).")] = False,
) -> None:
    """Run the local TF Serving-compatible server (gRPC 8500, REST 8501)."""
    from recops.serving import server

    settings = Settings.from_env()
    if detach:
        pid = server.start_background(settings)
        typer.echo(f"serving in the background, pid {pid}: http://{settings.serving_host}:{settings.rest_port}")
        return
    server.main([])


@app.command()
def stop() -> None:
    """Stop the background serving process."""
    from recops.serving import server

    stopped = server.stop_background(Settings.from_env())
    typer.echo("stopped" if stopped else "no background server was running")


@app.command()
def ui() -> None:
    """Start Airflow (standalone), the MLflow UI and serving; print URLs and the login."""
    settings = Settings.from_env()
    settings.ensure_dirs()
    _ensure_airflow_db(settings)
    from recops.serving import server

    server.start_background(settings)
    bin_dir = Path(sys.executable).parent
    # `airflow standalone` starts its components as `airflow ...` from PATH.
    env = {**os.environ, **airflow_env(settings), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    procs = [
        subprocess.Popen([str(bin_dir / "airflow"), "standalone"], env=env),
        subprocess.Popen(
            [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", settings.mlflow_tracking_uri,
             "--host", "127.0.0.1", "--port", os.environ.get("RECOPS_MLFLOW_PORT", "5000")],
            env=env,
        ),  # fmt: skip
    ]
    password_file = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + 120
    while not password_file.exists() and time.monotonic() < deadline:
        time.sleep(1)
    login = password_file.read_text().strip() if password_file.exists() else "(see the airflow standalone output)"
    typer.echo("")
    typer.echo(f"Airflow  http://127.0.0.1:8080   login {login}")
    typer.echo(f"MLflow   http://127.0.0.1:{os.environ.get('RECOPS_MLFLOW_PORT', '5000')}")
    typer.echo(f"Serving  http://{settings.serving_host}:{settings.rest_port}/v1/models/{settings.model_name}")
    typer.echo("Ctrl-C stops Airflow and MLflow (`recops stop` stops serving).")
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)


def main() -> None:
    """Entry point of the ``recops`` console script."""
    app()


if __name__ == "__main__":
    main()
