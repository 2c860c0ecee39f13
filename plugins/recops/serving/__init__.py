"""Serving: a TF Serving-compatible model server, its client, and the roll-out stage.

- ``recops.serving.server``: the server's entry point (``python -m recops.serving.server``),
  re-exporting the names of the modules it is built from:

  - ``recops.serving.status``: canonical status codes, exceptions -> ``ServingError``;
  - ``recops.serving.codec``: REST JSON <-> tensors, body parsing and the depth guard;
  - ``recops.serving.servable``: one loaded SavedModel version and its signatures;
  - ``recops.serving.manager``: ``ModelManager`` (reloads, version states, labels);
  - ``recops.serving.grpc_api`` / ``recops.serving.rest_api``: the two front ends;
  - ``recops.serving.daemon``: ``start_background`` / ``stop_background`` /
    ``is_running`` to run it detached, pid files and the state-folder lock;
- ``recops.serving.client``: ``ServingClient`` (REST and gRPC);
- ``recops.serving.models_config``: read and write ``models.config``;
- ``recops.serving.rollout``: ``rollout(RolloutConfig(...)) -> RolloutResult``, the
  pipeline's canary roll-out stage, and ``rollback(RollbackConfig(...))`` (import the
  functions from there: a package attribute named ``rollout`` would hide the submodule);
  built from ``rollout_config`` (configs, result), ``rollout_staging`` (version folders)
  and ``rollout_checks`` (infra validation);
- ``recops.serving.recommend``: the online recommend path (features -> retrieval -> ranker);
- ``recops.serving.loadtest``: ``run_load(LoadConfig(...)) -> LoadResult``, an open-loop
  load generator (REST or gRPC).

The names below load on first use, so importing this package imports nothing, and
``python -m recops.serving.server`` does not find its module already imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recops.serving.client import ServingClient
    from recops.serving.daemon import is_running, start_background, stop_background
    from recops.serving.loadtest import LoadConfig, LoadResult, run_load
    from recops.serving.rollout import (
        RollbackConfig,
        RolloutConfig,
        RolloutError,
        RolloutResult,
    )
    from recops.serving.server import ServingError

__all__ = [
    "LoadConfig",
    "LoadResult",
    "RollbackConfig",
    "RolloutConfig",
    "RolloutError",
    "RolloutResult",
    "ServingClient",
    "ServingError",
    "is_running",
    "run_load",
    "start_background",
    "stop_background",
]

_HOMES = {
    "LoadConfig": "loadtest",
    "LoadResult": "loadtest",
    "RollbackConfig": "rollout",
    "RolloutConfig": "rollout",
    "RolloutError": "rollout",
    "RolloutResult": "rollout",
    "ServingClient": "client",
    "ServingError": "server",
    "is_running": "daemon",
    "run_load": "loadtest",
    "start_background": "daemon",
    "stop_background": "daemon",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
