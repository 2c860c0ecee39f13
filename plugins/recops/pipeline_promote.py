"""The promotion and replay DAGs' steps (``recsys_promote``, ``recsys_replay``).

Beside ``recops.pipeline`` (the nightly's steps): ``recsys_promote`` and
``recsys_replay`` import their steps from here.
"""

from __future__ import annotations

from typing import Any

from recops.config import Settings


def settings_for_model(model_name: str) -> Settings:
    """The settings of the dataset whose registered models include ``model_name``."""
    from recops.layout import known_datasets

    settings = Settings.from_env()
    if model_name in settings.promotable_models:
        return settings
    for dataset in known_datasets(settings):
        candidate = settings.for_dataset(dataset)
        if model_name in candidate.promotable_models:
            return candidate
    return settings


def promotion_requests(
    params: dict[str, Any], events: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Turn the run's Params and triggering asset events into what to promote.

    Args:
        params: ``model_name``, ``version`` (None: resolve ``alias``), ``alias``,
            ``action``, ``force``, ``reason`` and the canary guards
            (``max_score_psi``, ``min_top_overlap``).
        events: Triggering asset events' ``extra`` dicts by asset name. The nightly's
            ``recops_blessed`` event names the versions it registered; the registry
            watcher's event carries ``{"payload": {"model_name", "version"}}``.

    Returns:
        One ``{model_name, version, alias, action, force, reason, source}`` (and the
        guards) per model to promote; a nightly event lists retrieval before ranking.
    """
    from recops.layout import all_promotable_models
    from recops.params import check_param, check_params, promote_schemas

    promotable = all_promotable_models(Settings.from_env())
    schemas = promote_schemas(promotable)
    params = check_params(params, schemas)
    base = {
        "alias": str(params.get("alias") or "champion"),
        "action": str(params.get("action") or "promote"),
        "force": bool(params.get("force", False)),
        "reason": str(params.get("reason") or ""),
        "max_score_psi": params.get("max_score_psi"),
        "min_top_overlap": params.get("min_top_overlap"),
    }
    out: list[dict[str, Any]] = []
    for extras in events.values():
        for extra in extras:
            if extra.get("from_trigger"):
                payload = extra.get("payload") or {}
                out.append(
                    {
                        **base,
                        "model_name": payload["model_name"],
                        "version": int(payload["version"]),
                        "source": "registry-watch",
                        "reason": f"champion alias moved to v{payload['version']} in MLflow",
                    }
                )
            else:
                for model_name, version in sorted(
                    (extra.get("versions") or {}).items(), reverse=True
                ):
                    out.append(
                        {
                            **base,
                            "model_name": model_name,
                            "version": int(version),
                            "source": "nightly",
                            "reason": f"blessed by {extra.get('run_id', 'the nightly run')}",
                        }
                    )
    for req in out:  # event payloads name a model and version too: same rules
        check_param("model_name", req["model_name"], schemas["model_name"])
        check_param("version", req["version"], schemas["version"])
    if not out:
        model = str(params.get("model_name") or promotable[0])
        version = params.get("version")
        out.append(
            {
                **base,
                "model_name": model,
                "version": int(version) if version is not None else None,
                "source": "ui",
            }
        )
    return out


def promote_step(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Promote (or roll back) each requested model; the first failure fails the task.

    Models are handled one at a time under their promotion lock; a failed canary rolls
    that model back (serving and alias) and raises, so the run shows failed. The
    requests of one run are one unit (a nightly's retrieval vN and the ranker trained on
    its candidates): when one fails, each model this step already moved goes back to
    the version it replaced (``_unwind``) before the error is raised.

    A retriever asked for alone (a UI trigger, an alias moved in MLflow) brings its pair
    along (``_companion``): once retrieval vN serves, the blessed ranker trained on vN's
    candidates is promoted in the same unit, and a rollback of retrieval to vK takes the
    ranker back to vK's pair when that version is still on disk.
    """
    from recops.errors import PromotionError
    from recops.promotion import PromoteConfig, promote, rollback_model

    results = []
    moved: list[dict[str, Any]] = []
    queue = list(requests)
    asked = {req["model_name"] for req in requests}
    for req in queue:  # _companion appends to it while it is walked
        settings = settings_for_model(req["model_name"])
        if req["action"] == "rollback":
            try:
                result = rollback_model(
                    req["model_name"],
                    req.get("version"),
                    reason=req["reason"],
                    source=req["source"],
                    settings=settings,
                )
            except PromotionError as exc:
                if not req.get("companion"):
                    raise
                # Best effort: the retriever's rollback stands; say why its pair did not.
                results.append({**req, "outcome": "failed", "reasons": [str(exc)]})
                continue
        else:
            config = PromoteConfig(
                model_name=req["model_name"],
                version=req.get("version"),
                alias=req["alias"],
                force=req["force"],
                reason=req["reason"],
                source=req["source"],
                max_score_psi=req.get("max_score_psi"),
                min_top_overlap=req.get("min_top_overlap"),
            )
            try:
                result = promote(config, settings)
            except PromotionError as exc:
                if req.get("version") is not None:
                    _update_run_report(
                        {
                            "model_name": req["model_name"],
                            "version": int(req["version"]),
                            "outcome": "failed",
                            "reasons": exc.reasons,
                        }
                    )
                unwound = _unwind(moved, f"{req['model_name']} v{req.get('version')} failed")
                if unwound:
                    raise PromotionError(
                        f"{exc}; rolled back with it: {'; '.join(unwound)}",
                        reasons=[*exc.reasons, *unwound],
                    ) from exc
                raise
            _update_run_report(result.to_dict())
            if result.outcome == "promoted" and result.previous_version is not None:
                moved.append(result.to_dict())
        companion = _companion(req, result.outcome, result.version, settings, asked)
        if companion is not None:
            asked.add(companion["model_name"])
            queue.append(companion)
        results.append(result.to_dict())
    return results


def _companion(
    req: dict[str, Any], outcome: str, version: int, settings: Settings, asked: set[str]
) -> dict[str, Any] | None:
    """The ranker request that completes a retriever's move, or None.

    Only for a retriever whose ranker this run was not asked about: the nightly's event
    names both, and a ranker asked for on its own is held to its retriever by
    ``promotion._check_pair`` instead.
    """
    from recops.promotion import paired_ranker, served_stable

    ranking = settings.ranking_model_name
    if req["model_name"] != settings.model_name or ranking in asked:
        return None
    # "already-serving" too: a retried run whose retriever moved before a failure still
    # completes the unit.
    if outcome not in ("promoted", "already-serving", "rolled-back"):
        return None
    ranker = paired_ranker(settings, version)
    serving = served_stable(settings, ranking)
    if ranker is None or serving == ranker:
        return None  # no blessed pair registered, or it serves already
    action = "rollback" if outcome == "rolled-back" else "promote"
    if action == "rollback" and serving is None:
        return None  # no ranker serves: nothing to take back
    return {
        **req,
        "model_name": ranking,
        "version": ranker,
        "action": action,
        "force": False,  # a forced retriever does not force its ranker
        "companion": True,
        "reason": (
            f"{action} with {settings.model_name} v{version}: the ranker trained on its "
            "candidates (one recommender version)"
        ),
    }


def _unwind(moved: list[dict[str, Any]], why: str) -> list[str]:
    """Move each model promoted earlier in this step back to the version it replaced.

    Newest first. Returns one line per model saying what happened; a rollback that fails
    is reported in its line, never raised over the error that caused it.
    """
    from recops.errors import PromotionError
    from recops.promotion import rollback_model

    lines = []
    for done in reversed(moved):
        name, previous = done["model_name"], int(done["previous_version"])
        try:
            rollback_model(
                name,
                previous,
                reason=f"{why}: its pair goes back with it",
                source="promote",
                settings=settings_for_model(name),
            )
            lines.append(f"{name} back to v{previous} (from v{done['version']})")
        except PromotionError as exc:
            lines.append(f"{name} could NOT go back to v{previous}: {exc}")
    return lines


def _update_run_report(outcome: dict[str, Any]) -> None:
    """Add a promotion outcome to the producing nightly run's report; never fails promotion."""
    import logging

    from recops.report import rollout_report

    try:
        rollout_report(outcome)
    except Exception as exc:  # the report is for people; serving must not depend on it
        logging.getLogger(__name__).warning(
            "run report for %s v%s not updated: %s: %s",
            outcome.get("model_name"),
            outcome.get("version"),
            type(exc).__name__,
            exc,
        )


def replay_step(params: dict[str, Any]) -> dict[str, Any]:
    """Replay a registered version (see recops.replay); fails when it did not reproduce."""
    from recops.errors import ReplayError
    from recops.params import REPLAY_SCHEMAS, check_params
    from recops.replay import ReplayConfig, replay

    params = check_params(params, REPLAY_SCHEMAS)
    result = replay(
        ReplayConfig(
            model_version=int(params["replay_model_version"]), tolerance=float(params["tolerance"])
        )
    )
    print(
        f"replay of v{result.model_version}: recorded {result.recorded}, replayed {result.replayed}"
    )
    if not result.reproduced:
        raise ReplayError(
            f"v{result.model_version} did not reproduce within {params['tolerance']}: "
            f"differences {result.differences}"
        )
    return result.to_dict()
