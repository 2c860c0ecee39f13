"""The whole recsys_nightly DAG under `airflow dags test`, on a small synthetic sample."""

from __future__ import annotations

import json
import urllib.request

import pytest
from recops.data import list_partitions, publish, synthesize
from recops.pipeline import logical_date_for
from recops.registry import registry_status

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Small and quick, but every stage does its real work.
CONF = json.dumps({"epochs": 2, "embedding_dim": 16, "batch_size": 256, "fine_tune_epochs": 1,
                   "ranker_epochs": 2, "variants": ["int8_tables", "prune_50"], "max_rmse": 5.0,
                   "min_recall_at_10": 0.01, "min_ndcg_at_10": 0.01})  # fmt: skip


def _asset_events(stack, name: str) -> list[dict]:  # noqa: ANN001
    import sqlite3

    db = sqlite3.connect(stack.settings.airflow_home / "airflow.db")
    try:
        rows = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.name = ? ORDER BY e.id",
            (name,),
        ).fetchall()
    finally:
        db.close()
    return [json.loads(extra) if isinstance(extra, str) else extra for (extra,) in rows]


def _promote(stack, model: str, version: int, when: str):  # noqa: ANN001, ANN202
    conf = json.dumps({"model_name": model, "version": version, "reason": "integration test"})
    return stack.airflow("dags", "test", "recsys_promote", when, "--conf", conf)


def test_nightly_runs_end_to_end_and_is_idempotent(stack) -> None:  # noqa: ANN001
    ingested = publish(
        stack.settings,
        *synthesize(rows=6000, users=120, items=150, days=8, seed=5),
        source="synthetic",
    )
    day = ingested.last_date

    run = stack.airflow("dags", "test", "recsys_nightly", logical_date_for(day), "--conf", CONF)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-6000:]

    # The nightly registers and gates both models; it serves nothing by itself.
    status = registry_status(stack.settings)
    assert status.challenger_version == 1 and status.champion_version is None, log[-3000:]
    assert status.versions[0]["blessed"], log[-3000:]
    assert registry_status(stack.settings, "recops_ranking").versions[0]["version"] == 1
    # The asset event recsys_promote is scheduled on names the blessed versions.
    events = _asset_events(stack, "recops_blessed")
    assert events and events[-1]["versions"] == {"recops_retrieval": 1, "recops_ranking": 1}, events
    assert not stack.settings.models_config_path.exists()

    # recsys_promote, as a UI trigger would run it: canary, infra validation, stable.
    for i, model in enumerate(("recops_retrieval", "recops_ranking")):
        promoted = _promote(stack, model, 1, f"2030-01-01T00:00:0{i}+00:00")
        assert promoted.returncode == 0 and "DagRun failed" not in promoted.stdout, (promoted.stdout + promoted.stderr)[-6000:]
    assert registry_status(stack.settings).champion_version == 1
    history = json.loads(stack.recops("history", "--json").stdout)
    assert history[0]["alias"] == "champion" and history[0]["to_version"] == 1
    out = stack.recops("status", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert data["serving"]["up"] is True
    assert (
        data["serving"]["versions"].get("1") == "AVAILABLE"
        or data["serving"]["versions"].get(1) == "AVAILABLE"
    )
    assert data["last_run_metrics"]["recall_at_10"] > 0

    # The served model answers on TF Serving's REST route, through the `stable` label.
    body = json.dumps(
        {"instances": [{"user_id": 3, "age": 30, "gender": "F", "occupation": "other"}]}
    ).encode()
    url = f"http://127.0.0.1:{stack.settings.rest_port}/v1/models/{stack.settings.model_name}/labels/stable:predict"
    with urllib.request.urlopen(
        urllib.request.Request(url, data=body, method="POST"), timeout=30
    ) as reply:
        predictions = json.loads(reply.read())["predictions"]
    assert len(predictions[0]["item_ids"]) == 100

    rec = stack.recops("recommend", "--user-id", "3", "--k", "5", "--json")
    assert rec.returncode == 0, rec.stderr[-2000:]
    items = json.loads(rec.stdout)["recommendations"]
    assert [r["rank"] for r in items] == [1, 2, 3, 4, 5]
    assert all("ranker_score" in r for r in items)  # retrieval, then the served ranker

    # Replay v1 from its lineage: same partitions, same training-set hash, retrained from
    # scratch with the same Params, metrics within tolerance (training is seeded).
    replayed = stack.airflow("dags", "test", "recsys_replay", "2030-01-02T00:00:00+00:00", "--conf", json.dumps({"replay_model_version": 1}))
    assert replayed.returncode == 0 and "DagRun failed" not in replayed.stdout, (replayed.stdout + replayed.stderr)[-6000:]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=stack.settings.mlflow_tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("recsys_replay").experiment_id])
    assert [r.data.tags["recops.reproduced"] for r in runs] == ["true"]
    assert float(runs[0].data.metrics["diff.ndcg_at_10"]) <= 0.01

    # Second run of the same interval: same partitions, no new version, same served model.
    before = {p: p.read_bytes() for p in list_partitions(stack.settings)}
    again = stack.airflow("dags", "test", "recsys_nightly", logical_date_for(day), "--conf", CONF)
    assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
    assert {p: p.read_bytes() for p in list_partitions(stack.settings)} == before
    assert [v["version"] for v in registry_status(stack.settings).versions] == [1]
    assert [v["version"] for v in registry_status(stack.settings, "recops_ranking").versions] == [1]
    config_text = stack.settings.models_config_path.read_text()
    assert "versions: 1" in config_text.replace("\n", " ") or "versions:1" in config_text
