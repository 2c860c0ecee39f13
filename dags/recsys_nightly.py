"""
### recsys_nightly

Nightly retrain of the two-tower retrieval model, one run per day of data:

`validate` → `features` → `train` → `compress` → `evaluate` → `register` → `rollout`

- **validate**: Great Expectations suites on the interval's interactions partition; bad data
  fails the run (the failed expectations are named) and is copied to quarantine.
- **features**: `feast apply`, materialization to the online store, and a point-in-time
  correct training set from the `retrieval_v1` feature service.
- **train**: tf_keras two-tower under MirroredStrategy (GPUs, or logical CPU devices),
  resumable through BackupAndRestore.
- **compress**: TF-MOT magnitude pruning, stripped and exported as a SavedModel.
- **evaluate**: Recall@10 / NDCG@10, full ranking with train items masked; picks the pruned
  model when it stays within the quality budget.
- **register**: MLflow run + model version with signature and lineage; alias `challenger`,
  and `champion` when the gate blesses it.
- **rollout**: the champion is copied to the TF Serving base path, loaded through
  models.config, and smoke-tested.

All logic lives in the `recops` package; this file only wires tasks. Outputs are keyed on
the data interval, so clearing and re-running a day converges on the same result.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task


@dag(
    # A real [day, next day) interval; plain "@daily" in Airflow 3 gives zero-length ones.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(1997, 9, 20, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": pendulum.duration(seconds=30),
        "retry_exponential_backoff": True,
    },
    params={
        "epochs": Param(15, type="integer", minimum=1, maximum=200, description="Training epochs"),
        "embedding_dim": Param(64, type="integer", minimum=4, maximum=512),
        "batch_size": Param(1024, type="integer", minimum=16, maximum=65536),
        "learning_rate": Param(0.005, type="number", exclusiveMinimum=0, maximum=10),
        "temperature": Param(0.25, type="number", exclusiveMinimum=0, maximum=10, description="Softmax temperature"),
        "replicas": Param(2, type="integer", minimum=1, maximum=16, description="Logical CPU devices when no GPU"),
        "target_sparsity": Param(0.5, type="number", minimum=0, maximum=0.95),
        "fine_tune_epochs": Param(1, type="integer", minimum=1, maximum=20),
        "quality_budget": Param(0.01, type="number", minimum=0, maximum=1, description="Max relative NDCG@10 loss of the pruned model"),
        "min_recall_at_10": Param(0.05, type="number", minimum=0, maximum=1),
        "min_ndcg_at_10": Param(0.05, type="number", minimum=0, maximum=1),
        "max_relative_drop": Param(0.02, type="number", minimum=0, maximum=1, description="Max relative drop vs champion"),
        "seed": Param(42, type="integer", minimum=0, maximum=2**31 - 1),
    },
    tags=["recops", "recsys"],
    doc_md=__doc__,
)
def recsys_nightly():
    @task
    def validate(data_interval_start=None, data_interval_end=None) -> dict:
        from recops.pipeline import validate_step

        return validate_step(data_interval_start, data_interval_end)

    @task
    def features(validation: dict, data_interval_start=None, data_interval_end=None) -> dict:
        from recops.pipeline import features_step

        return features_step(data_interval_start, data_interval_end)

    @task
    def train(feats: dict, data_interval_start=None, params=None) -> dict:
        from recops.pipeline import train_step

        return train_step(data_interval_start, feats, dict(params))

    @task
    def compress(feats: dict, trained: dict, params=None) -> dict:
        from recops.pipeline import compress_step

        return compress_step(feats, trained, dict(params))

    @task
    def evaluate(feats: dict, trained: dict, compressed: dict, params=None) -> dict:
        from recops.pipeline import evaluate_step

        return evaluate_step(feats, trained, compressed, dict(params))

    @task
    def register(validation: dict, feats: dict, trained: dict, compressed: dict, evaluation: dict, params=None, dag_run=None) -> dict:
        from recops.pipeline import register_step

        run = {"dag_id": dag_run.dag_id, "run_id": dag_run.run_id, "data_interval_start": str(dag_run.data_interval_start), "data_interval_end": str(dag_run.data_interval_end)}
        return register_step(run, validation, feats, trained, compressed, evaluation, dict(params))

    @task
    def rollout(registered: dict, feats: dict) -> dict:
        from recops.pipeline import rollout_step

        return rollout_step(registered, feats)

    validation = validate()
    feats = features(validation)
    trained = train(feats)
    compressed = compress(feats, trained)
    evaluation = evaluate(feats, trained, compressed)
    registered = register(validation, feats, trained, compressed, evaluation)
    rollout(registered, feats)


recsys_nightly()
