"""One function per ``recsys_nightly`` task, so the DAG file only wires.

Every step is keyed on the run's data interval: its outputs live under
``RECOPS_HOME/runs/<interval start date>/``, and each stage skips work whose inputs and
config it has already turned into a complete output. A retry or a second run of the same
interval therefore converges on the same files, registry version and served model.
Inputs and outputs are plain dicts (the stages' ``to_dict()``) because they travel in XCom.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from recops.config import Settings

#: Run-time choices and their defaults; the DAG's Params carry the same keys with a schema.
DEFAULT_PARAMS: dict[str, Any] = {
    # Training defaults were picked on ml-100k's valid split (see recops.training).
    "epochs": 15,
    "embedding_dim": 64,
    "batch_size": 1024,
    "learning_rate": 0.005,
    "temperature": 0.25,
    "replicas": 2,
    "target_sparsity": 0.5,
    "fine_tune_epochs": 1,
    "quality_budget": 0.01,
    "min_recall_at_10": 0.05,
    "min_ndcg_at_10": 0.05,
    "max_relative_drop": 0.02,
    "seed": 42,
}


def _utc(value: datetime | str) -> datetime:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def logical_date_for(day: str) -> str:
    """The logical date whose daily data interval is ``[day, day + 1)``.

    With a data-interval timetable a run is stamped at the end of its interval, so the
    run that processes 1998-04-22 is the one for 1998-04-23.
    """
    return (datetime.fromisoformat(day) + timedelta(days=1)).strftime("%Y-%m-%d")


def run_dir(settings: Settings, interval_start: datetime | str) -> Path:
    """Folder of one data interval's outputs."""
    return settings.runs_dir / _utc(interval_start).strftime("%Y-%m-%d")


def merged_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with the run's Params; unknown keys are refused by name."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ValueError(f"unknown params {unknown}; expected a subset of {sorted(DEFAULT_PARAMS)}")
    return {**DEFAULT_PARAMS, **params}


