"""Readable answers when the trigger form asks for a run that cannot be made.

Airflow 3.3's trigger endpoint (``POST /api/v2/dags/{dag_id}/dagRuns``, what the UI's
trigger form calls) lets the database refuse a second run with the same logical date (or
run id): the ``IntegrityError`` becomes a 409 whose detail is an object with "reason:
Unique constraint violation" and a pointer into the API server's log, and the form shows
"Conflict". This ASGI middleware, installed by the recops plugin as a FastAPI root
middleware, rewrites exactly that answer: same status, a ``detail`` string naming the
DAG, the date and what to do instead.

A value the form let through that a Param's schema refuses (a fraction in an integer
field: the form's number fields bound values but do not round them) comes back as a 400
whose detail is jsonschema's whole report, schema dump included; it is cut to its first
line, which names the param and the value, plus what to do. Every other request and
answer passes untouched.

Standard library only; the API server builds it once at start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["TriggerConflictMiddleware", "conflict_message", "invalid_param_message"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_TRIGGER = re.compile(r"^/api/v2/dags/(?P<dag_id>[^/]+)/dagRuns/?$")
#: Request bodies larger than this are not kept (a trigger's body is a few kB).
_MAX_BODY = 1 << 20
#: How Airflow's ParamValidationError starts (``airflow.sdk.definitions.param``).
_INVALID_PARAM = "Invalid input for param "


def conflict_message(dag_id: str, request: Any) -> str:
    """What the trigger form shows when the run it asked for already exists.

    Args:
        dag_id: The DAG being triggered.
        request: The trigger's JSON body (``logical_date``, ``dag_run_id``...), or
            anything else when it could not be read.
    """
    body = request if isinstance(request, dict) else {}
    date, run_id = body.get("logical_date"), body.get("dag_run_id")
    what = []
    if date:
        what.append(f"logical date {date}")
    if run_id:
        what.append(f"run id {run_id}")
    named = " or ".join(what) or "this logical date"
    return (
        f"{dag_id} already has a run with {named}: one logical date is one run (for "
        "recsys_nightly, one day of data). Pick another logical date, or open the "
        "existing run and clear it to run that day again."
    )


def invalid_param_message(detail: str) -> str | None:
    """The first line of a Param validation error, with what to do; None for other errors.

    Args:
        detail: The 400 answer's detail (``"Invalid input for param epochs: 1.5 is not of
            type 'integer'\n\nFailed validating..."``).
    """
    if not detail.startswith(_INVALID_PARAM):
        return None
    first = detail.strip().splitlines()[0].rstrip()
    return (
        f"{first}. Correct that field (its description gives the allowed values) and trigger again."
    )


class TriggerConflictMiddleware:
    """Turns the trigger endpoint's bare 409 (and raw 400) into a detail the UI displays.

    Args:
        app: The ASGI app it wraps (Airflow's API server).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through; keep the request body of a trigger and rewrite its 409."""
        matched = _TRIGGER.match(str(scope.get("path", "")))
        if scope.get("type") != "http" or scope.get("method") != "POST" or not matched:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0

        async def keep_body() -> Message:
            nonlocal size
            message = await receive()
            if message.get("type") == "http.request" and size < _MAX_BODY:
                chunk = bytes(message.get("body", b""))
                size += len(chunk)
                chunks.append(chunk)
            return message

        start: Message | None = None

        answer: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message.get("status") in (400, 409):
                start = message  # held until the body shows what it is
                return
            if start is None:
                await send(message)
                return
            answer.append(bytes(message.get("body", b"")))
            if message["type"] == "http.response.body" and not message.get("more_body"):
                detail: str | None
                if start["status"] == 409:
                    detail = conflict_message(matched["dag_id"], _json(b"".join(chunks)))
                else:
                    original = _json(b"".join(answer))
                    raw = original.get("detail") if isinstance(original, dict) else None
                    detail = invalid_param_message(raw) if isinstance(raw, str) else None
                if detail is None:  # not ours to rewrite: the answer as it was
                    await send(start)
                    await send({"type": "http.response.body", "body": b"".join(answer)})
                else:
                    await self._send_detail(start, detail, send)

        await self.app(scope, keep_body, rewrite)

    @staticmethod
    async def _send_detail(start: Message, detail: str, send: Send) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": start["status"], "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
