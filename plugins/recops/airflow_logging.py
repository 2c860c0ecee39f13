"""Quiet, useful task logs: library noise filtered at the source, key figures at the end.

Three things made a nightly task log hard to read: about 200 lines of Great Expectations'
``Skipping registering function`` (INFO from ``great_expectations._docs_decorators``),
TensorFlow/CUDA warnings and MLflow progress bars (written to stderr, which Airflow's
supervisor logs as ERROR), and the one line people look for (the Data Docs path, the
metrics) buried in the middle. This module fixes each where it starts:

- ``QUIET_ENV``: environment for every Airflow process (``recops.config.airflow_env``
  merges it): per-logger levels through Airflow's own ``[logging] namespace_levels`` (the
  task SDK applies them inside every task process), ``LOGGING_CONFIG`` as the server
  components' ``logging_config_class`` (the same levels for the scheduler, DAG processor
  and API server), and the libraries' own switches: ``TF_CPP_MIN_LOG_LEVEL``,
  ``MLFLOW_LOGGING_LEVEL`` (MLflow resets its logger from it when imported),
  ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``, ``TQDM_DISABLE``, ``GRPC_VERBOSITY``.
- ``run_stage``: what a DAG task body calls. It runs the stage under ``fail_fast``, sends
  what Python code writes to ``sys.stderr`` (progress bars, warnings printed by hand) to
  a logger at INFO instead of Airflow's ERROR, and logs one summary line of the stage's
  key figures (``summary_line``) as the last line the stage writes.

Only the standard library is imported at module level; ``LOGGING_CONFIG`` is built from
Airflow's default the first time Airflow reads it, so this module is safe at DAG parse
time and in the CLI.
"""

from __future__ import annotations

import copy
import io
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = [  # noqa: F822  (LOGGING_CONFIG is built on first access, by __getattr__)
    "LOGGING_CONFIG",
    "QUIET_ENV",
    "QUIET_LEVELS",
    "StderrToLog",
    "logging_config",
    "run_stage",
    "stderr_to_log",
    "summary_line",
]

#: Loggers held above INFO, and why: each one's INFO lines are noise in a task log.
QUIET_LEVELS: dict[str, str] = {
    # "Skipping registering function ..." once per public function, ~200 lines per suite.
    "great_expectations": "WARNING",
    # Run/artifact chatter; the run's link is in the summary line and the extra links.
    "mlflow": "WARNING",
    "alembic": "WARNING",  # MLflow's SQLite migrations on first use
    "tensorflow": "ERROR",
    "absl": "ERROR",
    "h5py": "WARNING",
    "numexpr": "WARNING",
    "urllib3": "WARNING",
    "httpx": "WARNING",  # one INFO line per HTTP request (the Execution API's included)
}

#: Environment for every embedded Airflow process (deployment variables still win).
QUIET_ENV: dict[str, str] = {
    "AIRFLOW__LOGGING__NAMESPACE_LEVELS": " ".join(f"{k}={v}" for k, v in QUIET_LEVELS.items()),
    "AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS": "recops.airflow_logging.LOGGING_CONFIG",
    # TF's C++ logging writes straight to fd 2 (no Python hook can relabel it): 3 keeps
    # only FATAL; real failures still surface as Python exceptions.
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow sets its own logger's level (and a stderr handler) when imported, from this.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # Feast's materialization bars (tqdm honours it from 4.66).
    "TQDM_DISABLE": "1",
}

_DEFAULT_CONFIG = "airflow.config_templates.airflow_local_settings"
_LOG = logging.getLogger("recops.stage")
T = TypeVar("T")


