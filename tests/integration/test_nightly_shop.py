"""A log recops did not declare, end to end: infer, import, run, recommend, by the CLI.

The shop generator writes an e-commerce log (string customer keys and SKUs, view /
add_to_cart / purchase events, products with name, category, brand and price, customers
with a country). From there on only the commands a user types are used: ``data infer``
drafts the spec (not edited), ``data import --spec`` lands it, ``run --dataset`` runs
``recsys_nightly`` with ``airflow dags test`` and promotes, and ``recommend --dataset``
answers by the customer's own key without repeating anything the customer interacted with.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from recops.data.synthetic import write_synthetic
from recops.dataset_spec import load_spec
from recops.pipeline import logical_date_for
from recops.registry import registry_status

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1800)]

CONF = json.dumps({"epochs": 2, "embedding_dim": 16, "batch_size": 256, "fine_tune_epochs": 1,
                   "ranker_epochs": 1, "variants": ["int8_tables"], "max_rmse": 5.0,
                   "min_recall_at_10": 0.001, "min_ndcg_at_10": 0.001})  # fmt: skip


def _nightly_runs(stack) -> dict[str, dict]:  # noqa: ANN001
    import sqlite3

    db = sqlite3.connect(stack.settings.airflow_home / "airflow.db")
    try:
        rows = db.execute(
            "SELECT run_id, conf FROM dag_run WHERE dag_id = 'recsys_nightly'"
        ).fetchall()
    finally:
        db.close()
    return {run_id: json.loads(conf) if isinstance(conf, str) else conf for run_id, conf in rows}


def test_an_unseen_shop_log_goes_from_files_to_recommendations(stack, tmp_path) -> None:  # noqa: ANN001
    spec_file = write_synthetic(
        tmp_path / "files", mode="shop", rows=2500, users=100, items=150, days=6, seed=3
    )
    shipped = load_spec(spec_file)
    files = shipped.file_paths(spec_file)
    draft = tmp_path / "shop.yaml"

    inferred = stack.recops(
        "data", "infer", "--name", "shop", "--events", str(files["events"]),
        "--users", str(files["users"]), "--items", str(files["items"]), "--out", str(draft),
    )  # fmt: skip
    assert inferred.returncode == 0, inferred.stderr[-3000:]
    spec = load_spec(draft)
    assert spec.users.key_type == spec.items.key_type == "string"
    assert set(spec.event_types) == {"view", "add_to_cart", "purchase"}

    imported = stack.recops("data", "import", "--spec", str(draft), "--json")
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert json.loads(imported.stdout)["staged_dates"], imported.stdout

    # The schedule covers every dataset: the fan-out DAG triggers the nightly for "shop".
    day = sorted(json.loads(imported.stdout)["staged_dates"])[-1]
    fanned = stack.airflow("dags", "test", "recsys_nightly_datasets", logical_date_for(day))
    assert fanned.returncode == 0, (fanned.stdout + fanned.stderr)[-4000:]
    assert _nightly_runs(stack) == {f"dataset__shop__{day}": {"dataset": "shop"}}

    ran = stack.recops("run", "--dataset", "shop", "--conf", CONF, timeout=1500)
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-6000:]
    shop = stack.settings.for_dataset("shop")
    assert shop.model_name == "shop_retrieval"
    status = registry_status(shop, shop.model_name)
    assert status.champion_version == 1, (ran.stdout + ran.stderr)[-3000:]

    events = pd.read_csv(files["events"], dtype=str)
    customer = events["customer"].value_counts().index[0]  # the busiest customer
    rec = stack.recops("recommend", "--dataset", "shop", "--user-id", customer, "--k", "10",
                       "--json")  # fmt: skip
    assert rec.returncode == 0, rec.stderr[-3000:]
    answer = json.loads(rec.stdout)
    items = [r["item_id"] for r in answer["recommendations"]]
    assert len(items) == 10 and all(i.startswith("SKU-") for i in items), answer
    seen = set(events.loc[events["customer"] == customer, "sku"])
    assert not seen & set(items), sorted(seen & set(items))

    unknown = stack.recops("recommend", "--dataset", "shop", "--user-id", "c-nobody", "--json")
    assert unknown.returncode == 0, unknown.stderr[-3000:]
    assert len(json.loads(unknown.stdout)["recommendations"]) == 10
