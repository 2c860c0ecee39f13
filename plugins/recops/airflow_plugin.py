"""recops inside Airflow: the registry watcher trigger, the extra links and the plugin.

With ``recops.wiring`` (what the DAG files share), the only module of the package that
imports Airflow at module level; ``recops.errors.fail_fast`` imports it lazily. Airflow
loads the plugin
through the ``airflow.plugins`` entry point (``plugins/.airflowignore`` keeps Airflow
from executing the package's other files as plugins), and the triggerer imports
:class:`ChampionAliasTrigger` by its class path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from recops.trigger_conflict import TriggerConflictMiddleware


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
        super().__init__()  # type: ignore[no-untyped-call]
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
                yield TriggerEvent(  # type: ignore[no-untyped-call]
                    {"model_name": self.model_name, "version": version, "source": "registry-watch"}
                )
            elif version is None:
                emitted = None
            await asyncio.sleep(self.poll_interval)


def _reports_app() -> Any:
    """FastAPI app serving run reports at ``/recops/reports/{dag_id}/{run_id}``.

    Same login as the Airflow UI: Airflow's own ``requires_access_dag`` dependency reads
    the UI's session cookie (the report tab's iframe is same-origin and sends it), so a
    user who may not read the DAG's runs gets 401/403 here too. Ids are checked against
    the patterns in ``recops.report`` before they touch the disk; an absent report is 404.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse

    from recops.config import Settings
    from recops.report import report_path

    app = FastAPI(title="recops", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(
        "/reports/{dag_id}/{run_id}",
        dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))],
    )
    def run_report(dag_id: str, run_id: str) -> Any:
        try:
            path = report_path(Settings.from_env(), dag_id, run_id)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        # The page is self-contained; forbid anything it might pull in or run.
        headers = {
            "Content-Security-Policy": (
                "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                "frame-ancestors 'self'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }
        # The tab shows on every DAG's runs; only the nightly writes reports.
        if not path.is_file():
            message = (
                "<p>No run report for this run (yet). "
                "recsys_nightly's <code>report</code> task writes one.</p>"
            )
            return HTMLResponse(message, status_code=404, headers=headers)
        return FileResponse(path, media_type="text/html; charset=utf-8", headers=headers)

    return app


class _LazyASGI:
    """An ASGI app that builds the real one on its first request.

    Every Airflow process loads plugins (and the DAG processor imports this module when
    it parses recsys_promote); only the API server ever serves a request, so only it pays
    for FastAPI and Airflow's API security imports.
    """

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = self._factory()
        await self._app(scope, receive, send)


class MlflowRunLink(BaseOperatorLink):  # type: ignore[misc]
    """ "MLflow run" on recops' tasks: the task's nested run, else its DAG run's run.

    Looked up in MLflow when the UI asks (on the API server), so a deleted or missing
    run gives no link rather than a 404; see ``recops.ui_links``.
    """

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """The run's MLflow UI URL, or "" (the UI then shows no link)."""
        from recops.ui_links import lookup

        return lookup(ti_key, "run")


class ModelVersionLink(BaseOperatorLink):  # type: ignore[misc]
    """ "Model version": the version the DAG run registered (or recsys_promote served)."""

    name = "Model version"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """The version's MLflow UI URL, or "" (the UI then shows no link)."""
        from recops.ui_links import lookup

        return lookup(ti_key, "version")


class RecopsPlugin(AirflowPlugin):
    """Registers recops with Airflow (listed under Admin > Plugins)."""

    name = "recops"
    fastapi_apps = [
        {"app": _LazyASGI(_reports_app), "url_prefix": "/recops", "name": "recops run reports"}
    ]
    # Why an external view: in the Airflow 3.3 UI an external view with destination
    # "dag_run" and a url_route is a tab on the DAG-run page (plugin/<url_route>) whose
    # body is an iframe on ``href`` with {DAG_ID} and {RUN_ID} filled in (URL-encoded), so
    # the report shows inside Airflow with the user's session. An operator extra link
    # would only appear on the report task's instance page, one click further away.
    # Global, not per operator: TaskFlow tasks all share one operator class, and a global
    # link is computed by the API server when the UI asks, not stored by the worker.
    # ui_links offers them on recops' DAGs only (elsewhere the URL is "": no link).
    global_operator_extra_links = [MlflowRunLink(), ModelVersionLink()]
    # The trigger form's bare "Conflict" for a logical date that already has a run.
    fastapi_root_middlewares = [
        {
            "middleware": TriggerConflictMiddleware,
            "args": [],
            "kwargs": {},
            "name": "recops readable trigger conflicts",
        }
    ]
    external_views = [
        {
            "name": "Run report",
            "href": "/recops/reports/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "recops-run-report",
        }
    ]
