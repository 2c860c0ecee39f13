"""One function per ``recsys_nightly`` task, so the DAG file only wires.

Every step is keyed on the run's data interval: its outputs live under
``RECOPS_HOME/runs/<interval start date>/``, and each stage skips work whose inputs and
config it has already turned into a complete output. A retry or a second run of the same
interval therefore converges on the same files, registry version and served model.
Inputs and outputs are plain dicts (the stages' ``to_dict()``) because they travel in XCom.

Under Airflow each step runs in its task's nested MLflow run, under one run per DAG run
(``recops.tracking``); the train and rank results name theirs (``mlflow_run_id``), and
the registered versions link to them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from recops.config import RANKER_ITEM_FEATURES, RANKER_USER_FEATURES, SERVED_PREFIX, Settings
from recops.params import merged_params, stage_fields
from recops.tracking import (
    end_dag_run_run,
    log_data_docs,
    log_here,
    record_training,
    run_url,
    task_run,
)


def _utc(value: datetime | str) -> datetime:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def logical_date_for(day: str) -> str:
    """The logical date whose daily data interval is ``[day, day + 1)``.

    With a data-interval timetable a run is stamped at the end of its interval, so the
    run that processes 1998-04-22 is the one for 1998-04-23.
    """
    return (datetime.fromisoformat(day) + timedelta(days=1)).strftime("%Y-%m-%d")


def dataset_settings(dataset: str | None = None) -> Settings:
    """The deployment's settings for ``dataset`` (None: the deployment's own dataset).

    A run's dataset comes from its ``dataset`` Param and travels downstream in the
    validate and features results, so every task of a run works on the same dataset.
    """
    settings = Settings.from_env()
    return settings.for_dataset(dataset) if dataset else settings


def dataset_runs(
    interval_start: datetime | str, interval_end: datetime | str
) -> list[dict[str, Any]]:
    """One ``recsys_nightly`` trigger per other dataset with data for the interval.

    ``recsys_nightly``'s own schedule runs the deployment's dataset; every other imported
    dataset with the interval's day staged (or published) gets its own run of the same
    DAG. Airflow keeps one run per DAG and logical date, so run ``i`` is stamped ``i``
    seconds after the interval's end: the nightly's timetable infers the same daily data
    interval from it. The run ids name the dataset, so a re-run of the fan-out triggers
    nothing twice.

    Returns:
        ``TriggerDagRunOperator`` keyword arguments: ``trigger_run_id``, ``logical_date``
        and ``conf`` (``{"dataset": name}``), one per dataset.
    """
    from recops.data import partition_path, staged_path
    from recops.layout import known_datasets

    settings = Settings.from_env()
    start, end = _utc(interval_start), _utc(interval_end)
    day = start.strftime("%Y-%m-%d")
    out: list[dict[str, Any]] = []
    others = [d for d in known_datasets(settings) if d != settings.dataset]
    for dataset in others:
        theirs = settings.for_dataset(dataset)
        if not (staged_path(theirs, day).is_file() or partition_path(theirs, day).is_file()):
            continue
        stamp = end + timedelta(seconds=len(out) + 1)
        out.append(
            {
                "trigger_run_id": f"dataset__{dataset}__{day}",
                "logical_date": stamp.isoformat(),
                "conf": {"dataset": dataset},
            }
        )
    return out


def run_dir(settings: Settings, interval_start: datetime | str) -> Path:
    """Folder of one data interval's outputs."""
    return settings.runs_dir / _utc(interval_start).strftime("%Y-%m-%d")


def run_ref(dag_run: Any) -> dict[str, str]:
    """What the registry and the report record of an Airflow DAG run (ids and interval)."""
    return {
        "dag_id": str(dag_run.dag_id),
        "run_id": str(dag_run.run_id),
        "data_interval_start": str(dag_run.data_interval_start),
        "data_interval_end": str(dag_run.data_interval_end),
    }


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


