"""Tests for the validate stage's entry points: real Great Expectations on tiny tables."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from _contract_tables import (
    DAY,
    MOVIELENS,
    REPO,
    SHOP,
    config,
    good_rows,
    interactions,
    partition,
    write_items,
    write_users,
)
from recops.config import Settings
from recops.dataset_spec import load_spec
from recops.errors import DataError, LateDataError, ParamError
from recops.validation import (
    ContractConfig,
    DataValidationError,
    ValidationResult,
    contract_spec,
    validate_and_publish,
    validate_history,
    validate_partition,
)


def test_import_is_cheap() -> None:
    code = (
        "import sys, recops.validation; "
        "heavy = {'great_expectations', 'pandas', 'pyarrow'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_good_partition_passes_and_writes_report(settings: Settings) -> None:
    path = partition(settings, interactions(good_rows(settings)))

    result = validate_partition(config(settings, path, data_docs=True))

    assert isinstance(result, ValidationResult)
    assert result.success and result.n_failed == 0 and result.warnings == []
    assert result.dataset == settings.dataset
    assert result.n_rows == len(good_rows(settings))
    assert result.partition_date == "1998-04-22"
    assert result.partition_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    report = json.loads(Path(result.report_uri).read_text())
    assert report["success"] is True and report["dataset"] == settings.dataset
    assert len(report["expectations"]) == result.n_expectations > 30
    assert {e["table"] for e in report["expectations"]} == {"interactions", "users", "items"}
    assert all(e["success"] for e in report["expectations"])
    # Every declared attribute is checked for its dtype, by name.
    checked = {e["columns"][0] for e in report["expectations"] if e["columns"]}
    attributes = {"shop-synthetic": {"country", "name", "category", "brand", "price"}}
    assert attributes.get(settings.dataset, {"age", "occupation", "genres"}) <= checked
    assert Path(result.data_docs_uri).is_file()
    assert not settings.quarantine_dir.exists() or not any(settings.quarantine_dir.iterdir())


def test_the_spec_comes_from_the_config_beside_the_tables_or_the_environment(
    shop: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = partition(shop, interactions(good_rows(shop)))
    movielens_spec = REPO / "datasets" / f"{MOVIELENS}.yaml"

    # Given: the shop's tables against MovieLens' spec do not match.
    with pytest.raises(DataValidationError, match="expect_table_columns_to_match_set"):
        validate_partition(config(shop, path, spec_uri=str(movielens_spec)))
    # Not given: the spec the import left beside the tables, whatever the environment says.
    monkeypatch.setenv("RECOPS_DATASET", MOVIELENS)
    assert validate_partition(config(shop, path)).dataset == SHOP
    # None beside them: the environment's dataset's (here MovieLens' shipped spec).
    (shop.data_dir / "spec.yaml").unlink()
    with pytest.raises(DataValidationError, match="expect_table_columns_to_match_set"):
        validate_partition(config(shop, path))
    assert contract_spec().name == MOVIELENS
    assert contract_spec(str(movielens_spec)).name == MOVIELENS
    with pytest.raises(DataError, match="nope.yaml"):
        validate_partition(config(shop, path, spec_uri=str(tmp_path / "nope.yaml")))


def test_corrupt_partition_gives_clear_error(shop: Settings) -> None:
    path = partition(shop, b"PAR1 definitely not parquet")

    with pytest.raises(DataValidationError, match="unreadable or corrupt") as info:
        validate_partition(config(shop, path))

    assert str(path) in str(info.value)
    assert (shop.quarantine_dir / "1998-04-22" / "part-0.parquet").is_file()
    report = json.loads(Path(str(info.value.report_uri)).read_text())
    assert str(path) in report["tables"]["interactions"]["read_error"]


def test_missing_file_is_late_data_and_bad_interval_a_param_error(shop: Settings) -> None:
    path = partition(shop, interactions(good_rows(shop)))
    missing = shop.data_dir / "nope.parquet"

    # Late data is retried; a bad interval is permanent (both keep their builtin bases).
    with pytest.raises(LateDataError, match=f"items parquet file not found: {missing}"):
        validate_partition(config(shop, path, items_path=str(missing)))
    with pytest.raises(ParamError, match="interval_start=.* must be timezone-aware"):
        validate_partition(config(shop, path, interval_start=datetime(1998, 4, 22)))
    with pytest.raises(ParamError, match="interval_end=.* must be after interval_start"):
        validate_partition(config(shop, path, interval_end=DAY))


def test_validate_and_publish_needs_a_partition(shop: Settings) -> None:
    staged = shop.staging_dir / "date=1998-04-22" / "part-0.parquet"
    cfg = config(shop, staged, published_dir=str(shop.interactions_dir))

    with pytest.raises(FileNotFoundError, match="no interactions partition for 1998-04-22"):
        validate_and_publish(cfg)
    with pytest.raises(ValueError, match="needs ValidateConfig.published_dir"):
        validate_and_publish(config(shop, staged))


def test_staged_day_is_published_and_rerun_is_the_same(movielens: Settings) -> None:
    staged = movielens.staging_dir / "date=1998-04-22" / "part-0.parquet"
    staged.parent.mkdir(parents=True)
    pq.write_table(interactions(good_rows(movielens)), staged)
    payload = staged.read_bytes()
    cfg = config(movielens, staged, published_dir=str(movielens.interactions_dir))

    first = validate_and_publish(cfg)
    again = validate_and_publish(cfg)

    assert first == again and first.published
    published = movielens.interactions_dir / "date=1998-04-22" / "part-0.parquet"
    assert first.partition_uri == str(published) and published.read_bytes() == payload
    assert not staged.parent.exists()
    assert "drift checks skipped: no history (no reference window)" in first.notes
    assert "row-count band skipped: no history" in first.notes


def test_new_categorical_values_warn_then_block_when_configured(shop: Settings) -> None:
    # Customer 3 (the only one in "US") appears only today, in most of its events; item 30
    # is new too, but its category and brand were seen (item 10's).
    write_users(shop, country=["DE", "FR", "US"])
    write_items(shop, brand=["acme", None, "acme"])
    before = DAY - timedelta(days=1)
    partition(
        shop, interactions([(1, 10, "view", 1.0, before), (2, 20, "view", 1.0, before)]), before
    )
    today = [(3, 30, "view", 1.0, DAY + timedelta(minutes=m)) for m in range(3)]
    path = partition(shop, interactions([*today, (1, 10, "view", 1.0, DAY)]))
    contract = ContractConfig(drift_min_rows=1)
    published = str(shop.interactions_dir)

    result = validate_partition(config(shop, path, published_dir=published, contract=contract))

    assert result.success and result.drift["new_value_share.country"] == 0.75
    assert result.drift["new_value_share.category"] == result.drift["new_value_share.brand"] == 0
    [warning] = [w for w in result.warnings if "new_value_share" in w]
    assert warning == (
        "interactions: recops_new_value_share(table=users, column=country, max=0.2): "
        'observed 0.75 ({"new_values": ["US"]})'
    )
    strict = ContractConfig(drift_min_rows=1, new_value_severity="fail")
    with pytest.raises(DataValidationError, match=r"column=country.*\"US\"") as info:
        validate_partition(config(shop, path, published_dir=published, contract=strict))
    assert f"interactions {path} failed 1 of" in str(info.value)


def test_validate_history_checks_frames_in_memory(movielens: Settings, tmp_path: Path) -> None:
    frame = interactions(good_rows(movielens)).to_pandas()
    users = pd.read_parquet(movielens.users_path)
    items = pd.read_parquet(movielens.items_path)

    result = validate_history(frame, users, items, report_dir=tmp_path / "report", label="h")

    assert result.success and result.partition_uri == "h" and result.n_rows == 4
    assert result.partition_date == "1998-04-22" and result.dataset == MOVIELENS
    assert Path(result.report_uri).parent == tmp_path / "report"
    bad = frame.assign(weight=[1.0, 2.0, 3.0, 6.0])
    with pytest.raises(DataValidationError, match=r"interactions h failed 1 of") as info:
        validate_history(bad, users, items, report_dir=tmp_path / "bad", label="h")
    assert "column=weight, min=1, max=5): 1 unexpected value, e.g. [6]" in str(info.value)
    assert info.value.quarantine_uri is None
    assert json.loads((tmp_path / "bad" / "validation.json").read_text())["success"] is False


def test_validate_history_takes_the_spec_it_is_given(movielens: Settings, tmp_path: Path) -> None:
    # Shop events against the MovieLens home: the shop's spec, passed in, is what counts.
    shop_spec = load_spec(REPO / "datasets" / f"{SHOP}.yaml")
    frame = interactions([(1, 10, "purchase", 5.0, DAY)]).to_pandas()
    users = pd.DataFrame({"user_id": [1], "country": ["DE"], "event_timestamp": [DAY]})
    items = pd.DataFrame(
        {
            "item_id": [10],
            "name": ["Shoe"],
            "category": ["shoes"],
            "brand": [None],
            "price": [10.0],
            "event_timestamp": [DAY],
        }
    ).astype({"event_timestamp": "datetime64[us, UTC]"})
    users = users.astype({"event_timestamp": "datetime64[us, UTC]"})

    result = validate_history(frame, users, items, report_dir=tmp_path, spec=shop_spec)

    assert result.success and result.dataset == SHOP
    with pytest.raises(DataValidationError, match=r"column=event_type, value_set=\[interaction\]"):
        validate_history(frame, users, items, report_dir=tmp_path / "ml")
