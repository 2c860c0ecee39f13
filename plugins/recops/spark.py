"""The Spark engine's session: one per process, configured from the settings.

``RECOPS_ENGINE=spark`` runs the set-based work (rolling features, validation, Feast's
offline store) on Spark. ``spark_session`` is the one place a session is made, so every
stage gets the same conf: UTC session time (snapshots are stamped at UTC midnights), few
shuffle partitions on a local master (the default 200 costs more than the work on two
cores) and no web UI locally (it binds a port, and tests run side by side).

PySpark is optional (``make install-spark``) and imported inside the function only, so
this module is light to import.
"""

from __future__ import annotations

import shutil
import threading
from typing import TYPE_CHECKING

from recops.errors import PermanentError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from recops.config import Settings

__all__ = [
    "APP_NAME",
    "DRIVER_MEMORY",
    "LOCAL_SHUFFLE_PARTITIONS",
    "SparkUnavailableError",
    "spark_conf",
    "spark_session",
]

#: The application name Spark's master and UI list.
APP_NAME = "recops"
#: Shuffle partitions on a ``local[N]`` master (a cluster keeps Spark's default).
LOCAL_SHUFFLE_PARTITIONS = 4
#: The driver's heap (an Airflow task). It collects the joined training slices and, on a
#: ``local[N]`` master, is the executor too: Spark's default 1 GB ran out of heap in the
#: features stage at 5M events.
DRIVER_MEMORY = "4g"

_LOCK = threading.Lock()
_SESSIONS: dict[str, SparkSession] = {}


class SparkUnavailableError(PermanentError, RuntimeError):
    """The Spark engine cannot start: PySpark or Java is missing, or the master is wrong."""


def spark_conf(master: str) -> dict[str, str]:
    """The conf every recops session gets on ``master``.

    Args:
        master: ``local[N]`` or a cluster URL such as ``spark://host:7077``.

    Returns:
        Spark conf keys and values (Feast's ``feature_store.spark.yaml`` repeats them).
    """
    conf = {
        "spark.master": master,
        "spark.app.name": APP_NAME,
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": DRIVER_MEMORY,
    }
    if master.startswith("local"):
        conf["spark.sql.shuffle.partitions"] = str(LOCAL_SHUFFLE_PARTITIONS)
        conf["spark.ui.enabled"] = "false"
    return conf


def spark_session(settings: Settings) -> SparkSession:
    """The process's Spark session on ``settings.spark_master`` (made once, then reused).

    Args:
        settings: Deployment settings; only ``spark_master`` is read.

    Returns:
        An active ``SparkSession`` with the recops conf.

    Raises:
        SparkUnavailableError: PySpark is not installed, Java is not found, or the session
            cannot start on the master (the message names it).
    """
    master = settings.spark_master
    with _LOCK:
        cached = _SESSIONS.get(master)
        # A session stopped elsewhere (a test, Feast) cannot be reused.
        if cached is not None and cached.sparkContext._jsc is not None:
            return cached
        try:
            from pyspark.sql import SparkSession
        except ImportError as exc:
            raise SparkUnavailableError(
                f"RECOPS_ENGINE=spark needs PySpark, which is not installed ({exc})\n"
                "hint: RECOPS_ENGINE=spark needs `make install-spark` "
                "(or unset RECOPS_ENGINE for the embedded DuckDB engine)"
            ) from exc
        import os

        java_home = os.environ.get("JAVA_HOME", "")
        if not shutil.which("java") and not (
            java_home and os.path.exists(os.path.join(java_home, "bin", "java"))
        ):
            raise SparkUnavailableError(
                "RECOPS_ENGINE=spark needs Java 17, and no `java` is on PATH or in JAVA_HOME\n"
                "hint: install a JDK 17 (apt-get install openjdk-17-jre-headless) or set "
                "JAVA_HOME"
            )
        builder = SparkSession.builder
        for key, value in spark_conf(master).items():
            builder = builder.config(key, value)
        try:
            session = builder.getOrCreate()
        except Exception as exc:
            # Py4J and Spark raise many types here (a bad master URL is an
            # IllegalArgumentException from the JVM): one clear error names the setting.
            raise SparkUnavailableError(
                f"cannot start a Spark session on master {master!r}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}\n"
                "hint: set RECOPS_SPARK_MASTER to local[N] or spark://HOST:7077"
            ) from exc
        # Spark's INFO lines would flood Airflow task logs.
        session.sparkContext.setLogLevel("WARN")
        _SESSIONS[master] = session
        return session
