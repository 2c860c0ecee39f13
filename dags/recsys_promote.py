"""
### recsys_promote

Serves a registered model version behind TF Serving's `stable` label, safely. Three ways in:

- **nightly**: `recsys_nightly` emits the `recops_blessed` asset when the gate blesses a
  candidate; this DAG then rolls out the versions it names;
- **UI trigger**: Params pick the model and a version or alias (`action=rollback` moves
  `stable` back instead), `force` serves a version the gate did not bless; a retriever
  brings the ranker trained on its candidates (one recommender version), forward and back;
- **registry**: moving alias `champion` in the MLflow UI or API is noticed by an asset
  watcher polling the registry, and the roll-out starts within about a minute.

`resolve` → `promote`: the version is copied to the TF Serving base path with warmup
requests, loaded beside the current one, labelled `canary`, validated under load (p99
SLO, zero errors, prediction parity with offline scores), and only then labelled
`stable`. The score PSI and top-k overlap against `stable` are reported, and reject the
canary past the `max_score_psi` / `min_top_overlap` Params when set. A failed canary
restores the serving config and labels and moves `champion` back to the version still
serving. Every alias move goes to the ledger (`recops history`).
Runs are serialized: one active run, the 1-slot `recops_promotion` pool, and a lock per
model.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task
from recops.wiring import BLESSED, PROMOTION_POOL, champion_moved, default_args, promote_params


@dag(
    schedule=(BLESSED | champion_moved()),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # A refused or failed canary fails at once (no retry: the same version would fail the
    # same way); retries cover infrastructure errors only. The summary line ends each task
    # log, not the whole returned list (it is in XCom).
    default_args={**default_args(), "show_return_value_in_logs": False},
    params=promote_params(),
    tags=["recops", "recsys"],
    doc_md=__doc__,
)
def recsys_promote():
    @task
    def resolve(params=None, triggering_asset_events=None) -> list:
        from recops.airflow_logging import run_stage
        from recops.pipeline_promote import promotion_requests

        events = {
            str(a): [e.extra for e in evs] for a, evs in (triggering_asset_events or {}).items()
        }
        return run_stage("resolve", promotion_requests, dict(params), events)

    # One slot: promotions run one at a time across runs and DAGs; recops.ledger's lock
    # also covers the CLI. `recops ui` and the compose init create the pool.
    @task(pool=PROMOTION_POOL)
    def promote(requests: list) -> list:
        from recops.airflow_logging import run_stage
        from recops.pipeline_promote import promote_step

        return run_stage("promote", promote_step, requests)

    promote(resolve())


recsys_promote()
