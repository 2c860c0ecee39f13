"""The recommendation service: one HTTP API over Feast, the model server and the history.

``create_app`` builds the FastAPI app (``app``); ``StateCache`` holds the served state it
never reads per request (``state``); ``Recommender`` is the per-request path
(``recommender``); ``ServiceMetrics`` its Prometheus metrics (``metrics``);
``start_service`` / ``stop_service`` run it detached (``daemon``), and
``recommend_via_service`` is how ``recops recommend`` asks it (``client``).

Importing this package imports nothing heavy: each name loads its module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Recommender",
    "ServiceMetrics",
    "StateCache",
    "create_app",
    "recommend_via_service",
    "service_answers",
    "service_url",
    "start_service",
    "stop_service",
]

_HOME = {
    "Recommender": "recops.service.recommender",
    "ServiceMetrics": "recops.service.metrics",
    "StateCache": "recops.service.state",
    "create_app": "recops.service.app",
    "recommend_via_service": "recops.service.client",
    "service_answers": "recops.service.daemon",
    "service_url": "recops.service.daemon",
    "start_service": "recops.service.daemon",
    "stop_service": "recops.service.daemon",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'recops.service' has no attribute {name!r}")
