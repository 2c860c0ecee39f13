"""Bad data fails `validate` by name, is quarantined, and nothing downstream happens."""

from __future__ import annotations

import pandas as pd
import pytest
from recops.data import partition_path, publish, synthesize
from recops.pipeline import logical_date_for
from recops.registry import mlflow_client

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_out_of_range_ratings_block_the_run(stack) -> None:  # noqa: ANN001
    ingested = publish(
        stack.settings,
        *synthesize(rows=3000, users=80, items=100, days=4, seed=9),
        source="synthetic",
    )
    day = ingested.last_date
    path = partition_path(stack.settings, day)
    bad = pd.read_parquet(path)
    bad.loc[bad.index[:3], "weight"] = [0.0, 7.0, 9.0]
    bad.to_parquet(path, index=False)

    run = stack.airflow("dags", "test", "recsys_nightly", logical_date_for(day))
    log = run.stdout + run.stderr
    assert "DagRun failed" in log or run.returncode != 0, log[-4000:]
    assert "expect_column_values_to_be_between(column=weight" in log, log[-4000:]
    # Downstream never ran: no online store, no training output, no model, nothing served.
    assert not (stack.settings.feast_dir / "online_store.db").exists()
    assert not list(stack.settings.runs_dir.glob("*/train-*"))
    # MLflow holds the run's record (the DAG run's run and validate's), failed; no model.
    client = mlflow_client(stack.settings)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    status = {r.data.tags.get("airflow.task_id"): r.info.status for r in runs}
    # `variants` (which only lists names) runs beside `validate`; nothing after them did.
    assert set(status) <= {None, "validate", "variants"}, status
    assert status[None] == status["validate"] == "FAILED", status
    assert client.search_model_versions() == []
    assert not stack.settings.models_config_path.exists()
    quarantined = stack.settings.quarantine_dir / day
    assert (quarantined / "part-0.parquet").read_bytes() == path.read_bytes()
    assert (quarantined / "validation.json").is_file()
