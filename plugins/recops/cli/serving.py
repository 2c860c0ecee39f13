"""The served model from the command line: serve, stop, recommend, status, history, rollback.

Reading commands (``status``, ``history``) never create state: an embedded registry
that was never created reads as empty instead of being created and migrated.
"""

from __future__ import annotations

import json
import os
import warnings
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
    "model_or_exit",
    "order_score",
    "print_recommendations",
    "recommend",
    "recommendation_lines",
    "recommender_version",
    "rollback",
    "serve",
    "status",
    "stop",
]


def _recommend(settings: Settings, user_id: str | int, k: int) -> list[dict[str, Any]]:
    """The running service's top ``k`` when it answers, else the in-process path.

    Says on stderr which one answered. The service path imports only ``httpx``: MLflow,
    Feast, pandas and TensorFlow are imported by the in-process fallback alone, so a
    served answer takes well under a second.
    """
    from recops.service.client import recommend_via_service
    from recops.service.daemon import service_url

    served = recommend_via_service(settings, user_id, k)
    if served is not None:
        typer.echo(f"(from the recommendation service at {service_url(settings)})", err=True)
        return served
    typer.echo("(in-process: the recommendation service does not answer)", err=True)
    from recops.serving.recommend import RecommendConfig, recommend

    # MLflow's SQLAlchemy store warns about its own mappers when first imported
    # (SADeprecationWarning): nothing a user of this command can act on. The imports
    # below add warning filters of their own ahead of any we would set, so warnings are
    # recorded instead, and all but MLflow's are shown again once the answer is in.
    with warnings.catch_warnings(record=True) as caught:
        try:
            recs = recommend(RecommendConfig(user_id=user_id, k=k), settings)
        except RecommendError as exc:
            fail(str(exc), exc.hint)
    for w in caught:
        if f"{os.sep}mlflow{os.sep}" not in w.filename:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return recs


#: Keys of a recommendation that are not the item's attributes.
_REC_FIELDS = frozenset({"rank", "item_id", "score", "source", "ranker_score", "fused_score"})
#: What orders each source's items, as the table's heading for them says.
_ORDER_BY = {
    "retrieval": "retrieval score",
    "reranked": "fused score (reciprocal-rank fusion of the retrieval and ranker orders)",
    "popularity": "positive events (popular unseen items fill the list)",
}


def _describe_item(rec: dict[str, Any], width: int = 60) -> str:
    """The item's attributes in one short line (whatever the dataset declares)."""
    shown = [str(v) for k, v in rec.items() if k not in _REC_FIELDS and v not in (None, "")]
    return " · ".join(shown)[:width]


def order_score(rec: dict[str, Any]) -> float:
    """The score that places ``rec`` in its list: the key its source's items are sorted by.

    The recommend path's ``score`` is always that key: the retrieval score, the fused
    score of a re-ranked list (``recops.serving.recommend.rerank``), or a popular fill
    item's count of positive events.
    """
    return float(rec["score"])


def recommendation_lines(recs: list[dict[str, Any]]) -> list[str]:
    """The table of ``recs``: one heading per source, then rank, order score, item.

    Items come grouped by source (the models' list, then the popular fill), each group
    under a heading naming what orders it, so the score column reads in the printed
    order. The ranker's score, when it scored the item, is a column of its own.
    """
    ranked = any(rec.get("ranker_score") is not None for rec in recs)
    lines: list[str] = []
    source: str | None = None
    for rec in recs:
        if rec.get("source") != source:
            source = str(rec.get("source"))
            lines.append(f"  by {_ORDER_BY.get(source, source)}:")
            lines.append("   #  score     " + ("ranker  " if ranked else "") + "item")
        score = order_score(rec)
        # Popularity scores are event counts; model scores are probabilities or logits.
        shown = (
            "-" if score is None else f"{score:.0f}" if source == "popularity" else f"{score:.4f}"
        )
        ranker = rec.get("ranker_score")
        ranker_col = "" if not ranked else f"{ranker:.4f}  " if ranker is not None else "-       "
        lines.append(
            f"  {rec['rank']:>2}. {shown:<9} {ranker_col}[{rec['item_id']}] {_describe_item(rec)}"
        )
    return lines


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
    for line in recommendation_lines(recs):
        typer.echo(line)


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


