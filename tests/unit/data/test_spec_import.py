"""import_dataset: any spec's files, checked first, landed in the published layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from recops.config import Settings
from recops.data import (
    import_dataset,
    import_frames,
    infer_spec,
    list_partitions,
    list_staged,
    write_synthetic,
)
from recops.data.infer import spec_draft_yaml
from recops.data.keys import read_key_table
from recops.dataset_spec import load_spec
from recops.errors import DataError, DataValidationError
from recops.layout import INTERACTION_COLUMNS, active_layout, spec_path

DAYS = 4


@pytest.fixture
def shop_spec(tmp_path: Path) -> Path:
    return write_synthetic(
        tmp_path / "files", mode="shop", rows=600, users=25, items=40, days=DAYS, seed=2
    )


def _files(spec: Path) -> dict[str, Path]:
    return load_spec(spec).file_paths(spec)


def test_a_shop_log_lands_validated_with_interned_keys(settings: Settings, shop_spec: Path) -> None:
    result = import_dataset(shop_spec, settings, stage_last_days=1)

    shop = settings.for_dataset("shop-synthetic")
    assert result.source == "shop-synthetic" and result.users_uri == str(shop.users_path)
    assert len(list_partitions(shop)) == DAYS - 1 and len(list_staged(shop)) == 1
    assert Path(result.history_report_uri).is_file()
    # The spec is kept beside the data, with its files made absolute; stages read it.
    assert spec_path(shop) == shop.data_dir / "spec.yaml"
    kept = load_spec(spec_path(shop))
    assert kept.files is not None and Path(kept.files.events).is_absolute()
    layout = active_layout(shop)
    part = pd.read_parquet(list_partitions(shop)[0])
    assert tuple(part.columns) == INTERACTION_COLUMNS
    assert set(part["event_type"]) <= {"view", "add_to_cart", "purchase"}
    assert set(part["weight"]) <= {1.0, 3.0, 5.0}
    users = pd.read_parquet(shop.users_path)
    items = pd.read_parquet(shop.items_path)
    assert tuple(users.columns) == layout.user_columns
    assert tuple(items.columns) == layout.item_columns
    assert items["price"].dtype == "float64" and items["category"].map(type).eq(str).all()
    # Keys: customers are interned in sorted order, every event's key is known.
    keys = read_key_table(shop, "users")
    raw_users = pd.read_csv(_files(shop_spec)["users"], dtype=str)
    assert keys["key"].tolist() == sorted(raw_users["customer"])
    assert keys["id"].tolist() == list(range(1, len(keys) + 1))
    assert set(part["item_id"]) <= set(read_key_table(shop, "items")["id"])
    # The default dataset's folder is untouched.
    assert not settings.data_dir.exists()


def test_importing_twice_changes_nothing(settings: Settings, shop_spec: Path) -> None:
    # Everything staged: no history to validate, so this stays fast.
    first = import_dataset(shop_spec, settings, stage_last_days=DAYS)
    shop = settings.for_dataset("shop-synthetic")
    keys = shop.keys_dir / "items.parquet"
    before = keys.read_bytes()

    again = import_dataset(shop_spec, settings, stage_last_days=DAYS)

    assert first.staged_dates == again.staged_dates and len(first.staged_dates) == DAYS
    assert again.partitions_written == 0 and keys.read_bytes() == before


def test_explicit_files_override_the_spec_and_parquet_reads(
    settings: Settings, shop_spec: Path, tmp_path: Path
) -> None:
    files = _files(shop_spec)
    events = tmp_path / "events.parquet"
    pd.read_csv(files["events"], dtype=str).to_parquet(events)

    result = import_dataset(shop_spec, settings, files={"events": events}, stage_last_days=DAYS)

    assert result.n_interactions == len(pd.read_parquet(events))


def _no_data(settings: Settings) -> bool:
    return not (settings.home / "data").exists()


def test_a_missing_column_names_field_and_file_and_writes_nothing(
    settings: Settings, shop_spec: Path
) -> None:
    path = _files(shop_spec)["users"]
    pd.read_csv(path, dtype=str).rename(columns={"customer": "client"}).to_csv(path, index=False)

    with pytest.raises(DataError, match=r"'users\.key' names column 'customer'.*customers\.csv"):
        import_dataset(shop_spec, settings)
    assert _no_data(settings)


def test_duplicate_keys_and_bad_types_are_all_reported(settings: Settings, shop_spec: Path) -> None:
    path = _files(shop_spec)["items"]
    items = pd.read_csv(path, dtype=str)
    items.loc[1, "sku"] = items.loc[0, "sku"]
    items.loc[2, "price"] = "cheap"
    items.to_csv(path, index=False)

    with pytest.raises(DataError) as caught:
        import_dataset(shop_spec, settings)
    message = str(caught.value)
    assert "'items.key' names column 'sku' as the key" in message
    assert "'items.attributes[3].kind' declares numeric" in message and "'cheap'" in message
    assert _no_data(settings)


def test_an_unknown_kind_is_a_spec_error(settings: Settings, shop_spec: Path) -> None:
    shop_spec.write_text(shop_spec.read_text().replace("kind: text", "kind: colour"))

    with pytest.raises(DataError, match=r"items\.attributes\[0\]\.kind.*'colour'"):
        import_dataset(shop_spec, settings)
    assert _no_data(settings)


def test_a_missing_events_file_or_table_is_named(settings: Settings, tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    text = (Path(__file__).resolve().parents[3] / "datasets" / "movielens-100k.yaml").read_text()
    spec.write_text(text)
    with pytest.raises(DataError, match=r"'files\.events' is missing"):
        import_dataset(spec, settings)
    with pytest.raises(DataError, match="file not found"):
        import_dataset(spec, settings, files={"events": tmp_path / "none.csv"})
    (tmp_path / "e.csv").write_text("user_id,item_id,rating,timestamp\n1,2,3,900000000\n")
    with pytest.raises(DataError, match=r"'users\.attributes' declares 4 attributes"):
        import_dataset(spec, settings, files={"events": tmp_path / "e.csv"})
    assert _no_data(settings)


def test_a_history_that_fails_its_contract_leaves_no_spec_or_keys(
    settings: Settings, shop_spec: Path
) -> None:
    path = _files(shop_spec)["items"]
    items = pd.read_csv(path, dtype=str)
    # A product without its required category: the items suite fails in validation.
    items.loc[0, "category"] = None
    items.to_csv(path, index=False)

    with pytest.raises(DataValidationError, match="category"):
        import_dataset(shop_spec, settings, stage_last_days=1)

    shop = settings.for_dataset("shop-synthetic")
    assert not (shop.data_dir / "spec.yaml").exists()
    assert not shop.keys_dir.joinpath("users.parquet").exists()
    assert not list_partitions(shop) and not list_staged(shop)


def test_new_customers_and_repeated_rows_land_without_blocking(
    settings: Settings, shop_spec: Path
) -> None:
    # Real logs: a customer who signed up after the customers file was exported, and a
    # delivery that repeated rows. The first is kept (no profile row: a warning), the
    # repeated rows once each.
    path = _files(shop_spec)["events"]
    events = pd.read_csv(path, dtype=str)
    original = len(events)
    events.loc[0, "customer"] = "c-signed-up-later"
    events = pd.concat([events, events.iloc[[1, 2]]], ignore_index=True)
    events.to_csv(path, index=False)

    result = import_dataset(shop_spec, settings, stage_last_days=0)

    assert result.n_interactions == original
    shop = settings.for_dataset("shop-synthetic")
    keys = read_key_table(shop, "users").set_index("key")["id"]
    new = int(keys["c-signed-up-later"])
    assert new not in set(pd.read_parquet(shop.users_path)["user_id"])
    published = pd.concat(pd.read_parquet(p) for p in list_partitions(shop))
    assert len(published) == original and (published["user_id"] == new).sum() == 1
    report = Path(result.history_report_uri).read_text()
    assert "expect_column_values_to_be_in_set(column=user_id" in report


def test_events_on_items_outside_the_catalogue_are_named_by_their_keys(
    settings: Settings, shop_spec: Path
) -> None:
    files = _files(shop_spec)
    events = pd.read_csv(files["events"], dtype=str)
    events.loc[[0, 1], "sku"] = "sku-discontinued"
    events.to_csv(files["events"], index=False)

    with pytest.raises(DataError) as caught:
        import_dataset(shop_spec, settings)
    message = str(caught.value)
    assert (
        f"{files['events'].name}: 2 event(s) name 1 sku value(s) that "
        f"{files['items'].name} does not list"
    ) in message
    assert "'sku-discontinued'" in message and "'items.key' = 'sku'" in message
    assert _no_data(settings)


def test_a_retail_export_lands_as_it_is(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A point-of-sale export: ';'-separated, PascalCase columns, US dates in a strftime
    # pattern, float-written customer numbers, guest checkouts without a customer.
    customers = ["17850.0", "17850.0", "", "13047.0", "13047.0"]  # 1 in 5 is a guest
    lines = ["InvoiceNo;StockCode;InvoiceDate;CustomerID;Country"] + [
        f"{536365 + i};{['85123A', '71053', '22633', '84879'][i % 4]};"
        f"{12 if i < 8 else 1}/{1 + i % 8 if i < 8 else 13 + i % 7}/{2010 if i < 8 else 2011} "
        f"{8 + i % 10}:{i:02d};{customers[i % 5]};{['United Kingdom', 'France'][i % 2]}"
        for i in range(15)
    ]
    events = tmp_path / "online_retail.csv"
    events.write_text("\n".join(lines) + "\n")
    spec = infer_spec("retail", events, spec_dir=tmp_path)
    assert (spec.events.user_key, spec.events.item_key) == ("CustomerID", "StockCode")
    assert spec.events.timestamp.format == "%m/%d/%Y %H:%M"
    assert spec.events.event_type is None  # a country says where, not what happened
    spec_file = tmp_path / "retail.yaml"
    spec_file.write_text(spec_draft_yaml(spec))
    assert "the time pattern '%m/%d/%Y %H:%M' (day or month first?)" in spec_file.read_text()

    with caplog.at_level("WARNING", logger="recops.data.convert"):
        result = import_dataset(spec_file, settings, stage_last_days=0)

    assert result.n_interactions == 12  # the 3 guest checkouts are left out, said so
    assert "3 of 15 events (20.0 %) are left out" in caplog.text
    assert "'CustomerID' (spec field 'events.user_key')" in caplog.text
    retail = settings.for_dataset("retail")
    published = pd.concat(pd.read_parquet(p) for p in list_partitions(retail))
    assert published["event_timestamp"].min() == pd.Timestamp("2010-12-01T08:00:00Z")
    assert published["event_timestamp"].dt.year.max() == 2011


def test_a_log_whose_events_all_lack_a_key_is_refused(settings: Settings, tmp_path: Path) -> None:
    events = pd.DataFrame({"customer": [None, None], "sku": ["a", "b"],
                           "ts": ["2024-01-01", "2024-01-02"]})  # fmt: skip
    spec = infer_spec("guests", events.assign(customer=["u1", "u2"]))
    with pytest.raises(DataError, match="no event names its user, its item and its time"):
        import_frames(spec, {"events": events}, settings)


def test_one_log_that_carries_its_attributes_lands_with_profiles(
    settings: Settings, tmp_path: Path
) -> None:
    # No users or items file: every event repeats its product's category and price and
    # its customer's country. The price changed once; the newest value is the profile's.
    rows = []
    for n in range(40):
        user, item = f"u{n % 8}", f"sku-{n % 6}"
        price = 10.0 + n % 6 + (0.5 if item == "sku-0" and n >= 30 else 0.0)
        ts = f"2024-03-{1 + n // 4:02d}T10:{n:02d}:00Z"
        rows.append({"customer": user, "sku": item, "ts": ts,
                     "category": f"cat-{n % 6 % 3}", "category_id": str(100 + n % 6 % 3),
                     "price": str(price), "country": ["DE", "FR", "IT"][n % 8 % 3],
                     "quantity": str(1 + n % 5)})  # fmt: skip
    events = tmp_path / "log.csv"
    pd.DataFrame(rows).to_csv(events, index=False)

    spec = infer_spec("onelog", events, spec_dir=tmp_path)
    kinds = {a.column: a.kind for a in spec.items.attributes}
    assert kinds == {"category": "categorical", "category_id": "categorical", "price": "numeric"}
    assert {a.column: a.kind for a in spec.users.attributes} == {"country": "categorical"}
    assert spec.files is not None and spec.files.items == spec.files.users == "log.csv"
    spec_file = tmp_path / "onelog.yaml"
    spec_file.write_text(spec_draft_yaml(spec))
    assert "the users and items attributes: columns the events repeat" in spec_file.read_text()

    result = import_dataset(spec_file, settings, stage_last_days=0)

    assert result.n_interactions == 40 and (result.n_users, result.n_items) == (8, 6)
    onelog = settings.for_dataset("onelog")
    items = pd.read_parquet(onelog.items_path)
    keys = read_key_table(onelog, "items").set_index("key")["id"]
    newest = items.set_index("item_id").loc[int(keys["sku-0"])]
    assert newest["price"] == 10.5 and newest["category"] == "cat-0"
    users = pd.read_parquet(onelog.users_path)
    assert sorted(users["country"]) == ["DE"] * 3 + ["FR"] * 3 + ["IT"] * 2


def _one_log_spec(tmp_path: Path, items_key: str) -> Path:
    """A spec whose items file is its events file ``log.csv`` (brand on every event)."""
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: onelog\nusers: {key: customer, key_type: string}\n"
        f"items: {{key: {items_key}, key_type: string, attributes: [{{name: brand, "
        "column: brand, kind: categorical}]}\nevents: {user_key: customer, item_key: sku, "
        "timestamp: {column: ts, format: iso8601}}\nfiles: {events: log.csv, items: log.csv}\n"
    )
    return spec


def test_a_profile_from_the_events_needs_the_events_key(settings: Settings, tmp_path: Path) -> None:
    events = tmp_path / "log.csv"
    pd.DataFrame({"customer": ["u1"], "sku": ["a"], "ts": ["2024-03-01"], "brand": ["x"]}).to_csv(
        events, index=False
    )
    spec = _one_log_spec(tmp_path, items_key="product")
    with pytest.raises(DataError, match=r"'items.key' is 'product', but files.items is the events"):
        import_dataset(spec, settings, stage_last_days=0)


def test_a_bad_time_in_a_log_that_carries_profiles_is_named(
    settings: Settings, tmp_path: Path
) -> None:
    events = tmp_path / "log.csv"
    pd.DataFrame(
        {"customer": ["u1", "u2"], "sku": ["a", "b"], "ts": ["2024-03-01", "yesterday"],
         "brand": ["x", "y"]}
    ).to_csv(events, index=False)  # fmt: skip
    spec = _one_log_spec(tmp_path, items_key="sku")
    with pytest.raises(DataError, match=r"column 'ts' of log.csv holds non-ISO 8601 times"):
        import_dataset(spec, settings, stage_last_days=0)
