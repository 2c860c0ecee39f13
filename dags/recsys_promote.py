"""
### recsys_promote

Serves a registered model version behind TF Serving's `stable` label, safely. Three ways in:

- **nightly**: `recsys_nightly` emits the `recops_blessed` asset when the gate blesses a
  candidate; this DAG then rolls out the versions it names;
- **UI trigger**: Params pick the model and a version or alias (`action=rollback` moves
  `stable` back instead), `force` serves a version the gate did not bless;
- **registry**: moving alias `champion` in the MLflow UI or API is noticed by an asset
  watcher polling the registry, and the roll-out starts within about a minute.

`resolve` → `promote`: the version is copied to the TF Serving base path with warmup
requests, loaded beside the current one, labelled `canary`, validated under load (p99
SLO, zero errors, prediction parity with offline scores), and only then labelled
`stable`. A failed canary restores the serving config and labels and moves `champion`
back to the version still serving. Every alias move goes to the ledger (`recops history`).
Runs are serialized: one active run, the 1-slot `recops_promotion` pool, and a lock per
model.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Asset, AssetWatcher, Param, dag, task
from recops.airflow_plugin import ChampionAliasTrigger

# Deployment setting: seconds before the first retry (backoff doubles it); tests shorten it.
RETRY_DELAY = pendulum.duration(seconds=int(os.environ.get("RECOPS_RETRY_DELAY_SECONDS") or 30))

PROMOTION_POOL = "recops_promotion"
BLESSED = Asset(name="recops_blessed", uri="recops://registry/blessed")
CHAMPION_MOVED = Asset(
    name="recops_champion_alias",
    uri="recops://registry/recops_retrieval/champion",
    watchers=[
        AssetWatcher(
            name="mlflow_champion_alias",
            trigger=ChampionAliasTrigger(model_name="recops_retrieval"),
        )
    ],
)


@dag(
    schedule=(BLESSED | CHAMPION_MOVED),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # A refused or failed canary fails at once (no retry: the same version would fail the
    # same way); retries cover infrastructure errors only.
    default_args={"retries": 2, "retry_delay": RETRY_DELAY, "retry_exponential_backoff": True},
    params={
        "model_name": Param(
            "recops_retrieval", type="string", enum=["recops_retrieval", "recops_ranking"]
        ),
        "version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=2**31 - 1,
            description="Version to serve; empty resolves the alias",
        ),
        "alias": Param(
            "champion", type="string", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$(?!\n)", maxLength=64
        ),
        "action": Param("promote", type="string", enum=["promote", "rollback"]),
        "force": Param(False, type="boolean", description="Serve a version the gate did not bless"),
        # Free text, but no control characters; it only reaches the ledger and MLflow text.
        "reason": Param(
            "",
            type="string",
            maxLength=500,
            pattern=r"^[^\x00-\x1f\x7f-\x9f]*$(?!\n)",
            description="Why, for the audit ledger",
        ),
    },
    tags=["recops", "recsys"],
    doc_md=__doc__,
)
def recsys_promote():
    @task
    def resolve(params=None, triggering_asset_events=None) -> list:
        from recops.pipeline import promotion_requests

        events = {
            str(asset): [e.extra for e in evs]
            for asset, evs in (triggering_asset_events or {}).items()
        }
        return promotion_requests(dict(params), events)

    # One slot: promotions run one at a time across runs and DAGs; recops.ledger's lock
    # also covers the CLI. `recops ui` and the compose init create the pool.
    @task(pool=PROMOTION_POOL)
    def promote(requests: list) -> list:
        from airflow.sdk.exceptions import AirflowFailException
        from recops.pipeline import promote_step
        from recops.promotion import PromotionError

        try:
            return promote_step(requests)
        except PromotionError as exc:
            raise AirflowFailException(str(exc)) from exc

    promote(resolve())


recsys_promote()