def logging_config(base: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (a ``logging.config.dictConfig`` dict) with ``QUIET_LEVELS`` added.

    Loggers ``base`` already configures keep their handlers; only their level is raised.
    """
    config = copy.deepcopy(dict(base))
    loggers = config.setdefault("loggers", {})
    for name, level in QUIET_LEVELS.items():
        loggers.setdefault(name, {"propagate": True})["level"] = level
    return config


def __getattr__(name: str) -> Any:
    # Airflow imports ``LOGGING_CONFIG`` by its dotted path: built on that first access,
    # so importing this module never imports Airflow.
    if name == "LOGGING_CONFIG":
        import importlib

        default = importlib.import_module(_DEFAULT_CONFIG).DEFAULT_LOGGING_CONFIG
        value = logging_config(default)
        globals()["LOGGING_CONFIG"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class StderrToLog(io.TextIOBase):
    """A text stream that logs each complete line at INFO (progress-bar frames dropped).

    A bar redraws itself with ``\\r``; only the text after the last ``\\r`` of a line is
    kept, so a finished bar is logged once, not once per frame.
    """

    def __init__(self, logger: logging.Logger, fallback: Any = None) -> None:
        super().__init__()
        self._logger = logger
        self._fallback = fallback
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # A child process or a C library needs a real descriptor: the original stderr's.
        if self._fallback is None:
            raise io.UnsupportedOperation("fileno")
        return int(self._fallback.fileno())

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._emit(self._buffer)
            self._buffer = ""

    def _emit(self, line: str) -> None:
        text = line.rsplit("\r", 1)[-1].rstrip()
        if text:
            self._logger.info(text)


@contextmanager
def stderr_to_log(name: str = "recops.stderr") -> Iterator[StderrToLog]:
    """Send Python writes to ``sys.stderr`` to the logger ``name`` at INFO, for the block.

    Airflow logs a task's stderr as ERROR; what libraries print there is progress and
    advice, not failure (a failure raises, and Airflow logs the exception as an error).
    """
    saved = sys.stderr
    stream = StderrToLog(logging.getLogger(name), fallback=saved)
    sys.stderr = stream
    try:
        yield stream
    finally:
        stream.flush()
        sys.stderr = saved


_DIGEST = re.compile(r"^[0-9a-f]{32,}$")
#: Keys whose values are identities, not figures: left out of the summary.
_NOT_FIGURES = ("sha256", "hash", "fingerprint")


def _figure(key: str, value: Any) -> tuple[int, str] | None:
    """``(rank, text)`` of one value; lower ranks are shown first, None leaves it out."""
    if any(word in key for word in _NOT_FIGURES):
        return None
    if isinstance(value, str) and value:
        if "docs" in key:  # the human-readable Data Docs: first
            return 0, value
        if "report" in key:
            return 1, value
    if isinstance(value, bool):
        return 2, str(value).lower()
    if isinstance(value, int):
        return 2, str(value)
    if isinstance(value, float):
        return 2, f"{value:.4g}"
    if not isinstance(value, str) or not value or len(value) > 200 or "\n" in value:
        return None
    if _DIGEST.match(value):
        return None
    return (4, value) if "/" in value else (3, value)


def summary_line(stage: str, result: Any, *, limit: int = 16) -> str:
    """One line of a stage's key figures, ``key=value``, from the stage's result.

    The Data Docs path (``*docs*``) comes first, then report paths (``*report*``), numbers,
    names and other paths. Small nested dicts are flattened one level
    (``metrics.recall_at_10=0.21``); hashes, lists, long text and big nested dicts are
    left out (they are in the XCom).
    """
    figures: list[tuple[int, str, str]] = []
    if isinstance(result, Mapping):
        for key, value in result.items():
            if isinstance(value, Mapping):
                if len(value) > 12 or any(w in str(key) for w in _NOT_FIGURES):
                    continue
                for sub, inner in value.items():
                    name = f"{key}.{sub}"
                    if not isinstance(inner, Mapping) and (got := _figure(name, inner)):
                        figures.append((got[0], name, got[1]))
            elif got := _figure(str(key), value):
                figures.append((got[0], str(key), got[1]))
    elif isinstance(result, list):
        figures.append((2, "items", str(len(result))))
    elif got := _figure("result", result):
        figures.append((got[0], "result", got[1]))
    figures.sort(key=lambda f: f[0])  # stable: the result's own order within a rank
    more = len(figures) - limit
    text = " ".join(f"{k}={v}" for _, k, v in figures[:limit])
    return f"{stage} done: {text or '(no figures)'}" + (f" (+{more} more)" if more > 0 else "")


def run_stage(stage: str, fn: Callable[..., T], *args: Any) -> T:
    """Run one pipeline stage as a task body: fail fast, quiet stderr, summary line last.

    Args:
        stage: The stage's name, first word of the summary line.
        fn: The stage function (``recops.pipeline.*_step``).
        *args: Its arguments.

    Returns:
        What ``fn`` returned (the task's XCom).
    """
    from recops.errors import fail_fast

    with fail_fast(), stderr_to_log():
        result = fn(*args)
    _LOG.info(summary_line(stage, result))
    return result
