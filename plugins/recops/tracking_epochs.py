"""Live per-epoch metrics: a tf_keras callback that logs each epoch to the task's MLflow run.

A leaf (``recops.config`` only), so the training code (two-tower, ranker, compression
fine-tuning, MultiWorker workers) can add the callback without importing the tracking
glue. The run to log to travels in the environment, which is how a MultiWorker worker
(a subprocess) learns it too:

- ``RECOPS_MLFLOW_RUN_ID``: the task's nested MLflow run (set by ``recops.tracking``
  while a task runs, and passed on to the workers it launches);
- ``RECOPS_MLFLOW_TRACKING_URI``: the tracking server that run lives on.

With no run id in the environment (a test, the CLI, a replay) ``epoch_logger`` returns
None and nothing is logged. Only the chief logs: MultiWorker workers see the same epochs.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

__all__ = ["RUN_ID_ENV", "TRACKING_URI_ENV", "epoch_logger", "tracked_run_id"]

RUN_ID_ENV = "RECOPS_MLFLOW_RUN_ID"
TRACKING_URI_ENV = "RECOPS_MLFLOW_TRACKING_URI"

log = logging.getLogger(__name__)


def tracked_run_id() -> tuple[str, str] | None:
    """``(run_id, tracking_uri)`` of the task's MLflow run, or None outside a tracked task."""
    run_id = os.environ.get(RUN_ID_ENV, "").strip()
    uri = os.environ.get(TRACKING_URI_ENV, "").strip()
    if not run_id or not uri:
        return None
    return run_id, uri


def epoch_logger(prefix: str, *, chief: bool = True) -> Any:
    """A tf_keras callback logging every epoch's ``logs`` as ``<prefix><key>`` at step = epoch.

    Args:
        prefix: Metric name prefix (``train.`` gives ``train.loss``,
            ``train.valid_ndcg_at_10``...).
        chief: False on a MultiWorker worker that is not the chief: no callback.

    Returns:
        The callback, or None when no tracked run is active or this is not the chief.
        A logging failure is reported once in the task log and never stops training.
    """
    target = tracked_run_id()
    if target is None or not chief:
        return None
    from recops_models.tf_env import use_legacy_keras

    use_legacy_keras()
    import tf_keras
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    run_id, uri = target
    client = MlflowClient(tracking_uri=uri)

    class EpochLogger(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.failed = False

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self.failed:
                return
            now = int(time.time() * 1000)
            metrics = [
                Metric(key=f"{prefix}{key}", value=float(value), timestamp=now, step=int(epoch))
                for key, value in sorted((logs or {}).items())
                if isinstance(value, int | float) and math.isfinite(float(value))
            ]
            if not metrics:
                return
            try:
                client.log_batch(run_id, metrics=metrics)
            except Exception as exc:  # curves are for people; training must go on
                self.failed = True
                log.warning("per-epoch metrics not logged to run %s: %s", run_id, exc)

    return EpochLogger()