def model_or_exit(settings: Settings, model: str) -> str:
    """``model`` when it is one of this home's registered models, else a clear exit.

    The known models are every known dataset's retrieval and ranking models; an unknown
    name would only read as "nothing recorded", which hides a typo.
    """
    from recops.layout import all_promotable_models

    known = all_promotable_models(settings)
    if model not in known:
        fail(
            f"--model {model!r} is not a model of this deployment (known: {', '.join(known)})",
            f"pass one of those names (`recops status` shows the two of {settings.dataset})",
        )
    return model


def _model_status(
    settings: Settings, name: str, registry_exists: bool, client: Any
) -> dict[str, Any]:
    """One registered model's aliases, versions, served versions and metrics."""
    from recops.promotion import served_stable
    from recops.registry import RegistryStatus, registry_status

    if registry_exists:
        reg = registry_status(settings, name)
    else:
        reg = RegistryStatus(
            model_name=name, champion_version=None, challenger_version=None, versions=[]
        )
    try:
        serving: dict[str, Any] = {"up": True, "versions": client.model_status(name)}
    except Exception as exc:  # down, or this model not served: either way, not serving it
        serving = {"up": False, "versions": {}, "error": str(exc)[:200]}
    champion = next((v for v in reg.versions if v["version"] == reg.champion_version), None)
    return {
        "model_name": name,
        "champion_version": reg.champion_version,
        "challenger_version": reg.challenger_version,
        "versions": [v["version"] for v in reg.versions],
        "stable": served_stable(settings, name),
        "serving": serving,
        "last_run_metrics": reg.versions[0]["metrics"] if reg.versions else {},
        "last_run_gate": (
            {k: reg.versions[0][k] for k in ("blessed", "reasons")} if reg.versions else {}
        ),
        "champion_metrics": champion["metrics"] if champion else {},
    }


def recommender_version(models: dict[str, dict[str, Any]]) -> str:
    """The served recommender in one phrase: ``retrieval v3 + ranking v2`` (stable labels)."""
    retrieval = models["retrieval"]["stable"]
    ranking = models["ranking"]["stable"]
    if retrieval is None:
        return "none served"
    return f"retrieval v{retrieval} + " + (f"ranking v{ranking}" if ranking else "no ranker")


def collect_status(settings: Settings) -> dict[str, Any]:
    """Registry, serving and local state of ``settings.home``, and the next step to take.

    Both models are covered (``models.retrieval``, ``models.ranking``) along with the
    recommender they make together (``recommender``: each one's ``stable`` version). The
    top-level ``model_name``, ``registry``, ``serving`` and ``*_metrics`` keys are the
    retrieval model's, as before. Creates nothing: a registry that was never created
    reads as empty.
    """
    from recops.serving.client import ServingClient

    registry_exists = not local_sqlite_missing(settings.mlflow_tracking_uri)
    client = ServingClient(settings.serving_host, settings.grpc_port, settings.rest_port)
    models = {
        role: _model_status(settings, name, registry_exists, client)
        for role, name in zip(("retrieval", "ranking"), settings.promotable_models, strict=True)
    }
    retrieval = models["retrieval"]
    serving_up = any(m["serving"]["up"] for m in models.values())
    state = {
        "data": settings.items_path.is_file(),
        "airflow_db": (settings.airflow_home / "airflow.db").is_file(),
        "registry": registry_exists,
        "registered_versions": len(retrieval["versions"]),
        "served": bool(retrieval["serving"]["versions"]),
    }
    if not state["data"]:
        next_step: str | None = FIRST_RUN_HINT
    elif not state["registered_versions"]:
        next_step = (
            "run `make demo` (or trigger recsys_nightly in `make ui`) to train and register a model"
        )
    elif not serving_up:
        next_step = "start serving with `recops serve --detach`"
    else:
        next_step = None
    return {
        "model_name": retrieval["model_name"],
        "registry": {
            "champion_version": retrieval["champion_version"],
            "challenger_version": retrieval["challenger_version"],
            "versions": retrieval["versions"],
        },
        "serving": {
            **retrieval["serving"],
            "up": serving_up,
            "rest": f"http://{settings.serving_host}:{settings.rest_port}",
            "grpc": f"{settings.serving_host}:{settings.grpc_port}",
        },
        "last_run_metrics": retrieval["last_run_metrics"],
        "last_run_gate": retrieval["last_run_gate"],
        "champion_metrics": retrieval["champion_metrics"],
        "models": models,
        "recommender": {
            "retrieval": retrieval["stable"],
            "ranking": models["ranking"]["stable"],
            "version": recommender_version(models),
        },
        "home": str(settings.home),
        "state": state,
        "next_step": next_step,
    }


