"""
### recsys_nightly_datasets

The nightly for every other dataset: each day, one `recsys_nightly` run per imported
dataset (other than the deployment's own, `RECOPS_DATASET`, which `recsys_nightly`'s own
schedule runs) that has that day's data, with its `dataset` Param set.

- **plan**: lists the imported datasets with the interval's day staged or published.
- **trigger**: one mapped `TriggerDagRunOperator` per dataset. Runs are stamped a few
  seconds after the interval's end (Airflow keeps one run per DAG and logical date), so
  each gets the same daily data interval; the run id names the dataset.

Unpause it beside `recsys_nightly` when several datasets live under one `RECOPS_HOME`.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronDataIntervalTimetable, dag, task
from recops.wiring import default_args


@dag(
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(1997, 9, 20, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["recops", "recsys"],
    doc_md=__doc__,
)
def recsys_nightly_datasets():
    @task
    def plan(data_interval_start=None, data_interval_end=None) -> list:
        from recops.airflow_logging import run_stage
        from recops.pipeline import dataset_runs

        return run_stage("plan", dataset_runs, data_interval_start, data_interval_end)

    TriggerDagRunOperator.partial(
        task_id="trigger", trigger_dag_id="recsys_nightly", skip_when_already_exists=True
    ).expand_kwargs(plan())


recsys_nightly_datasets()
