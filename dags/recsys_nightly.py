"""
### recsys_nightly

Nightly retrain of the two-stage recommender, one run per day of data:

`validate` → `features` → `train` → (`rank`, `compress` × variants → `select`) →
`evaluate` → `register` → `announce`

- **validate**: Great Expectations suites (schema, keys, ranges, uniqueness, referential
  integrity, time window, row-count band, drift) on the day's staged partition; it is
  published atomically, or moved to quarantine with its report and the run fails.
- **features**: rolling features from the published partitions, `feast apply`,
  incremental materialization, and point-in-time correct training sets from the
  `retrieval_v1` and `ranking_v1` feature services.
- **train**: tf_keras two-tower retrieval under MirroredStrategy (all GPUs, or logical
  CPU devices; MultiWorker when `TF_CONFIG` is set), resumable through BackupAndRestore.
- **rank**: DCN-v2 ranker (rating and click heads) on the ranking set.
- **compress**: one mapped task per TF-MOT / TFLite / distillation variant; a variant that
  fails is recorded, not fatal. **select** measures them side by side and picks the best
  within the quality budget (Pareto plot and table logged).
- **evaluate**: Recall/NDCG@10 overall and per segment, re-ranked lists, and the current
  champion re-scored on the same holdout.
- **register**: MLflow runs and model versions with signature and lineage for both
  models, gated against the champion; alias `challenger`.
- **report**: one self-contained HTML run report (validation, features, training curves,
  metrics vs champion, compression, gate, rollout), logged to MLflow and opened from
  the DAG run's "Run report" tab.
- **announce**: emits the `recops_blessed` asset when the gate blessed the candidate;
  `recsys_promote` then canary-rolls it out to TF Serving.

All logic lives in the `recops` package; this file only wires tasks. Outputs are keyed on
the data interval and the config, so clearing and re-running a day converges on the same
result.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

# Deployment setting: seconds before the first retry (backoff doubles it); tests shorten it.
RETRY_DELAY = pendulum.duration(seconds=int(os.environ.get("RECOPS_RETRY_DELAY_SECONDS") or 30))
# Deployment setting: the Celery queue of the tasks that train (GPU workers serve it); the
# embedded profile's executor ignores queues.
GPU_QUEUE = os.environ.get("RECOPS_GPU_QUEUE") or "gpu"

BLESSED = Asset(name="recops_blessed", uri="recops://registry/blessed")
VARIANTS = [
    "prune_50",
    "prune_80",
    "prune_90",
    "cluster_16",
    "int8_tables",
    "fp16_tables",
    "folded_fp32",
    "distill_d32",
    "distill_d32_int8",
    "ptq_dynamic",
    "ptq_float16",
    "ptq_int8",
    "qat_int8",
]


@dag(
    # A real [day, next day) interval; plain "@daily" in Airflow 3 gives zero-length ones.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(1997, 9, 20, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": True,
    },
    params={
        "epochs": Param(15, type="integer", minimum=1, maximum=200, description="Training epochs"),
        "embedding_dim": Param(64, type="integer", minimum=4, maximum=512),
        "batch_size": Param(1024, type="integer", minimum=16, maximum=65536),
        "learning_rate": Param(0.005, type="number", exclusiveMinimum=0, maximum=10),
        "temperature": Param(
            0.25, type="number", exclusiveMinimum=0, maximum=10, description="Softmax temperature"
        ),
        "replicas": Param(
            2, type="integer", minimum=1, maximum=16, description="Logical CPU devices when no GPU"
        ),
        "early_stopping_patience": Param(
            0,
            type="integer",
            minimum=0,
            maximum=50,
            description="Stop after N epochs without a better valid NDCG@10 (0: off)",
        ),
        "protocol": Param(
            "random", type="string", enum=["random", "temporal"], description="Evaluation split"
        ),
        "ranker_epochs": Param(30, type="integer", minimum=1, maximum=200),
        "max_rmse": Param(
            1.0,
            type="number",
            exclusiveMinimum=0,
            maximum=5,
            description="Ranker gate: test RMSE ceiling",
        ),
        "variants": Param(
            ["prune_50", "int8_tables", "distill_d32_int8", "ptq_int8"],
            type="array",
            items={"type": "string", "enum": VARIANTS},
            minItems=1,
            maxItems=13,
            uniqueItems=True,
            description="Compression variants to search",
        ),
        "fine_tune_epochs": Param(1, type="integer", minimum=1, maximum=20),
        "quality_budget": Param(
            0.01,
            type="number",
            minimum=0,
            maximum=1,
            description="Max relative NDCG@10 loss of the pruned model",
        ),
        "min_recall_at_10": Param(0.05, type="number", minimum=0, maximum=1),
        "min_ndcg_at_10": Param(0.05, type="number", minimum=0, maximum=1),
        "max_relative_drop": Param(
            0.02, type="number", minimum=0, maximum=1, description="Max relative drop vs champion"
        ),
        "seed": Param(42, type="integer", minimum=0, maximum=2**31 - 1),
    },
    tags=["recops", "recsys"],
    doc_md=__doc__,
)
def recsys_nightly():
    @task
    def validate(data_interval_start=None, data_interval_end=None, params=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from recops.params import ParamError
        from recops.pipeline import validate_step
        from recops.validation import DataValidationError

        try:  # bad data or Params stay bad on retry: fail at once; late data is retried
            return validate_step(data_interval_start, data_interval_end, dict(params))
        except (DataValidationError, ParamError) as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def features(validation: dict, data_interval_start=None, data_interval_end=None) -> dict:
        from recops.pipeline import features_step

        return features_step(data_interval_start, data_interval_end)

    @task(queue=GPU_QUEUE)
    def train(feats: dict, data_interval_start=None, params=None) -> dict:
        from recops.pipeline import train_step

        return train_step(data_interval_start, feats, dict(params))

    @task(queue=GPU_QUEUE)
    def rank(feats: dict, trained: dict, params=None) -> dict:
        from recops.pipeline import rank_step

        return rank_step(feats, trained, dict(params))

    @task
    def variants(params=None) -> list:
        from recops.pipeline import variant_names

        return variant_names(dict(params))

    @task(queue=GPU_QUEUE)
    def compress(variant: str, feats: dict, trained: dict, params=None) -> dict:
        from recops.pipeline import variant_step

        return variant_step(feats, trained, variant, dict(params))

    @task
    def select(trained: dict, feats: dict, built: list, params=None) -> dict:
        from recops.pipeline import select_step

        return select_step(trained, feats, list(built), dict(params))

    @task
    def evaluate(feats: dict, trained: dict, selection: dict, ranked: dict) -> dict:
        from recops.pipeline import evaluate_step

        return evaluate_step(feats, trained, selection, ranked)

    @task
    def register(
        validation: dict,
        feats: dict,
        trained: dict,
        selection: dict,
        evaluation: dict,
        ranked: dict,
        params=None,
        dag_run=None,
    ) -> dict:
        from recops.pipeline import register_step

        run = {
            "dag_id": dag_run.dag_id,
            "run_id": dag_run.run_id,
            "data_interval_start": str(dag_run.data_interval_start),
            "data_interval_end": str(dag_run.data_interval_end),
        }
        return register_step(
            run, validation, feats, trained, selection, evaluation, ranked, dict(params)
        )

    @task
    def report(
        registered: dict, feats: dict, trained: dict, evaluation: dict, ranked: dict, dag_run=None
    ) -> dict:
        from recops.pipeline import report_step

        return report_step(
            {"dag_id": dag_run.dag_id, "run_id": dag_run.run_id},
            registered,
            feats,
            trained,
            evaluation,
            ranked,
        )

    @task(outlets=[BLESSED])
    def announce(registered: dict, outlet_events=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from recops.pipeline import announcement

        if (extra := announcement(registered, dag_run.run_id)) is None:
            raise AirflowSkipException(
                "the gate did not bless the candidate: nothing to promote (reasons are on the version)"
            )
        outlet_events[BLESSED].extra = extra
        return extra

    validation = validate()
    feats = features(validation)
    trained = train(feats)
    ranked = rank(feats, trained)
    built = compress.partial(feats=feats, trained=trained).expand(variant=variants())
    selection = select(trained, feats, built)
    evaluation = evaluate(feats, trained, selection, ranked)
    registered = register(validation, feats, trained, selection, evaluation, ranked)
    announce(registered)
    report(registered, feats, trained, evaluation, ranked)


recsys_nightly()
