"""Where training runs: the tf.distribute strategy, seeding, and this process's role.

``select_strategy`` picks (and caches per process) MultiWorkerMirroredStrategy under
``TF_CONFIG``, MirroredStrategy over GPUs, or MirroredStrategy over logical CPU devices.
``is_chief`` and ``worker_name`` read this process's role from ``TF_CONFIG``. TensorFlow
is imported inside the functions.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from recops_models.tf_env import tensorflow, use_legacy_keras

__all__ = ["is_chief", "seed_everything", "select_strategy", "worker_name"]

log = logging.getLogger(__name__)


#: One strategy per device set and process. A second MirroredStrategy restarts collective
#: instance keys and can collide with the first one's cached collectives (TF #62790).
_STRATEGIES: dict[tuple[str, ...], Any] = {}


def select_strategy(replicas: int) -> tuple[Any, str, int]:
    """Pick the distribution strategy for this process.

    - ``TF_CONFIG`` set: ``MultiWorkerMirroredStrategy`` (it must be the first TF call
      of the process, as TensorFlow requires).
    - GPUs visible: ``MirroredStrategy`` over all of them.
    - Otherwise ``MirroredStrategy`` over ``replicas`` logical CPU devices, reducing
      through host memory. Logical devices can only be configured before the TF runtime
      starts; if it already has (a second call in the same process), the logical CPUs
      that exist are reused, up to ``replicas``.

    Strategies are cached per process, so train and compress in one process (``airflow
    dags test``, pytest) share one.

    Args:
        replicas: Logical CPU devices wanted when there is no GPU.

    Returns:
        ``(strategy, strategy class name, replicas in sync)``.
    """
    tf = tensorflow()

    if os.environ.get("TF_CONFIG"):
        key: tuple[str, ...] = ("multi_worker",)
        if key not in _STRATEGIES:
            _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy()
    elif tf.config.list_physical_devices("GPU"):
        key = ("gpu",)
        if key not in _STRATEGIES:
            _STRATEGIES[key] = tf.distribute.MirroredStrategy()
    else:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
            )
        except RuntimeError:
            log.info("TF runtime already initialised; reusing its logical CPU devices")
        key = tuple(d.name for d in tf.config.list_logical_devices("CPU"))[:replicas]
        if key not in _STRATEGIES:
            _STRATEGIES[key] = tf.distribute.MirroredStrategy(
                devices=list(key), cross_device_ops=tf.distribute.ReductionToOneDevice()
            )
    strategy = _STRATEGIES[key]
    # tf.distribute.MultiWorkerMirroredStrategy is CollectiveAllReduceStrategy inside.
    name = "MultiWorkerMirroredStrategy" if key == ("multi_worker",) else type(strategy).__name__
    return strategy, name, int(strategy.num_replicas_in_sync)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TF, and ask TF for deterministic kernels."""
    use_legacy_keras()
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    tf = tensorflow()

    tf.config.experimental.enable_op_determinism()


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a non-chief worker."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    tf_config = json.loads(raw)
    task = tf_config.get("task", {})
    cluster = tf_config.get("cluster", {})
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster


def worker_name() -> str:
    """This process's role in ``TF_CONFIG`` as ``<type><index>`` (``worker0`` without it)."""
    raw = os.environ.get("TF_CONFIG")
    task = json.loads(raw).get("task", {}) if raw else {}
    return f"{task.get('type', 'worker')}{task.get('index', 0)}"
