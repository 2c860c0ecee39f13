"""recops.trigger_conflict: a second run for a logical date gets words, not "Conflict"."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from recops.trigger_conflict import (
    TriggerConflictMiddleware,
    conflict_message,
    invalid_param_message,
)

TAKEN = "2026-01-01T00:00:00Z"
# What Airflow's trigger endpoint answers for a fraction in an integer Param.
INVALID = (
    "Invalid input for param ranker_epochs: 1.5 is not of type 'integer'\n\n"
    "Failed validating 'type' in schema:\n    {'title': 'Ranker epochs', 'type': 'integer'}"
)


def _client() -> TestClient:
    # The shape of Airflow's own answer: its IntegrityError handler's 409 detail object.
    app = FastAPI()

    @app.post("/api/v2/dags/{dag_id}/dagRuns")
    async def trigger(dag_id: str, request: Request) -> dict[str, Any]:
        body = await request.json()
        if body.get("conf"):
            raise HTTPException(status_code=400, detail=body["conf"]["detail"])
        if body.get("logical_date") == TAKEN:
            raise HTTPException(
                status_code=409,
                detail={"reason": "Unique constraint violation", "message": "see log id X"},
            )
        return {"dag_id": dag_id, "state": "queued"}

    @app.post("/api/v2/dags/{dag_id}/other")
    async def other(dag_id: str) -> None:
        raise HTTPException(status_code=409, detail="untouched")

    app.add_middleware(TriggerConflictMiddleware)
    return TestClient(app)


def test_a_taken_logical_date_is_explained() -> None:
    client = _client()
    answer = client.post("/api/v2/dags/recsys_nightly/dagRuns", json={"logical_date": TAKEN})
    assert answer.status_code == 409
    detail = answer.json()["detail"]
    assert isinstance(detail, str)  # the UI's error alert prints a string detail as is
    assert detail == conflict_message("recsys_nightly", {"logical_date": TAKEN})
    assert "recsys_nightly already has a run with logical date " + TAKEN in detail
    assert "Pick another logical date" in detail
    assert int(answer.headers["content-length"]) == len(answer.content)


def test_everything_else_passes_untouched() -> None:
    client = _client()
    ok = client.post("/api/v2/dags/recsys_nightly/dagRuns", json={"logical_date": None})
    assert ok.status_code == 200 and ok.json() == {"dag_id": "recsys_nightly", "state": "queued"}
    other = client.post("/api/v2/dags/recsys_nightly/other")
    assert other.status_code == 409 and other.json() == {"detail": "untouched"}


def test_an_invalid_param_keeps_its_first_line_other_400s_are_untouched() -> None:
    client = _client()
    path = "/api/v2/dags/recsys_nightly/dagRuns"
    answer = client.post(path, json={"conf": {"detail": INVALID}})
    assert answer.status_code == 400
    assert answer.json()["detail"] == invalid_param_message(INVALID)
    assert answer.json()["detail"].startswith(
        "Invalid input for param ranker_epochs: 1.5 is not of type 'integer'. Correct that field"
    )
    assert "Failed validating" not in answer.text
    other = client.post(path, json={"conf": {"detail": "Dag has import errors"}})
    assert other.status_code == 400 and other.json() == {"detail": "Dag has import errors"}
    assert invalid_param_message("Dag has import errors") is None


def test_the_message_names_a_run_id_and_survives_a_bad_body() -> None:
    named = conflict_message("d", {"logical_date": "2026-01-02", "dag_run_id": "manual__x"})
    assert "logical date 2026-01-02 or run id manual__x" in named
    assert conflict_message("d", b"not json").startswith("d already has a run with this logical")
    assert json.dumps(conflict_message("d", None))