def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Both models' champion, served versions and last metrics, and the recommender they make."""
    data = collect_status(load_settings())
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    typer.echo(f"home        {data['home']}")
    typer.echo(f"recommender {data['recommender']['version']}")
    for role, m in data["models"].items():
        served = m["serving"]["versions"] or "not served"
        typer.echo(
            f"{role:<11} {m['model_name']:<18} champion {m['champion_version'] or '-'}  "
            f"challenger {m['challenger_version'] or '-'}  served {served}"
        )
    typer.echo(
        f"serving     {'up' if data['serving']['up'] else 'down'}  "
        f"{data['serving']['rest']}  {data['serving']['grpc']}"
    )
    for role, m in data["models"].items():
        typer.echo(f"metrics     {role}: {json.dumps(m['last_run_metrics'])}")
    if data["next_step"]:
        typer.echo(f"next        {data['next_step']}")


def history(
    model: Annotated[
        str | None,
        typer.Option(
            help="Registered model; default: the deployment's retrieval and ranking models."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many entries.", min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The audit ledger: every alias move of the models, newest first, with who and why."""
    from recops.ledger import history as ledger_history
    from recops.ledger import ledger_url

    settings = load_settings()
    models = settings.promotable_models if model is None else (model_or_exit(settings, model),)
    # Nothing recorded yet when the embedded ledger was never created.
    entries = []
    if not local_sqlite_missing(ledger_url(settings)):
        for name in models:
            entries += ledger_history(settings, name, limit=limit)
    # One table, one id sequence: ids order the moves of every model.
    entries = sorted(entries, key=lambda e: -e.id)[:limit]
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        typer.echo(f"no alias changes recorded for {' or '.join(models)} yet (run `make demo`)")
    for e in entries:
        move = f"{e.from_version if e.from_version is not None else '-'} -> {e.to_version}"
        typer.echo(
            f"{e.at}  {e.model:<18} {e.alias:<10} {move:<9} {e.source:<14} {e.actor:<24} "
            f"{e.reason[:90]}"
        )


def rollback(
    to: Annotated[
        int | None, typer.Option("--to", help="Version to serve; default: the previous one.", min=1)
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Served model; default: the retrieval model.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the ledger.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Move `stable` (and alias `champion`) back to an older served version."""
    from recops.promotion import rollback_model

    settings = load_settings()
    name = settings.model_name if model is None else model_or_exit(settings, model)
    if not settings.models_config_path.is_file() and not (
        settings.tfserving_rest or settings.tfserving_grpc
    ):
        fail(
            f"nothing is served from {settings.home} yet, so there is nothing to roll back",
            NO_MODEL_HINT,
        )
    try:
        result = rollback_model(name, to, reason=reason or "rollback from the CLI", source="cli")
    except PromotionError as exc:
        fail(str(exc), "`recops status` lists the versions still served; `--to N` picks one")
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(
        f"{name}: stable now v{result.version} (was v{result.previous_version}); "
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
