"""recops.version_snapshot: recsys_promote's form names the versions, read from a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from recops import version_snapshot, wiring
from recops.config import Settings


def test_the_form_names_registered_versions_without_reading_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException
    from recops.registry import BLESSED_TAG, mlflow_client

    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RECOPS_MODEL_NAME", raising=False)
    monkeypatch.delenv("RECOPS_RANKING_MODEL_NAME", raising=False)
    monkeypatch.delenv("RECOPS_DATASET", raising=False)
    settings = Settings.from_env()
    retrieval, ranking = settings.promotable_models
    # Nothing registered, no file yet: the plain description, and nothing breaks.
    plain = wiring.promote_params()["version"].description
    assert version_snapshot.read(settings) == {}
    assert plain.startswith("Version to serve")

    client = mlflow_client(settings)
    client.create_registered_model(retrieval)
    for blessed in ("true", "false"):
        client.create_model_version(retrieval, str(tmp_path), tags={BLESSED_TAG: blessed})
    client.set_registered_model_alias(retrieval, "champion", "1")
    # refresh_quietly writes the file even when the block it guards fails.
    with pytest.raises(MlflowException), version_snapshot.refresh_quietly(settings, client):
        client.get_model_version(retrieval, "99")
    snapshot = version_snapshot.read(settings)
    assert snapshot[retrieval] == [
        {"version": 2, "blessed": False, "aliases": []},
        {"version": 1, "blessed": True, "aliases": ["champion"]},
    ]
    assert snapshot[ranking] == []
    described = version_snapshot.describe(snapshot, settings.promotable_models)
    assert described == f"Registered: {retrieval} v2 (not blessed: needs force), v1 (champion)."
    # Parsing the DAG reads only the file: with the MLflow store gone, the form still
    # names the versions.
    (settings.mlflow_dir / "mlflow.db").unlink()
    assert wiring.promote_params()["version"].description == f"{plain} {described}"


def test_a_damaged_file_reads_as_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path))
    settings = Settings.from_env()
    path = version_snapshot.snapshot_path(settings)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert version_snapshot.read(settings) == {}
    path.write_text('["a list"]')
    assert version_snapshot.read(settings) == {}
    junk = {"m": [{"version": "1"}, {"version": True}, "x"], "n": "nope"}
    assert version_snapshot.describe(junk, ["m", "n", "absent"]) == ""
