"""Serving: a TF Serving-compatible model server, its client, and the roll-out stage.

- ``recops.serving.server``: the server (``python -m recops.serving.server``) and
  ``start_background`` / ``stop_background`` / ``is_running`` to run it detached;
- ``recops.serving.client``: ``ServingClient`` (REST and gRPC);
- ``recops.serving.models_config``: read and write ``models.config``;
- ``recops.serving.rollout``: ``rollout(RolloutConfig(...)) -> RolloutResult``, the
  pipeline's roll-out stage (import the function from there: a package attribute named
  ``rollout`` would hide the submodule).

The names below load on first use, so importing this package imports nothing, and
``python -m recops.serving.server`` does not find its module already imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recops.serving.client import ServingClient
    from recops.serving.rollout import RolloutConfig, RolloutError, RolloutResult
    from recops.serving.server import (
        ServingError,
        is_running,
        start_background,
        stop_background,
    )

__all__ = [
    "RolloutConfig",
    "RolloutError",
    "RolloutResult",
    "ServingClient",
    "ServingError",
    "is_running",
    "start_background",
    "stop_background",
]

_HOMES = {
    "RolloutConfig": "rollout",
    "RolloutError": "rollout",
    "RolloutResult": "rollout",
    "ServingClient": "client",
    "ServingError": "server",
    "is_running": "server",
    "start_background": "server",
    "stop_background": "server",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
