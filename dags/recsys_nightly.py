"""
### recsys_nightly

Nightly retrain of the two-stage recommender, one run per day of data of one dataset
(the `dataset` Param: a spec in `datasets/` or one imported with `recops data import`):

`wait_for_data` → `validate` → `features` → `train` → (`rank`, `compress` × variants → `select`) →
`evaluate` → `register` → `announce`

- **wait_for_data**: a sensor in reschedule mode: waits for the day's data (staged,
  published, or live events from `recops feed`) until an hour after the interval's end
  (`RECOPS_LATE_DATA_WAIT_S`), then skips the run with a message saying what it looked
  for, so an unpaused nightly without a fed day is skipped, not failed.
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
- **register**: model versions of both models, with signature and lineage, linked to
  the `train` / `rank` runs nested in this DAG run's MLflow run (one MLflow run per DAG
  run, one nested run per task, live per-epoch metrics); gated against the champion;
  alias `challenger`.
- **report**: one self-contained HTML run report (validation, features, training curves,
  metrics vs champion, compression, gate, rollout), logged to MLflow and opened from
  the DAG run's "Run report" tab.
- **announce**: emits the `recops_blessed` asset when the gate blessed the candidate;
  `recsys_promote` then canary-rolls it out to TF Serving.

All logic lives in the `recops` package; this file only wires tasks. Each task ends its
log with one `<stage> done: ...` line of its key figures (`recops.airflow_logging`).
Outputs are keyed on the data interval and the config, so clearing and re-running a day
converges on the same result.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task
from recops.arrival import LATE_DATA_POKE_S
from recops.wiring import BLESSED, default_args, gpu_queue, nightly_params


@dag(
    # A real [day, next day) interval; plain "@daily" in Airflow 3 gives zero-length ones.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(1997, 9, 20, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # The summary line ends each task log, not the whole returned dict (it is in XCom).
    default_args={**default_args(), "show_return_value_in_logs": False},
    params=nightly_params(),
    tags=["recops", "recsys"],
    doc_md=__doc__,
)
def recsys_nightly():
    # Reschedule mode frees the worker between pokes; the timeout is only a backstop, as
    # poke_arrival skips the run once its late-data wait is over.
    @task.sensor(poke_interval=LATE_DATA_POKE_S, timeout=7 * 24 * 3600, mode="reschedule")
    def wait_for_data(data_interval_start=None, data_interval_end=None, params=None) -> bool:
        from recops.arrival import poke_arrival
        from recops.errors import fail_fast

        with fail_fast():  # bad Params fail at once; no data by the deadline skips the run
            return poke_arrival(data_interval_start, data_interval_end, dict(params))

    @task
    def validate(data_interval_start=None, data_interval_end=None, params=None) -> dict:
        from recops.airflow_logging import run_stage
        from recops.pipeline import validate_step

        # Bad data or Params fail at once; late data is retried.
        args = (data_interval_start, data_interval_end, dict(params))
        return run_stage("validate", validate_step, *args)

    @task
    def features(
        validation: dict, data_interval_start=None, data_interval_end=None, params=None
    ) -> dict:
        from recops.airflow_logging import run_stage
        from recops.pipeline import features_step

        args = (data_interval_start, data_interval_end, dict(params))
        return run_stage("features", features_step, *args)

    @task(queue=gpu_queue())
    def train(feats: dict, data_interval_start=None, params=None) -> dict:
        from recops.airflow_logging import run_stage
        from recops.pipeline import train_step

        return run_stage("train", train_step, data_interval_start, feats, dict(params))

    @task(queue=gpu_queue())
    def rank(feats: dict, trained: dict, params=None) -> dict:
        from recops.airflow_logging import run_stage
        from recops.pipeline import rank_step

        return run_stage("rank", rank_step, feats, trained, dict(params))

    @task
    def variants(params=None) -> list:
        from recops.airflow_logging import run_stage
        from recops.pipeline import variant_names

        return run_stage("variants", variant_names, dict(params))

    # A mapped task takes only BaseOperator arguments from default_args: named here.
    @task(queue=gpu_queue(), show_return_value_in_logs=False)
    def compress(variant: str, feats: dict, trained: dict, params=None) -> dict:
        from recops.airflow_logging import run_stage
        from recops.pipeline import variant_step

        return run_stage(f"compress {variant}", variant_step, feats, trained, variant, dict(params))

    @task
    def select(trained: dict, feats: dict, built: list, params=None) -> dict:
        from recops.airflow_logging import run_stage
        from recops.pipeline import select_step

        # One slice read: iterating probes one past the end, which Airflow logs as an error.
        return run_stage("select", select_step, trained, feats, list(built[:]), dict(params))

    @task
    def evaluate(feats: dict, trained: dict, selection: dict, ranked: dict) -> dict:
        from recops.airflow_logging import run_stage
        from recops.pipeline import evaluate_step

        return run_stage("evaluate", evaluate_step, feats, trained, selection, ranked)

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
        from recops.airflow_logging import run_stage
        from recops.pipeline import register_step, run_ref

        args = (validation, feats, trained, selection, evaluation, ranked, dict(params))
        return run_stage("register", register_step, run_ref(dag_run), *args)

    @task
    def report(
        registered: dict,
        feats: dict,
        trained: dict,
        evaluation: dict,
        ranked: dict,
        validation: dict,
        selection: dict,
        dag_run=None,
    ) -> dict:
        from recops.airflow_logging import run_stage
        from recops.pipeline import report_step, run_ref

        args = (registered, feats, trained, evaluation, ranked, validation, selection)
        return run_stage("report", report_step, run_ref(dag_run), *args)

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
    names = variants()
    wait_for_data() >> [validation, names]
    feats = features(validation)
    trained = train(feats)
    ranked = rank(feats, trained)
    built = compress.partial(feats=feats, trained=trained).expand(variant=names)
    selection = select(trained, feats, built)
    evaluation = evaluate(feats, trained, selection, ranked)
    registered = register(validation, feats, trained, selection, evaluation, ranked)
    announce(registered)
    report(registered, feats, trained, evaluation, ranked, validation, selection)


recsys_nightly()
