"""What the DAG files share, declared once: Params, retry policy, Assets, pool, queue.

DAG files import this module at parse time, so it stays light: Airflow's task SDK,
pendulum, and recops' own light modules (``params``, ``config``). The deployment settings
it reads (``RECOPS_RETRY_DELAY_SECONDS``, ``RECOPS_GPU_QUEUE``, the model names) come from
the environment with embedded defaults, like every other deployment setting.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import Asset, AssetWatcher

from recops.config import PROMOTION_POOL, Settings
from recops.params import NIGHTLY, REPLAY, dag_params, promote_knobs

__all__ = [
    "BLESSED",
    "PROMOTION_POOL",
    "champion_moved",
    "default_args",
    "gpu_queue",
    "nightly_params",
    "promote_params",
    "replay_params",
]

#: Emitted by the nightly when the gate blesses a candidate; schedules ``recsys_promote``.
BLESSED = Asset(name="recops_blessed", uri="recops://registry/blessed")


def default_args() -> dict[str, Any]:
    """Retry policy of every recops task: two retries with exponential backoff.

    Only transient failures reach a retry: task bodies run inside ``recops.errors.fail_fast``,
    which fails permanent ones at once. A task that fails for good closes its MLflow runs
    (``recops.tracking.failure_callback``).
    ``RECOPS_RETRY_DELAY_SECONDS`` (default 30) is the first delay; tests shorten it.
    """
    from recops.tracking import failure_callback

    delay = int(os.environ.get("RECOPS_RETRY_DELAY_SECONDS") or 30)
    return {
        "retries": 2,
        "retry_delay": pendulum.duration(seconds=delay),
        "retry_exponential_backoff": True,
        # Closes the MLflow runs of a task that died without raising (timeout, OOM kill).
        "on_failure_callback": failure_callback,
    }


def gpu_queue() -> str:
    """The Celery queue of the tasks that train (``RECOPS_GPU_QUEUE``, default ``gpu``).

    GPU workers serve it in the scale profile; the embedded executor ignores queues.
    """
    return os.environ.get("RECOPS_GPU_QUEUE") or "gpu"


def nightly_params() -> dict[str, Any]:
    """``recsys_nightly``'s Params, from ``recops.params.NIGHTLY``.

    The ``dataset`` field offers the datasets present (shipped specs and imported ones)
    and defaults to the deployment's (``RECOPS_DATASET``).
    """
    from recops.layout import known_datasets

    settings = Settings.from_env()
    return dag_params(
        NIGHTLY,
        choices={"dataset": known_datasets(settings)},
        overrides={"dataset": settings.dataset},
    )


def promote_params() -> dict[str, Any]:
    """``recsys_promote``'s Params; the model choice is the deployment's model names.

    The version field names the registered versions (their aliases, and which need
    ``force``) from ``recops.version_snapshot``'s file: parsing reads that file, never
    MLflow.
    """
    from recops.layout import all_promotable_models
    from recops.version_snapshot import describe, read

    settings = Settings.from_env()
    models = all_promotable_models(settings)
    return dag_params(promote_knobs(models), notes={"version": describe(read(settings), models)})


def replay_params() -> dict[str, Any]:
    """``recsys_replay``'s Params, from ``recops.params.REPLAY``."""
    return dag_params(REPLAY)


def champion_moved() -> Asset:
    """The asset a registry watcher updates when ``champion`` moves in MLflow.

    The watched model is the deployment's retrieval model (``RECOPS_MODEL_NAME``).
    """
    from recops.airflow_plugin import ChampionAliasTrigger

    model = Settings.from_env().model_name
    return Asset(
        name="recops_champion_alias",
        uri=f"recops://registry/{model}/champion",
        watchers=[
            AssetWatcher(
                name="mlflow_champion_alias", trigger=ChampionAliasTrigger(model_name=model)
            )
        ],
    )
