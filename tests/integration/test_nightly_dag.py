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
                   "min_recall_at_10": 0.01, "min_ndcg_at_10": 0.01})  # fmt: skip


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

    status = registry_status(stack.settings)
    assert status.champion_version == 1, log[-3000:]
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

    # Second run of the same interval: same partitions, no new version, same served model.
    before = {p: p.read_bytes() for p in list_partitions(stack.settings)}
    again = stack.airflow("dags", "test", "recsys_nightly", logical_date_for(day), "--conf", CONF)
    assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
    assert {p: p.read_bytes() for p in list_partitions(stack.settings)} == before
    assert [v["version"] for v in registry_status(stack.settings).versions] == [1]
    config_text = stack.settings.models_config_path.read_text()
    assert "versions: 1" in config_text.replace("\n", " ") or "versions:1" in config_text