def validate_step(
    interval_start: datetime | str,
    interval_end: datetime | str,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate the interval's staged partition, then publish or quarantine it.

    A day that is already published (and has nothing new staged) is re-validated in place,
    so a re-run returns the same result; see ``recops.validation.validate_and_publish``.

    Raises:
        recops.params.ParamError: ``params`` holds a key no Param declares (Airflow lets
            unknown keys through) or a value its schema refuses; checked before any data
            moves.
    """
    p = merged_params(params)
    from recops.data import partition_path, staged_path
    from recops.data.event_log import compact
    from recops.errors import LateDataError
    from recops.validation import ValidateConfig, validate_and_publish

    settings = dataset_settings(p["dataset"])
    start, end = _utc(interval_start), _utc(interval_end)
    day = start.strftime("%Y-%m-%d")
    # Live events (POST /v1/events, `recops feed`) wait in the day's event log until the
    # run for that day folds them into its staged partition.
    compact(settings, day)
    staged, path = staged_path(settings, day), partition_path(settings, day)
    quarantined = settings.quarantine_dir / day / "validation.json"
    if not (staged.is_file() or path.is_file() or quarantined.is_file()):
        raise LateDataError(
            f"no interactions partition for {day}: expected {staged} (staged) or {path} "
            "(run `recops data fetch` or point RECOPS_HOME at your data)"
        )
    from recops.layout import spec_path

    config = ValidateConfig(
        spec_uri=str(spec_path(settings)),
        interactions_path=str(staged),
        users_path=str(settings.users_path),
        items_path=str(settings.items_path),
        interval_start=start,
        interval_end=end,
        report_dir=str(run_dir(settings, start) / "validation"),
        quarantine_dir=str(settings.quarantine_dir),
        published_dir=str(settings.interactions_dir),
    )
    with task_run(settings, run_params=p):
        result = validate_and_publish(config)
        if result.data_docs_uri:  # the one-page form MLflow's artifact viewer renders
            log_data_docs(result.data_docs_uri)
    # Task logs are where people look first: say where the human-readable report is.
    print(f"GX Data Docs: {result.data_docs_uri or '(not built)'}")
    for warning in result.warnings:
        print(f"data contract warning: {warning}")
    return {**result.to_dict(), "dataset": settings.dataset}


def features_step(
    interval_start: datetime | str,
    interval_end: datetime | str,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Apply the Feast repo, materialize online, and build the point-in-time training set.

    The result names the dataset and its spec, which the training stages read their
    features from.
    """
    from recops.features import FeaturesConfig, build_features
    from recops.layout import spec_path

    p = merged_params(params)
    settings = dataset_settings(p["dataset"])
    config = FeaturesConfig(
        interval_start=_utc(interval_start),
        interval_end=_utc(interval_end),
        output_dir=str(run_dir(settings, interval_start) / "features"),
    )
    from recops.ledger import promotion_lock

    # One writer of the feature sources, the Feast registry and the online store at a time:
    # a task process orphaned by a killed supervisor can outlive it and overlap the retry
    # (the file registry is unsafe with concurrent writers). flock is released when its
    # holder dies, so the retry waits exactly as long as the orphan lives.
    with task_run(settings, run_params=p), promotion_lock(settings, "_features"):
        built = build_features(config, settings).to_dict()
    return {**built, "dataset": settings.dataset, "spec_uri": str(spec_path(settings))}


def _inputs(features: dict[str, Any], name: str, split_uri: str) -> list[tuple[str, str, str, str]]:
    """A training task's MLflow dataset inputs: its set for training, the split for evaluation.

    The set carries the digest the features stage computed (``<name>_sha256``).
    """
    digest = str(features.get(f"{name}_sha256", ""))
    return [
        (name, features[f"{name}_uri"], digest, "training"),
        ("split", split_uri, "", "evaluation"),
    ]


def train_step(
    interval_start: datetime | str, features: dict[str, Any], params: dict[str, Any] | None
) -> dict[str, Any]:
    """Train the two-tower model; the output folder is keyed on data and config.

    With ``RECOPS_TRAIN_WORKERS`` > 1 the task launches that many MultiWorkerMirroredStrategy
    workers (``recops.multiworker``) and returns the chief's result. The task's MLflow run
    gets the params, each epoch as it ends, system metrics and the training data as dataset
    inputs; its id is the result's ``mlflow_run_id`` (None outside Airflow).
    """
    from recops.multiworker import train_multiworker, workers_from_env
    from recops.training import TrainConfig, train

    p = merged_params(params)
    config = TrainConfig(
        training_set_uri=features["training_set_uri"],
        users_uri=features["users_uri"],
        items_uri=features["items_uri"],
        spec_uri=features["spec_uri"],
        output_dir="",
        **stage_fields("train", p),
    )
    settings = dataset_settings(features.get("dataset"))
    config, key = _keyed(
        config, run_dir(settings, interval_start), "train", features["fingerprint"]
    )
    workers = workers_from_env()
    with task_run(settings, params=stage_fields("train", p), system_metrics=True) as tracked:
        if workers > 1 and not (Path(config.output_dir) / "_SUCCESS").exists():
            # N MultiWorkerMirroredStrategy processes over loopback; the chief publishes
            # (and alone logs the epochs, to the run exported to the workers).
            result = train_multiworker(config, workers).to_dict()
        else:
            result = train(config).to_dict()
        record_training(
            settings,
            tracked,
            inputs=_inputs(features, "training_set", result["split_uri"]),
            history={
                "train.loss": result.get("loss_history") or [],
                "train.valid_ndcg_at_10": result.get("valid_ndcg_at_10") or [],
            },
        )
    return {**result, "train_key": key, "mlflow_run_id": tracked}


def rank_step(
    features: dict[str, Any], trained: dict[str, Any], params: dict[str, Any] | None
) -> dict[str, Any]:
    """Train the DCN-v2 ranker on the ranking_v1 set, on the retrieval model's split.

    Tracked as ``train_step`` is; the result's ``mlflow_run_id`` names the task's run.
    """
    from recops.ranking import RankerConfig, train_ranker

    p = merged_params(params)
    train_dir = Path(trained["model_dir"]).parent
    config = RankerConfig(
        training_set_uri=features["ranking_set_uri"],
        split_uri=trained["split_uri"],
        users_uri=features["users_uri"],
        items_uri=features["items_uri"],
        spec_uri=features["spec_uri"],
        output_dir="",
        numeric_features=RANKER_USER_FEATURES,
        item_numeric_features=RANKER_ITEM_FEATURES,
        **stage_fields("rank", p),
    )
    config, key = _keyed(
        config, train_dir.parent, "rank", trained["train_key"], features["ranking_set_sha256"]
    )
    settings = dataset_settings(features.get("dataset"))
    with task_run(settings, params=stage_fields("rank", p), system_metrics=True) as tracked:
        result = train_ranker(config).to_dict()
        record_training(
            settings,
            tracked,
            inputs=_inputs(features, "ranking_set", trained["split_uri"]),
            history={f"rank.{k}": v for k, v in (result.get("history") or {}).items()},
        )
    return {**result, "rank_key": key, "mlflow_run_id": tracked}


def variant_names(params: dict[str, Any] | None) -> list[str]:
    """The compression variants this run fans out (one mapped task each)."""
    from recops.compression import VARIANTS

    p = merged_params(params)
    # Tracked too: it may be the DAG run's first task, or the one that fails it.
    with task_run(dataset_settings(p["dataset"]), run_params=p):
        names = list(p["variants"])
        unknown = sorted(set(names) - set(VARIANTS))
        if unknown:
            raise ValueError(
                f"unknown compression variants {unknown}; expected some of {sorted(VARIANTS)}"
            )
    return names


def _variant_dir(trained: dict[str, Any], variant: str, p: dict[str, Any]) -> Path:
    key = config_key(trained["train_key"], variant, int(p["fine_tune_epochs"]), int(p["seed"]))
    return Path(trained["model_dir"]).parent.parent / f"variant-{variant}-{key}"


def variant_step(
    features: dict[str, Any], trained: dict[str, Any], variant: str, params: dict[str, Any] | None
) -> dict[str, Any]:
    """Build and score one compression variant; a failure is recorded, not raised."""
    from recops.compression import VariantConfig, compress_variant
    from recops.params import check_variant

    variant = check_variant(variant)  # it names the output folder
    p = merged_params(params)
    config = VariantConfig(
        variant=variant,
        train_dir=str(Path(trained["model_dir"]).parent),
        training_set_uri=features["training_set_uri"],
        split_uri=trained["split_uri"],
        users_uri=features["users_uri"],
        items_uri=features["items_uri"],
        output_dir=str(_variant_dir(trained, variant, p)),
        **stage_fields("compress", p),
    )
    settings = dataset_settings(features.get("dataset"))
    # One nested run per variant, named after it (the mapped tasks share one task id).
    label = f"compress {variant}"
    with task_run(settings, label=label, params={"variant": variant}, system_metrics=True):
        built = compress_variant(config).to_dict()
        log_here(built, {"recops.variant": variant, "recops.variant_status": built["status"]})
    return {**built, "output_dir": config.output_dir}


def select_step(
    trained: dict[str, Any],
    features: dict[str, Any],
    variants: list[dict[str, Any]],
    params: dict[str, Any] | None,
) -> dict[str, Any]:
    """Measure every variant side by side and pick the one to serve (see compression)."""
    from recops.compression import SelectConfig, select_variant

    p = merged_params(params)
    dirs = tuple(sorted(v["output_dir"] for v in variants))
    key = config_key(trained["train_key"], dirs, float(p["quality_budget"]))
    config = SelectConfig(
        train_dir=str(Path(trained["model_dir"]).parent),
        split_uri=trained["split_uri"],
        users_uri=features["users_uri"],
        variant_dirs=dirs,
        output_dir=str(Path(trained["model_dir"]).parent.parent / f"select-{key}"),
        **stage_fields("select", p),
    )
    with task_run(dataset_settings(features.get("dataset"))):
        selected = select_variant(config).to_dict()
        log_here({}, {"recops.selected": selected["selected"]})
    return selected


def _flat_metrics(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out = {
        f"{prefix}recall_at_10": result["recall_at_k"],
        f"{prefix}ndcg_at_10": result["ndcg_at_k"],
        f"{prefix}hit_at_10": result["hit_at_k"],
        f"{prefix}mrr_at_10": result["mrr_at_k"],
        f"{prefix}precision_at_10": result["precision_at_k"],
    }
    for segment, values in (result.get("segments") or {}).items():
        for name in ("recall", "ndcg"):
            value = values.get(f"{name}_at_k")
            if value is not None and value == value:  # NaN: an empty segment is not a score
                out[f"{prefix}{segment}.{name}_at_10"] = float(value)
    return {k: float(v) for k, v in out.items()}


def _served_metrics(
    model_dir: str, common: dict[str, str], history_max: int, *, baselines: bool = True
) -> dict[str, float]:
    """The served-path figures of ``model_dir`` (``served.*``), and the baselines' on its cut."""
    from recops.served_eval import ServedEvalConfig, evaluate_served

    got = evaluate_served(
        ServedEvalConfig(
            model_dir=model_dir,
            split_uri=common["split_uri"],
            users_uri=common["users_uri"],
            training_set_uri=common["training_set_uri"],
            spec_uri=common["spec_uri"],
            history_max=history_max,
            baselines=baselines,
        )
    ).to_dict()
    out = {f"{SERVED_PREFIX}{k}": v for k, v in _flat_metrics(got).items()}
    out[f"{SERVED_PREFIX}seen_share"] = float(got["seen_share"])
    out[f"{SERVED_PREFIX}seen_share_beyond_history"] = float(got["seen_share_beyond_history"])
    for name, figures in got["baselines"].items():
        for metric in ("recall_at_k", "ndcg_at_k"):
            if metric in figures:
                key = f"{SERVED_PREFIX}{name}.{metric.replace('_at_k', '_at_10')}"
                out[key] = float(figures[metric])
    return out


def evaluate_step(
    features: dict[str, Any],
    trained: dict[str, Any],
    selection: dict[str, Any],
    ranked: dict[str, Any],
) -> dict[str, Any]:
    """Score the selected model, the re-ranked list and the current champion on one holdout.

    The champion (if any) is re-scored on this run's test split in this task, so the
    gate's change thresholds compare like with like.
    """
    from recops.evaluation import EvalConfig, RerankConfig, evaluate, evaluate_rerank
    from recops.ledger import current_alias
    from recops.registry import CHAMPION, mlflow_client, resolve_saved_model
    from recops.serving.recommend import POLICY_METRICS, choose_policy

    settings = dataset_settings(features.get("dataset"))
    common = {
        "split_uri": trained["split_uri"],
        "users_uri": features["users_uri"],
        "spec_uri": features.get("spec_uri", ""),
        "training_set_uri": features["training_set_uri"],
    }
    with task_run(settings):
        offline = evaluate(EvalConfig(model_dir=selection["model_dir"], **common)).to_dict()
        metrics = _flat_metrics(offline)
        metrics.update(_served_metrics(selection["model_dir"], common, settings.history_max))
        rerank = evaluate_rerank(
            RerankConfig(
                retrieval_model_dir=selection["model_dir"],
                ranker_model_dir=ranked["model_dir"],
                user_features_uri=features["ranking_set_uri"],
                rerank_by="fusion",
                **common,
            )
        ).to_dict()
        metrics.update(_flat_metrics(rerank, "reranked."))
        metrics.update(
            {
                "float_ndcg_at_10": float(selection["baseline_metrics"].get("ndcg_at_10", 0.0)),
                "float_recall_at_10": float(selection["baseline_metrics"].get("recall_at_10", 0.0)),
            }
        )
        client = mlflow_client(settings)
        baseline: dict[str, float] | None = None
        champion = current_alias(client, settings.model_name, CHAMPION)
        if champion is not None:
            champion_dir = resolve_saved_model(client, settings.model_name, champion)
            baseline = _flat_metrics(
                evaluate(EvalConfig(model_dir=champion_dir, **common)).to_dict()
            )
            # The baselines depend on the cut alone: the candidate's are the champion's.
            baseline.update(
                _served_metrics(champion_dir, common, settings.history_max, baselines=False)
            )
        # The ranker re-orders what users see only where that measured better on this holdout.
        fused = {m: metrics[f"reranked.{m}"] for m in POLICY_METRICS}
        policy = choose_policy(metrics, fused)
        result = {
            "rerank_policy": policy,
            "model_dir": selection["model_dir"],
            "selected": selection["selected"],
            "selection_reason": selection["selection_reason"],
            "metrics": metrics,
            "baseline_metrics": baseline,
            "baseline_version": champion,
            "ranker_metrics": {
                "rmse": float(ranked["rmse"]),
                "click_auc": float(ranked["click_auc"]),
            },
        }
        log_here(result["metrics"], {"recops.rerank_policy": policy})
    return result


def register_step(
    run: dict[str, Any],
    validation: dict[str, Any],
    features: dict[str, Any],
    trained: dict[str, Any],
    selection: dict[str, Any],
    evaluation: dict[str, Any],
    ranked: dict[str, Any],
    params: dict[str, Any] | None,
) -> dict[str, Any]:
    """Register the selected retrieval model and the ranker with lineage, and gate both.

    Neither alias ``champion`` moves here: ``recsys_promote`` moves it once the version
    passed its canary. A blessed candidate is announced through the ``recops_blessed``
    asset by the next task.
    """
    settings = dataset_settings(features.get("dataset"))
    p = merged_params(params)
    actor = f"{run.get('dag_id', 'recsys_nightly')}/{run.get('run_id', '')}"
    lineage = {
        **run,
        "airflow_run_url": run_url(run),
        "train_mlflow_run_id": trained.get("mlflow_run_id") or "",
        "dataset": settings.dataset,
        "dataset_spec": features.get("spec_uri", ""),
        "feature_services": {
            "retrieval": features["feature_service"],
            "ranking": features.get("ranking_service", ""),
        },
        "features_as_of": features["as_of"],
        "features_fingerprint": features["fingerprint"],
        "training_set_sha256": features["training_set_sha256"],
        "ranking_set_sha256": features.get("ranking_set_sha256", ""),
        "validated_partition": validation["partition_uri"],
        "validated_partition_sha256": validation["partition_sha256"],
        "validation_report": validation["report_uri"],
        "validation_warnings": validation.get("warnings", []),
        "train_config": {
            k: trained.get(k) for k in ("strategy", "replicas", "best_epoch", "protocol")
        }
        | {"params": p},
        "train_strategy": trained["strategy"],
        "compression": evaluation["selected"],
        "selection_reason": evaluation["selection_reason"],
        "partition_hashes": features["partition_hashes"],
    }
    artifacts = {
        "validation": validation["report_uri"],
        "compression/table": selection["table_uri"],
        "compression/table_md": selection["table_md_uri"],
        "compression/pareto": selection["pareto_png_uri"],
    }
    # The TFLite edge artifacts go beside the SavedModel they were converted from.
    for row in json.loads(Path(selection["table_uri"]).read_text()):
        if row.get("status") == "ok" and row.get("tflite_uri"):
            artifacts[f"edge/{row['name']}"] = row["tflite_uri"]
    if validation.get("data_docs_uri"):
        artifacts["data_docs"] = str(Path(validation["data_docs_uri"]).parent)
    # The key vocabularies (the user's string keys -> the ids the model knows) as of this
    # version, so a registered version can always be queried with the user's own keys.
    for side in ("users", "items"):
        if (settings.keys_dir / f"{side}.parquet").is_file():
            artifacts[f"vocabularies/{side}"] = str(settings.keys_dir / f"{side}.parquet")
    artifacts["dataset_spec"] = str(features.get("spec_uri") or "")
    artifacts = {k: v for k, v in artifacts.items() if v}
    with task_run(settings, params={"dataset": settings.dataset}):
        return _register_both(settings, lineage, artifacts, features, trained, selection,
                              evaluation, ranked, p, actor)  # fmt: skip


def _register_both(
    settings: Settings,
    lineage: dict[str, Any],
    artifacts: dict[str, str],
    features: dict[str, Any],
    trained: dict[str, Any],
    selection: dict[str, Any],
    evaluation: dict[str, Any],
    ranked: dict[str, Any],
    p: dict[str, Any],
    actor: str,
) -> dict[str, Any]:
    from recops.registry import GateConfig, RegisterConfig, Threshold, register
    from recops.tracking import model_description

    retrieval = register(
        RegisterConfig(
            model_dir=evaluation["model_dir"],
            model_key=config_key(
                trained["train_key"], evaluation["selected"], selection["model_dir"]
            ),
            metrics=evaluation["metrics"],
            params=p,
            lineage=lineage,
            artifacts=artifacts,
            gate=GateConfig(**stage_fields("gate", p)),
            baseline_metrics=evaluation["baseline_metrics"],
            baseline_version=evaluation["baseline_version"],
            model_name=settings.model_name,
            run_name=actor,
            auto_promote=False,
            actor=actor,
            run_id=trained.get("mlflow_run_id"),
            description=model_description("retrieval", settings, features),
        )
    )
    ranking = register(
        RegisterConfig(
            model_dir=ranked["model_dir"],
            model_key=ranked["rank_key"],
            metrics=evaluation["ranker_metrics"],
            params=p,
            lineage={
                **lineage,
                "compression": "none",
                "retrieval_version": retrieval.version,
                "rerank_policy": evaluation["rerank_policy"],
            },
            gate=GateConfig(
                kind="ranking",
                extra=(
                    Threshold(
                        metric="rmse",
                        upper=float(p["max_rmse"]),
                        max_relative_change=float(p["max_relative_drop"]),
                        higher_is_better=False,
                    ),
                ),
            ),
            model_name=settings.ranking_model_name,
            experiment_name="recsys_nightly_ranking",
            run_name=actor,
            auto_promote=False,
            actor=actor,
            run_id=ranked.get("mlflow_run_id"),
            description=model_description("ranking", settings, features),
        )
    )
    from recops.features.lineage import record_model_lineage

    # Feast's lineage view: each feature service links the versions trained on it.
    for result, service in (
        (retrieval, features["feature_service"]),
        (ranking, features.get("ranking_service")),
    ):
        if service:
            record_model_lineage(
                settings, service, result.model_name, result.version, result.run_id,
                airflow_run=lineage,
            )  # fmt: skip
    return {
        "retrieval": retrieval.to_dict(),
        "ranking": ranking.to_dict(),
        "dataset": settings.dataset,
    }


def report_step(
    run: dict[str, Any],
    registered: dict[str, Any],
    features: dict[str, Any],
    trained: dict[str, Any],
    evaluation: dict[str, Any],
    ranked: dict[str, Any],
    validation: dict[str, Any] | None = None,
    selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record what the run report needs in MLflow, then render it (see recops.report).

    The run's last task: once the page is written, the DAG run's MLflow run ends FINISHED.
    """
    from recops.report import report_dag_run

    settings = dataset_settings(features.get("dataset"))
    with task_run(settings):
        # The page and its records go to the DAG run's own MLflow run (recops.report.runs).
        built = report_dag_run(
            run,
            registered=registered,
            features=features,
            trained=trained,
            evaluation=evaluation,
            ranked=ranked,
            validation=validation,
            selection=selection,
            settings=settings,
        ).to_dict()
    end_dag_run_run(settings)  # the run's last task: its MLflow run is complete
    return built


def announcement(registered: dict[str, Any], run_id: str) -> dict[str, Any] | None:
    """The ``recops_blessed`` asset event's extra, or None when the retrieval model was not
    blessed (a ranker alone is never promoted: it is validated beside its retrieval model).
    """
    retrieval = registered["retrieval"]
    if not retrieval["blessed"]:
        return None
    versions = {retrieval["model_name"]: int(retrieval["version"])}
    ranking = registered.get("ranking") or {}
    if ranking.get("blessed"):
        versions[ranking["model_name"]] = int(ranking["version"])
    return {"versions": versions, "run_id": run_id, "dataset": registered.get("dataset")}