def config_key(*parts: Any) -> str:
    """Short stable hash of JSON-able parts (used to key outputs on inputs + config)."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def _keyed(config: Any, parent: Path, prefix: str, *inputs: Any) -> tuple[Any, str]:
    """Give ``config`` an output folder keyed on its inputs and every other field.

    Hashing the whole config (not a hand-picked subset) means a new knob can never make
    two different configs share a folder.
    """
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "output_dir"}
    key = config_key(*inputs, fields)
    return dataclasses.replace(config, output_dir=str(parent / f"{prefix}-{key}")), key


def validate_step(interval_start: datetime | str, interval_end: datetime | str) -> dict[str, Any]:
    """Validate the interval's staged partition, then publish or quarantine it.

    A day that is already published (and has nothing new staged) is re-validated in place,
    so a re-run returns the same result; see ``recops.validation.validate_and_publish``.
    """
    from recops.data import DataError, partition_path, staged_path
    from recops.validation import ValidateConfig, validate_and_publish

    settings = Settings.from_env()
    start, end = _utc(interval_start), _utc(interval_end)
    day = start.strftime("%Y-%m-%d")
    staged, path = staged_path(settings, day), partition_path(settings, day)
    quarantined = settings.quarantine_dir / day / "validation.json"
    if not (staged.is_file() or path.is_file() or quarantined.is_file()):
        raise DataError(
            f"no interactions partition for {day}: expected {staged} (staged) or {path} "
            "(run `recops data fetch` or point RECOPS_HOME at your data)"
        )
    result = validate_and_publish(
        ValidateConfig(
            interactions_path=str(staged),
            users_path=str(settings.users_path),
            items_path=str(settings.items_path),
            interval_start=start,
            interval_end=end,
            report_dir=str(run_dir(settings, start) / "validation"),
            quarantine_dir=str(settings.quarantine_dir),
            published_dir=str(settings.interactions_dir),
        )
    )
    return result.to_dict()


def features_step(interval_start: datetime | str, interval_end: datetime | str) -> dict[str, Any]:
    """Apply the Feast repo, materialize online, and build the point-in-time training set."""
    from recops.features import FeaturesConfig, build_features

    settings = Settings.from_env()
    config = FeaturesConfig(
        interval_start=_utc(interval_start),
        interval_end=_utc(interval_end),
        output_dir=str(run_dir(settings, interval_start) / "features"),
    )
    return build_features(config, settings).to_dict()


def train_step(interval_start: datetime | str, features: dict[str, Any], params: dict[str, Any] | None) -> dict[str, Any]:
    """Train the two-tower model; the output folder is keyed on data and config."""
    from recops.training import TrainConfig, train

    p = merged_params(params)
    config = TrainConfig(
        training_set_uri=features["training_set_uri"],
        users_uri=features["users_uri"],
        items_uri=features["items_uri"],
        output_dir="",
        epochs=int(p["epochs"]),
        embedding_dim=int(p["embedding_dim"]),
        batch_size=int(p["batch_size"]),
        learning_rate=float(p["learning_rate"]),
        temperature=float(p["temperature"]),
        replicas=int(p["replicas"]),
        seed=int(p["seed"]),
    )
    config, key = _keyed(config, run_dir(Settings.from_env(), interval_start), "train", features["fingerprint"])
    return {**train(config).to_dict(), "train_key": key}


def compress_step(features: dict[str, Any], trained: dict[str, Any], params: dict[str, Any] | None) -> dict[str, Any]:
    """Prune the trained model with TF-MOT and export the stripped SavedModel."""
    from recops.compression import CompressConfig, compress

    p = merged_params(params)
    train_dir = Path(trained["model_dir"]).parent
    config = CompressConfig(
        train_dir=str(train_dir),
        training_set_uri=features["training_set_uri"],
        split_uri=trained["split_uri"],
        users_uri=features["users_uri"],
        items_uri=features["items_uri"],
        output_dir="",
        target_sparsity=float(p["target_sparsity"]),
        fine_tune_epochs=int(p["fine_tune_epochs"]),
        batch_size=int(p["batch_size"]),
        replicas=int(p["replicas"]),
        seed=int(p["seed"]),
    )
    config, key = _keyed(config, train_dir.parent, "compress", trained["train_key"])
    return {**compress(config).to_dict(), "compress_key": key}


def evaluate_step(
    features: dict[str, Any], trained: dict[str, Any], compressed: dict[str, Any], params: dict[str, Any] | None
) -> dict[str, Any]:
    """Score the float and the pruned model on the test split and pick the one to serve.

    The pruned model is served when its NDCG@10 is within ``quality_budget`` (relative) of
    the float model's; otherwise the float model is, and the reason says so.
    """
    from recops.evaluation import EvalConfig, evaluate

    p = merged_params(params)
    scores = {}
    for variant, model_dir in (("float", trained["model_dir"]), ("pruned", compressed["model_dir"])):
        result = evaluate(EvalConfig(model_dir=model_dir, split_uri=trained["split_uri"], users_uri=features["users_uri"]))
        scores[variant] = result.to_dict()
    base, cand = scores["float"]["ndcg_at_k"], scores["pruned"]["ndcg_at_k"]
    loss = (base - cand) / base if base > 0 else 0.0
    chosen = "pruned" if loss <= float(p["quality_budget"]) else "float"
    reason = (
        f"pruned NDCG@10 {cand:.4f} vs float {base:.4f}: relative loss {loss:+.2%} "
        f"{'<=' if chosen == 'pruned' else '>'} budget {float(p['quality_budget']):.2%}; serving {chosen}"
    )
    served = scores[chosen]
    return {
        "selected": chosen,
        "selection_reason": reason,
        "model_dir": compressed["model_dir"] if chosen == "pruned" else trained["model_dir"],
        "metrics": {
            "recall_at_10": served["recall_at_k"],
            "ndcg_at_10": served["ndcg_at_k"],
            "hit_at_10": served["hit_at_k"],
            "mrr_at_10": served["mrr_at_k"],
            "precision_at_10": served["precision_at_k"],
            "float_recall_at_10": scores["float"]["recall_at_k"],
            "float_ndcg_at_10": base,
            "pruned_ndcg_at_10": cand,
            "pruned_sparsity": float(compressed["sparsity"]),
        },
    }


def register_step(
    run: dict[str, Any],
    validation: dict[str, Any],
    features: dict[str, Any],
    trained: dict[str, Any],
    compressed: dict[str, Any],
    evaluation: dict[str, Any],
    params: dict[str, Any] | None,
) -> dict[str, Any]:
    """Register the selected model in MLflow with lineage, gate it, and set aliases."""
    from recops.registry import GateConfig, RegisterConfig, register

    p = merged_params(params)
    key = config_key(compressed["compress_key"], evaluation["selected"])
    lineage = {
        **run,
        "feature_service": features["feature_service"],
        "features_as_of": features["as_of"],
        "features_fingerprint": features["fingerprint"],
        "training_set_sha256": features["training_set_sha256"],
        "validated_partition": validation["partition_uri"],
        "validated_partition_sha256": validation["partition_sha256"],
        "train_strategy": trained["strategy"],
        "train_replicas": trained["replicas"],
        "compression": evaluation["selected"],
        "selection_reason": evaluation["selection_reason"],
        "partition_hashes": features["partition_hashes"],
    }
    config = RegisterConfig(
        model_dir=evaluation["model_dir"],
        model_key=key,
        metrics=evaluation["metrics"],
        params=p,
        lineage=lineage,
        artifacts={"validation": validation["report_uri"]},
        gate=GateConfig(
            min_recall_at_10=float(p["min_recall_at_10"]),
            min_ndcg_at_10=float(p["min_ndcg_at_10"]),
            max_relative_drop=float(p["max_relative_drop"]),
        ),
        run_name=f"{run.get('dag_id', 'recsys')}:{run.get('run_id', '')}",
    )
    return register(config).to_dict()


def rollout_step(registered: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
    """Serve the current champion (the new version if the gate blessed it) and smoke-test it."""
    import mlflow
    import pandas as pd

    from recops.features import online_user_features
    from recops.registry import CHAMPION, resolve_saved_model
    from recops.serving.rollout import RolloutConfig, rollout

    settings = Settings.from_env()
    name = registered["model_name"]
    champion = registered["champion_version"]
    if champion is None:
        raise RuntimeError(f"model {name} has no '{CHAMPION}' alias: nothing passed the gate yet")
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    saved_model_dir = resolve_saved_model(client, name, int(champion))
    first_user = int(pd.read_parquet(features["users_uri"], columns=["user_id"])["user_id"].min())
    smoke = online_user_features([first_user], settings)
    result = rollout(
        RolloutConfig(model_name=name, version=int(champion), saved_model_dir=saved_model_dir, smoke_instances=smoke),
        settings,
    )
    return {**result.to_dict(), "new_version_blessed": registered["blessed"], "registered_version": registered["version"]}


# --------------------------------------------------------------------------- promotion

#: Models recsys_promote can serve.
PROMOTABLE_MODELS = ("recops_retrieval", "recops_ranking")


def promotion_requests(params: dict[str, Any], events: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Turn the run's Params and triggering asset events into what to promote.

    Args:
        params: ``model_name``, ``version`` (None: resolve ``alias``), ``alias``,
            ``action``, ``force``, ``reason``.
        events: Triggering asset events' ``extra`` dicts by asset name. The nightly's
            ``recops_blessed`` event names the versions it registered; the registry
            watcher's event carries ``{"payload": {"model_name", "version"}}``.

    Returns:
        One ``{model_name, version, alias, action, force, reason, source}`` per model to
        promote; a nightly event lists retrieval before ranking.
    """
    base = {
        "alias": str(params.get("alias") or "champion"),
        "action": str(params.get("action") or "promote"),
        "force": bool(params.get("force", False)),
        "reason": str(params.get("reason") or ""),
    }
    out: list[dict[str, Any]] = []
    for extras in events.values():
        for extra in extras:
            if extra.get("from_trigger"):
                payload = extra.get("payload") or {}
                out.append({**base, "model_name": payload["model_name"], "version": int(payload["version"]),
                            "source": "registry-watch", "reason": f"champion alias moved to v{payload['version']} in MLflow"})
            else:
                for model_name, version in sorted((extra.get("versions") or {}).items(), reverse=True):
                    out.append({**base, "model_name": model_name, "version": int(version), "source": "nightly",
                                "reason": f"blessed by {extra.get('run_id', 'the nightly run')}"})
    if not out:
        model = str(params.get("model_name") or PROMOTABLE_MODELS[0])
        if model not in PROMOTABLE_MODELS:
            raise ValueError(f"model_name {model!r}: expected one of {PROMOTABLE_MODELS}")
        version = params.get("version")
        out.append({**base, "model_name": model, "version": int(version) if version is not None else None, "source": "ui"})
    return out


def promote_step(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Promote (or roll back) each requested model; the first failure fails the task.

    Models are handled one at a time under their promotion lock; a failed canary rolls
    that model back (serving and alias) and raises, so the run shows failed.
    """
    from recops.promotion import PromoteConfig, promote, rollback_model

    settings = Settings.from_env()
    results = []
    for req in requests:
        if req["action"] == "rollback":
            result = rollback_model(req["model_name"], req.get("version"), reason=req["reason"], source=req["source"], settings=settings)
        else:
            config = PromoteConfig(
                model_name=req["model_name"], version=req.get("version"), alias=req["alias"],
                force=req["force"], reason=req["reason"], source=req["source"],
            )
            result = promote(config, settings)
        results.append(result.to_dict())
    return results
