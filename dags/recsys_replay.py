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

import pendulum
from airflow.sdk import dag, task
from recops.wiring import default_args, replay_params


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # The summary line ends the task log, not the whole returned dict (it is in XCom).
    default_args={**default_args(), "show_return_value_in_logs": False},
    params=replay_params(),
    tags=["recops", "recsys"],
    doc_md=__doc__,
)
def recsys_replay():
    @task
    def replay(params=None) -> dict:
        from recops.airflow_logging import run_stage
        from recops.pipeline_promote import replay_step

        # A version that did not reproduce fails the same way again: no retry.
        return run_stage("replay", replay_step, dict(params))

    replay()


recsys_replay()
