"""
### recsys_replay

Reproduce a registered model version from its lineage: trigger with
`replay_model_version=N`.

The version's `lineage.json` names its data interval, the published partitions (by
sha256), the feature services and the training set's hash, the run's Params and the
compression variant. `replay` checks the partitions are unchanged, rebuilds the
point-in-time training set (its hash must match), retrains with the same Params into a
fresh folder, re-applies the compression variant and scores it on the same split. The
run fails if a metric differs from the recorded one by more than `tolerance`; either way
an MLflow run tagged `recops.replay_of` records the comparison.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag, task

# Deployment setting: seconds before the first retry (backoff doubles it); tests shorten it.
RETRY_DELAY = pendulum.duration(seconds=int(os.environ.get("RECOPS_RETRY_DELAY_SECONDS") or 30))


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": RETRY_DELAY, "retry_exponential_backoff": True},
    params={
        "replay_model_version": Param(
            1,
            type="integer",
            minimum=1,
            maximum=2**31 - 1,
            description="Registered version to replay",
        ),
        "tolerance": Param(
            0.01,
            type="number",
            minimum=0,
            maximum=1,
            description="Largest absolute metric difference",
        ),
    },
    tags=["recops", "recsys"],
    doc_md=__doc__,
)
def recsys_replay():
    @task
    def replay(params=None) -> dict:
        from recops.pipeline import replay_step

        return replay_step(dict(params))

    replay()


recsys_replay()
