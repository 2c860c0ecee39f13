"""recops.links: every UI address comes from one place, and ids become one path segment."""

from __future__ import annotations

import pytest
from recops import links


def test_defaults_are_the_ports_recops_ui_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "AIRFLOW__API__BASE_URL",
        "AIRFLOW__API__PORT",
        "RECOPS_MLFLOW_UI_URL",
        "RECOPS_MLFLOW_PORT",
        "RECOPS_FEAST_UI_URL",
        "RECOPS_FEAST_UI_PORT",
    ):
        monkeypatch.delenv(var, raising=False)
    assert links.airflow_url() == "http://127.0.0.1:8080"
    assert links.mlflow_ui_url() == "http://127.0.0.1:5000"
    assert links.feast_ui_url() == "http://127.0.0.1:8888"
    monkeypatch.setenv("RECOPS_MLFLOW_PORT", "5123")
    assert links.mlflow_ui_url() == "http://127.0.0.1:5123"


def test_a_base_url_wins_over_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__PORT", "9999")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.org/af/")
    assert links.airflow_url() == "https://airflow.example.org/af"


def test_run_ids_are_quoted_as_one_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__API__PORT", "8080")
    run = "manual__2026-01-01T00:00:00+00:00"
    assert links.airflow_run_url("recsys_nightly", run) == (
        "http://127.0.0.1:8080/dags/recsys_nightly/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00"
    )
    assert links.airflow_task_url("d", "r/x", "train").endswith("/dags/d/runs/r%2Fx/tasks/train")
    monkeypatch.setenv("RECOPS_MLFLOW_UI_URL", "http://m:1")
    assert links.mlflow_run_url("3", "abc") == "http://m:1/#/experiments/3/runs/abc"
    assert links.mlflow_version_url("recops_retrieval", 7) == (
        "http://m:1/#/models/recops_retrieval/versions/7"
    )
