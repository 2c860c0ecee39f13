"""recops inside Airflow: the registry watcher trigger and the Airflow plugin.

This is the only module of the package that imports Airflow. Airflow loads the plugin
through the ``airflow.plugins`` entry point (``plugins/.airflowignore`` keeps Airflow
from executing the package's other files as plugins), and the triggerer imports
:class:`ChampionAliasTrigger` by its class path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.triggers.base import BaseEventTrigger, TriggerEvent


class ChampionAliasTrigger(BaseEventTrigger):
    """Fires when a model's ``champion`` alias in MLflow differs from what ``stable`` serves.

    Someone who moves the alias in the MLflow UI or API thereby asks for a roll-out; the
    asset this trigger watches schedules ``recsys_promote``, which serves that version (or
    moves the alias back, with a reason, if its canary fails). MLflow has no stable
    webhooks on every backend, so the registry is polled.

    Args:
        model_name: Registered and served model.
        poll_interval: Seconds between registry polls (the roll-out starts within about
            this long plus the scheduler's loop).
    """

    def __init__(self, model_name: str, poll_interval: float = 10.0) -> None:
        super().__init__()
        self.model_name = model_name
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and kwargs, so the triggerer can rebuild the trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"model_name": self.model_name, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the registry; yield one event per newly requested version."""
        from recops.config import Settings
        from recops.promotion import pending_alias_change

        emitted: int | None = None
        while True:
            try:
                settings = Settings.from_env()
                version = await asyncio.to_thread(pending_alias_change, settings, self.model_name)
            except Exception as exc:  # the registry being down must not kill the watcher
                self.log.warning("registry poll for %s failed: %s", self.model_name, exc)
                version = None
            if version is not None and version != emitted:
                emitted = version
                yield TriggerEvent({"model_name": self.model_name, "version": version, "source": "registry-watch"})
            elif version is None:
                emitted = None
            await asyncio.sleep(self.poll_interval)


class RecopsPlugin(AirflowPlugin):
    """Registers recops with Airflow (listed under Admin > Plugins)."""

    name = "recops"
