"""The ``recops`` command line: demo, ui, status, recommend, history, rollback, bench, data.

Heavy libraries are imported inside each command, so ``recops --help`` answers at once.
Progress bars (``rich``) go to stderr, and only when stderr is a terminal and ``--json``
is not given, so stdout stays clean for scripts: with ``--json`` it carries JSON only.

Submodules, one concern each:

- ``recops.cli.app``: the Typer app that mounts every command, and ``main``.
- ``recops.cli.common``: errors with a hint, settings, progress bars, port checks.
- ``recops.cli.dag_runs``: Airflow as a subprocess (metadata DB, ``airflow dags test``
  with a task bar and a log file) and a DAG's tasks read from its file.
- ``recops.cli.demo``: ``recops demo`` (ingest, nightly run, promotion, recommend).
- ``recops.cli.data``: ``recops data fetch|synth|import``.
- ``recops.cli.serving``: ``serve``, ``stop``, ``recommend``, ``status``, ``history``,
  ``rollback``.
- ``recops.cli.ui``: ``recops ui`` (Airflow standalone, the MLflow and Feast UIs).
- ``recops.cli.bench``: ``recops bench`` (the Makefile's benchmarks).
- ``recops.cli.scale``: ``recops scale ...`` (the scale-out profile).
"""

from __future__ import annotations

from recops.cli.app import app, main
from recops.cli.bench import benchmark_plan
from recops.cli.dag_runs import DagTestTracker, dag_task_ids

__all__ = ["DagTestTracker", "app", "benchmark_plan", "dag_task_ids", "main"]
