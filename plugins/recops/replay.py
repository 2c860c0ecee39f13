"""Replay a registered version: rebuild its training set, retrain it, compare the metrics.

A model version's lineage (``lineage.json`` on its MLflow run) names the data interval,
the partition hashes, the feature services and the training set's hash, the run's
Params and the compression choice. ``replay(ReplayConfig)`` checks that the same
partitions are still published (byte for byte), rebuilds the point-in-time training set
and requires its hash to match, retrains the two-tower with the same Params into a fresh
folder (never the cached original), applies the same compression variant, scores it on
the rebuilt split, and compares with the metrics recorded on the version. The outcome is
logged as an MLflow run tagged ``recops.replay_of``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from recops.config import Settings
from recops.errors import ReplayError
from recops.records import Record

#: Metrics compared; training is seeded, so the default tolerance is the seed spread
#: measured by benchmarks/quality.py (std ≈ 0.0044 on ml-100k), doubled.
COMPARED = ("recall_at_10", "ndcg_at_10")


@dataclass(frozen=True, kw_only=True)
class ReplayConfig(Record):
    """Which version to replay.

    Attributes:
        model_version: Registered version of the retrieval model.
        tolerance: Largest absolute difference allowed per compared metric.
        model_name: Registered model; the served retrieval model by default.
    """

    model_version: int
    tolerance: float = 0.01
    model_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class ReplayResult(Record):
    """What the replay measured against what the version recorded."""

    model_name: str
    model_version: int
    reproduced: bool
    recorded: dict[str, float]
    replayed: dict[str, float]
    differences: dict[str, float]
    training_set_sha256: str
    run_id: str
    output_dir: str
    notes: list[str] = field(default_factory=list)


def _lineage(client: Any, name: str, version: int) -> tuple[Any, dict[str, Any]]:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ReplayError(f"model {name!r} has no version {version}") from exc
    try:
        lineage = mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/lineage.json")
    except Exception as exc:
        raise ReplayError(
            f"{name} v{version}: its run {mv.run_id} has no readable lineage.json ({exc})"
        ) from exc
    for key in (
        "data_interval_start",
        "data_interval_end",
        "partition_hashes",
        "training_set_sha256",
        "train_config",
    ):
        if key not in lineage:
            raise ReplayError(
                f"{name} v{version}: lineage.json lacks {key!r}; it predates replay support"
            )
    return mv, lineage


def _check_partitions(settings: Settings, recorded: dict[str, str]) -> None:
    from recops.data import sha256_file

    changed = []
    for name, digest in sorted(recorded.items()):
        path = settings.interactions_dir / name / "part-0.parquet"
        if not path.is_file():
            changed.append(f"{name} (missing)")
        elif sha256_file(path) != digest:
            changed.append(f"{name} (sha256 differs)")
    if changed:
        raise ReplayError(
            f"the published data changed since this version was trained: {changed[:5]}"
            f"{' ...' if len(changed) > 5 else ''}; replay needs the same partitions"
        )


def replay(config: ReplayConfig, settings: Settings | None = None) -> ReplayResult:
    """Rebuild a version's training set, retrain with its config and compare its metrics.

    Raises:
        ReplayError: The lineage is missing, the data changed, or the rebuilt training
            set's hash differs. A replay whose metrics differ beyond the tolerance returns
            ``reproduced=False`` (the caller decides whether that fails a task).
    """
    import mlflow

    from recops.compression import VariantConfig, compress_variant
    from recops.evaluation import EvalConfig, evaluate
    from recops.features import FeaturesConfig, build_features
    from recops.layout import spec_path
    from recops.params import NIGHTLY_DEFAULTS, merged_params, stage_fields
    from recops.registry import METRIC_TAG_PREFIX, experiment_id_for, mlflow_client
    from recops.training import TrainConfig, train

    settings = settings or Settings.from_env()
    name = config.model_name or settings.model_name
    client = mlflow_client(settings)
    mv, lineage = _lineage(client, name, config.model_version)
    # The version's own dataset (versions from before datasets existed: the deployment's).
    settings = settings.for_dataset(str(lineage.get("dataset") or settings.dataset))
    _check_partitions(settings, lineage["partition_hashes"])
    start = datetime.fromisoformat(lineage["data_interval_start"])
    end = datetime.fromisoformat(lineage["data_interval_end"])
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f"replay-v{config.model_version}-", dir=settings.runs_dir))
    notes: list[str] = []

    features = build_features(
        FeaturesConfig(interval_start=start, interval_end=end, output_dir=str(out / "features")),
        settings,
    )
    if features.training_set_sha256 != lineage["training_set_sha256"]:
        raise ReplayError(
            f"rebuilt training set {features.training_set_sha256[:12]} != recorded "
            f"{lineage['training_set_sha256'][:12]} for {name} v{config.model_version}"
        )
    # Params a later release added take today's defaults; ones it removed are dropped.
    recorded_params = lineage["train_config"].get("params", {})
    p = merged_params({k: v for k, v in recorded_params.items() if k in NIGHTLY_DEFAULTS})
    trained = train(
        TrainConfig(
            training_set_uri=features.training_set_uri,
            users_uri=features.users_uri,
            items_uri=features.items_uri,
            spec_uri=str(lineage.get("dataset_spec") or spec_path(settings)),
            output_dir=str(out / "train"),
            **stage_fields("train", p),
        )
    )
    model_dir = trained.model_dir
    variant = str(lineage.get("compression", "float"))
    if variant != "float":
        built = compress_variant(
            VariantConfig(
                variant=variant,
                train_dir=str(Path(trained.model_dir).parent),
                training_set_uri=features.training_set_uri,
                split_uri=trained.split_uri,
                users_uri=features.users_uri,
                items_uri=features.items_uri,
                output_dir=str(out / f"variant-{variant}"),
                **stage_fields("compress", p),
            )
        )
        if built.status != "ok":
            raise ReplayError(f"variant {variant} failed on replay: {built.reason}")
        model_dir = built.model_dir
        notes.append(f"compression variant {variant} rebuilt")
    scored = evaluate(
        EvalConfig(
            model_dir=model_dir,
            split_uri=trained.split_uri,
            users_uri=features.users_uri,
            spec_uri=str(lineage.get("dataset_spec") or spec_path(settings)),
            training_set_uri=features.training_set_uri,
        )
    )
    replayed = {"recall_at_10": scored.recall_at_k, "ndcg_at_10": scored.ndcg_at_k}
    recorded = {
        m: float(mv.tags[METRIC_TAG_PREFIX + m])
        for m in COMPARED
        if METRIC_TAG_PREFIX + m in mv.tags
    }
    if set(recorded) != set(COMPARED):
        raise ReplayError(
            f"{name} v{config.model_version} has no recorded "
            f"{sorted(set(COMPARED) - set(recorded))}"
        )
    differences = {m: abs(replayed[m] - recorded[m]) for m in COMPARED}
    reproduced = all(d <= config.tolerance for d in differences.values())

    experiment_id = experiment_id_for(client, settings, "recsys_replay")
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"replay {name} v{config.model_version}"
    ) as run:
        mlflow.set_tags(
            {
                "recops.replay_of": f"{name}/{config.model_version}",
                "recops.reproduced": str(reproduced).lower(),
            }
        )
        mlflow.log_metrics(
            {
                **{f"replayed.{k}": v for k, v in replayed.items()},
                **{f"diff.{k}": v for k, v in differences.items()},
            }
        )
        mlflow.log_dict(
            {"lineage": lineage, "notes": notes, "tolerance": config.tolerance}, "replay.json"
        )
    return ReplayResult(
        model_name=name,
        model_version=config.model_version,
        reproduced=reproduced,
        recorded=recorded,
        replayed=replayed,
        differences=differences,
        training_set_sha256=features.training_set_sha256,
        run_id=run.info.run_id,
        output_dir=str(out),
        notes=notes,
    )
