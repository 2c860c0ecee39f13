"""Registry stage on real MLflow (SQLite backend, local artifacts)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from recops.config import Settings
from recops.registry import (
    CHAMPION,
    GateConfig,
    RegisterConfig,
    register,
    registry_status,
)

from tests.support.contract_model import export_contract_model


def test_register_is_idempotent_and_aliases_follow_the_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    model = export_contract_model(tmp_path / "sm")
    good = {"recall_at_10": 0.2, "ndcg_at_10": 0.3}
    first = register(
        RegisterConfig(model_dir=str(model), model_key="k1", metrics=good, lineage={"dag_id": "t"})
    )
    assert first.created and first.blessed and first.version == 1
    assert set(first.aliases) == {"challenger", CHAMPION}
    # Without a training run to link to, the version gets a standalone run, ended.
    client = mlflow.MlflowClient(tracking_uri=Settings.from_env().mlflow_tracking_uri)
    standalone = client.get_run(first.run_id)
    assert standalone.info.status == "FINISHED"
    assert mlflow.artifacts.load_dict(f"runs:/{first.run_id}/lineage.json")["dag_id"] == "t"
    assert "retrieval" in client.get_registered_model("recops_retrieval").description
    again = register(RegisterConfig(model_dir=str(model), model_key="k1", metrics=good))
    assert not again.created and again.version == 1

    worse = register(
        RegisterConfig(
            model_dir=str(model), model_key="k2", metrics={"recall_at_10": 0.1, "ndcg_at_10": 0.1}
        )
    )
    assert worse.created and not worse.blessed and worse.version == 2
    assert worse.champion_version == 1 and worse.aliases == ["challenger"]
    assert any("relative drop" in r for r in worse.reasons)
    # The same model again under a looser gate: the first decision stands, and says so.
    looser = GateConfig(max_relative_drop=0.9)
    again = register(
        RegisterConfig(
            model_dir=str(model), model_key="k2", gate=looser,
            metrics={"recall_at_10": 0.1, "ndcg_at_10": 0.1},
        )
    )  # fmt: skip
    assert not again.created and not again.blessed and again.version == 2
    assert "that decision stands: this run's gate would bless it" in again.reasons[-1]
    assert again.reasons[:-1] == worse.reasons
    refused = registry_status(Settings.from_env()).versions[0]
    assert refused["version"] == 2 and refused["reasons"] == again.reasons
    # Under the first gate again, the note goes.
    register(
        RegisterConfig(
            model_dir=str(model), model_key="k2", metrics={"recall_at_10": 0.1, "ndcg_at_10": 0.1}
        )
    )
    assert registry_status(Settings.from_env()).versions[0]["reasons"] == worse.reasons

    # Linked to the run that trained it: that run gets the model, its lineage and gate,
    # keeps the params it logged at its start, and is not ended by registration.
    trained = client.create_run(standalone.info.experiment_id, run_name="train")
    client.log_param(trained.info.run_id, "epochs", "9")
    linked = register(
        RegisterConfig(
            model_dir=str(model),
            model_key="k3",
            metrics={"recall_at_10": 0.1, "ndcg_at_10": 0.1},
            params={"epochs": 2, "seed": 1},
            run_id=trained.info.run_id,
            description="the two-tower of this test's dataset",
        )
    )
    assert linked.created and linked.run_id == trained.info.run_id
    run = client.get_run(trained.info.run_id)
    assert run.info.status == "RUNNING" and run.data.params == {"epochs": "9", "seed": "1"}
    assert run.data.metrics["recall_at_10"] == 0.1
    assert mlflow.artifacts.load_dict(f"runs:/{linked.run_id}/gate.json")["blessed"] is False
    # The description is the caller's, and corrects an earlier one.
    described = client.get_registered_model("recops_retrieval").description
    assert described == "the two-tower of this test's dataset"

    status = registry_status(Settings.from_env())
    assert status.champion_version == 1 and status.challenger_version == 3
    # The registered model carries the SavedModel's signature (whatever inputs the
    # dataset's features make it take), strings included.
    import tensorflow as tf

    info = mlflow.models.get_model_info("models:/recops_retrieval/1")
    names = {s.name for s in info.signature.inputs.inputs}
    served = tf.saved_model.load(str(model)).signatures["serving_default"]
    assert names == set(served.structured_input_signature[1]) and "user_id" in names
    assert (Path(first.saved_model_dir) / "saved_model.pb").is_file()


def test_register_refuses_a_folder_without_a_saved_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        register(RegisterConfig(model_dir=str(tmp_path), model_key="x", metrics={}))


def test_registry_calls_do_not_leak_the_tracking_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second home in the same process must get its own MLflow DB (seen in the full suite)."""
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "a"))
    registry_status(Settings.from_env())
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "b"))
    assert str(tmp_path / "b") in Settings.from_env().mlflow_tracking_uri
