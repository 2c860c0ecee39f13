"""
### recsys_nightly

Nightly retrain of the two-stage recommender, one run per day of data of one dataset
(the `dataset` Param: a spec in `datasets/` or one imported with `recops data import`):

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

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task
from recops.wiring import BLESSED, default_args, gpu_queue, nightly_params


@dag(
    # A real [day, next day) interval; plain "@daily" in Airflow 3 gives zero-length ones.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(1997, 9, 20, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params=nightly_params(),
    tags=["recops", "recsys"],
    doc_md=__doc__,
)
def recsys_nightly():
    @task
    def validate(data_interval_start=None, data_interval_end=None, params=None) -> dict:
        from recops.errors import fail_fast
        from recops.pipeline import validate_step

        with fail_fast():  # bad data or Params fail at once; late data is retried
            return validate_step(data_interval_start, data_interval_end, dict(params))

    @task
    def features(
        validation: dict, data_interval_start=None, data_interval_end=None, params=None
    ) -> dict:
        from recops.errors import fail_fast
        from recops.pipeline import features_step

        with fail_fast():
            return features_step(data_interval_start, data_interval_end, dict(params))

    @task(queue=gpu_queue())
    def train(feats: dict, data_interval_start=None, params=None) -> dict:
        from recops.errors import fail_fast
        from recops.pipeline import train_step

        with fail_fast():
            return train_step(data_interval_start, feats, dict(params))

    @task(queue=gpu_queue())
    def rank(feats: dict, trained: dict, params=None) -> dict:
        from recops.errors import fail_fast
        from recops.pipeline import rank_step

        with fail_fast():
            return rank_step(feats, trained, dict(params))

    @task
    def variants(params=None) -> list:
        from recops.errors import fail_fast
        from recops.pipeline import variant_names

        with fail_fast():
            return variant_names(dict(params))

    @task(queue=gpu_queue())
    def compress(variant: str, feats: dict, trained: dict, params=None) -> dict:
        from recops.errors import fail_fast
        from recops.pipeline import variant_step

        with fail_fast():
            return variant_step(feats, trained, variant, dict(params))

    @task
    def select(trained: dict, feats: dict, built: list, params=None) -> dict:
        from recops.errors import fail_fast
        from recops.pipeline import select_step

        with fail_fast():
            return select_step(trained, feats, list(built), dict(params))

    @task
    def evaluate(feats: dict, trained: dict, selection: dict, ranked: dict) -> dict:
        from recops.errors import fail_fast
        from recops.pipeline import evaluate_step

        with fail_fast():
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
        from recops.errors import fail_fast
        from recops.pipeline import register_step, run_ref

        with fail_fast():
            run = run_ref(dag_run)
            return register_step(
                run, validation, feats, trained, selection, evaluation, ranked, dict(params)
            )

    @task
    def report(
        registered: dict, feats: dict, trained: dict, evaluation: dict, ranked: dict, dag_run=None
    ) -> dict:
        from recops.errors import fail_fast
        from recops.pipeline import report_step, run_ref

        with fail_fast():
            return report_step(run_ref(dag_run), registered, feats, trained, evaluation, ranked)

    @task(outlets=[BLESSED])
    def announce(registered: dict, outlet_events=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from recops.pipeline import announcement

        if (extra := announcement(registered, dag_run.run_id)) is None:
            raise AirflowSkipException(
                "not blessed by the gate: nothing to promote (see its reasons)"
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
