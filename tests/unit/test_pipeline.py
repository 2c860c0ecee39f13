"""``recops.pipeline``: the fan-out of the nightly over the datasets present."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from recops.config import Settings
from recops.data import staged_path
from recops.layout import SHIPPED_SPECS, SPEC_FILE
from recops.pipeline import dataset_runs, dataset_settings


def _import_spec(settings: Settings, name: str) -> Settings:
    theirs = settings.for_dataset(name)
    theirs.data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHIPPED_SPECS / "shop-synthetic.yaml", theirs.data_dir / SPEC_FILE)
    return theirs


def test_every_other_dataset_with_the_days_data_gets_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path))
    monkeypatch.delenv("RECOPS_DATASET", raising=False)
    settings = Settings.from_env()
    for name in ("shop", "clicks", "empty"):
        theirs = _import_spec(settings, name)
        if name != "empty":  # a dataset without the day's data is not run
            path = staged_path(theirs, "2026-12-01")
            path.parent.mkdir(parents=True)
            path.write_bytes(b"")
    start = datetime(2026, 12, 1, tzinfo=UTC)
    end = datetime(2026, 12, 2, tzinfo=UTC)

    runs = dataset_runs(start, end)

    # The deployment's own dataset is recsys_nightly's own schedule, not a fan-out run.
    assert [r["conf"] for r in runs] == [{"dataset": "clicks"}, {"dataset": "shop"}]
    assert [r["trigger_run_id"] for r in runs] == [
        "dataset__clicks__2026-12-01",
        "dataset__shop__2026-12-01",
    ]
    # Distinct logical dates inside the same day, after the interval's end.
    assert [r["logical_date"] for r in runs] == [
        "2026-12-02T00:00:01+00:00",
        "2026-12-02T00:00:02+00:00",
    ]


def test_dataset_settings_follow_the_run_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path))
    monkeypatch.delenv("RECOPS_DATASET", raising=False)

    assert dataset_settings(None).dataset == "movielens-100k"
    shop = dataset_settings("shop")
    assert shop.data_dir == tmp_path / "data" / "shop"
    assert shop.model_name == "shop_retrieval"
