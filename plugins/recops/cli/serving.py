"""The served model from the command line: serve, stop, recommend, status, history, rollback.

Reading commands (``status``, ``history``) never create state: an embedded registry
that was never created reads as empty instead of being created and migrated.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from recops.cli.common import (
    FIRST_RUN_HINT,
    NO_MODEL_HINT,
    PORT_HINT,
    dataset_settings_or_exit,
    fail,
    load_settings,
    local_sqlite_missing,
    require_free_port,
)
from recops.config import Settings
from recops.errors import PromotionError, RecommendError

__all__ = [
    "collect_status",
    "history",
    "print_recommendations",
    "recommend",
    "rollback",
    "serve",
    "status",
    "stop",
]


def _recommend(settings: Settings, user_id: str | int, k: int) -> list[dict[str, Any]]:
    """The running service's top ``k`` when it answers, else the in-process path.

    Says on stderr which one answered.
    """
    from recops.service.client import recommend_via_service
    from recops.service.daemon import service_url
    from recops.serving.recommend import RecommendConfig, recommend

    served = recommend_via_service(settings, user_id, k)
    if served is not None:
        typer.echo(f"(from the recommendation service at {service_url(settings)})", err=True)
        return served
    typer.echo("(in-process: the recommendation service does not answer)", err=True)
    try:
        return recommend(RecommendConfig(user_id=user_id, k=k), settings)
    except RecommendError as exc:
        fail(str(exc), exc.hint)


#: Keys of a recommendation that are not the item's attributes.
_REC_FIELDS = frozenset({"rank", "item_id", "score", "source", "ranker_score"})


def _describe_item(rec: dict[str, Any], width: int = 60) -> str:
    """The item's attributes in one short line (whatever the dataset declares)."""
    shown = [str(v) for k, v in rec.items() if k not in _REC_FIELDS and v not in (None, "")]
    return " · ".join(shown)[:width]


def print_recommendations(settings: Settings, user_id: str | int, k: int, *, as_json: bool) -> None:
    """Print the top ``k`` for ``user_id`` as a table, or as JSON with ``as_json``."""
    recs = _recommend(settings, user_id, k)
    if as_json:
        typer.echo(
            json.dumps(
                {"dataset": settings.dataset, "user_id": user_id, "recommendations": recs},
                indent=2,
                default=str,
            )
        )
        return
    for rec in recs:
        typer.echo(
            f"  {rec['rank']:>2}. {rec['score']:.4f}  [{rec['item_id']}] {_describe_item(rec)}"
        )


def recommend(
    user_id: Annotated[str, typer.Option("--user-id", help="The user's key, as your data has it.")],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Dataset name; default: RECOPS_DATASET's."),
    ] = None,
    k: Annotated[int, typer.Option("--k", help="How many items.", min=1, max=100)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-K items for a user: online features from Feast, then the served models.

    The key is taken as the dataset's users have it (a string such as ``c-000196``, or an
    integer); an unknown user gets the cold-start list, never an error.
    """
    settings = load_settings()
    if dataset:
        settings = dataset_settings_or_exit(settings, dataset)
    print_recommendations(settings, user_id, k, as_json=as_json)


def collect_status(settings: Settings) -> dict[str, Any]:
    """Registry, serving and local state of ``settings.home``, and the next step to take.

    Creates nothing: a registry that was never created reads as empty.
    """
    from recops.registry import RegistryStatus, registry_status
    from recops.serving.client import ServingClient

    registry_exists = not local_sqlite_missing(settings.mlflow_tracking_uri)
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


def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Champion version, served versions and endpoints, and the last run's metrics."""
    data = collect_status(load_settings())
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


def history(
    model: Annotated[str, typer.Option(help="Registered model.")] = "recops_retrieval",
    limit: Annotated[int, typer.Option(help="How many entries.", min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The audit ledger: every alias move of a model, newest first, with who and why."""
    from recops.ledger import history as ledger_history

    settings = load_settings()
    ledger_url = os.environ.get("RECOPS_LEDGER_URL", "").strip() or settings.mlflow_tracking_uri
    # Nothing recorded yet when the embedded registry was never created.
    entries = (
        [] if local_sqlite_missing(ledger_url) else ledger_history(settings, model, limit=limit)
    )
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        typer.echo(f"no alias changes recorded for {model} yet (run `make demo`)")
    for e in entries:
        move = f"{e.from_version if e.from_version is not None else '-'} -> {e.to_version}"
        typer.echo(f"{e.at}  {e.alias:<10} {move:<9} {e.source:<14} {e.actor:<24} {e.reason[:90]}")


def rollback(
    to: Annotated[
        int | None, typer.Option("--to", help="Version to serve; default: the previous one.", min=1)
    ] = None,
    model: Annotated[str, typer.Option(help="Served model.")] = "recops_retrieval",
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Move `stable` (and alias `champion`) back to an older served version."""
    from recops.promotion import rollback_model

    settings = load_settings()
    if not settings.models_config_path.is_file() and not (
        settings.tfserving_rest or settings.tfserving_grpc
    ):
        fail(
            f"nothing is served from {settings.home} yet, so there is nothing to roll back",
            NO_MODEL_HINT,
        )
    try:
        result = rollback_model(model, to, reason=reason or "rollback from the CLI", source="cli")
    except PromotionError as exc:
        fail(str(exc), "`recops status` lists the versions still served; `--to N` picks one")
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(
        f"{model}: stable now v{result.version} (was v{result.previous_version}); "
        f"served {result.served_versions}"
    )


def serve(
    detach: Annotated[
        bool, typer.Option(help="Run in the background (pidfile under RECOPS_HOME).")
    ] = False,
) -> None:
    """Run the local TF Serving-compatible server (gRPC 8500, REST 8501)."""
    from recops.serving import server

    settings = load_settings()
    if detach:
        try:
            pid = server.start_background(settings)
        except RuntimeError as exc:
            fail(str(exc), f"{PORT_HINT}; the server log is {settings.serving_dir / 'server.log'}")
        typer.echo(
            f"serving in the background, pid {pid}: http://{settings.serving_host}:{settings.rest_port}"
        )
        return
    for port, variable in (
        (settings.rest_port, "RECOPS_REST_PORT"),
        (settings.grpc_port, "RECOPS_GRPC_PORT"),
    ):
        require_free_port(settings.serving_host, port, variable)
    server.main([])


def stop() -> None:
    """Stop the background serving process."""
    from recops.serving import server

    stopped = server.stop_background(load_settings())
    typer.echo("stopped" if stopped else "no background server was running")
