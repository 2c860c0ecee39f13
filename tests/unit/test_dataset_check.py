"""check_columns: frames that do not fit a spec fail naming the spec field and the column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from recops.dataset_check import check_columns
from recops.dataset_spec import DatasetSpec, load_spec
from recops.errors import DataError

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


@pytest.fixture(scope="module")
def shop() -> DatasetSpec:
    return load_spec(DATASETS / "shop-synthetic.yaml")


@pytest.fixture(scope="module")
def movielens() -> DatasetSpec:
    return load_spec(DATASETS / "movielens-100k.yaml")


def _shop_frames() -> dict[str, pd.DataFrame]:
    return {
        "events": pd.DataFrame(
            {
                "customer": ["c-000196", "c-000007"],
                "sku": ["SKU-16341", "SKU-00002"],
                "ts": ["2024-03-01T10:00:00Z", "2024-03-02T11:30:00+01:00"],
                "event": ["view", "purchase"],
            }
        ),
        "users": pd.DataFrame({"customer": ["c-000196", "c-000007"], "country": ["DE", "FR"]}),
        "items": pd.DataFrame(
            {
                "sku": ["SKU-16341", "SKU-00002"],
                "name": ["red shoe", "blue hat"],
                "category": ["shoes", "hats"],
                "brand": ["acme", None],
                "price": [49.9, 12],
            }
        ),
    }


def _movielens_frames() -> dict[str, pd.DataFrame]:
    return {
        "events": pd.DataFrame(
            {"user_id": [1, 2], "item_id": [10, 20], "rating": [4, 5], "timestamp": [8e8, 9e8]}
        ),
        "users": pd.DataFrame(
            {
                "user_id": ["1", "2"],  # read as text, as the RecBole loader reads it
                "age": [24, 53],
                "gender": ["M", "F"],
                "occupation": ["technician", "other"],
                "zip_code": ["85711", "94043"],
            }
        ),
        "items": pd.DataFrame(
            {
                "item_id": [10, 20],
                "title": ["Toy Story (1995)", "GoldenEye (1995)"],
                "release_year": [1995, 0],
                "genres": ["Animation|Comedy", "Action"],
            }
        ),
    }


def _problems(spec: DatasetSpec, frames: dict[str, pd.DataFrame]) -> list[str]:
    with pytest.raises(DataError) as caught:
        check_columns(spec, frames)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"dataset {spec.name!r}: the files do not fit the spec"
    assert lines[-1].startswith("hint: ")
    return [line.removeprefix("- ") for line in lines[1:-1]]


def test_good_frames_pass(shop: DatasetSpec, movielens: DatasetSpec) -> None:
    check_columns(shop, _shop_frames())  # raises on any problem
    check_columns(movielens, _movielens_frames())  # raises on any problem


def test_a_missing_column_names_the_field_the_file_and_its_columns(shop: DatasetSpec) -> None:
    frames = _shop_frames()
    frames["users"] = frames["users"].rename(columns={"customer": "client"})
    assert _problems(shop, frames) == [
        "spec field 'users.key' names column 'customer', which customers.csv lacks "
        "(columns: client, country)"
    ]


def test_a_missing_attribute_column_names_the_attribute_field(shop: DatasetSpec) -> None:
    frames = _shop_frames()
    frames["items"] = frames["items"].drop(columns=["brand"])
    [problem] = _problems(shop, frames)
    assert problem.startswith(
        "spec field 'items.attributes[2].column' names column 'brand', which products.csv lacks"
    )


def test_a_string_in_an_integer_key_names_the_type_field_and_column(
    movielens: DatasetSpec,
) -> None:
    frames = _movielens_frames()
    frames["events"]["user_id"] = ["1", "c-000196"]
    assert _problems(movielens, frames) == [
        "spec field 'users.key_type' declares integer keys, but column 'user_id' of "
        "the events table holds non-integers, e.g. 'c-000196'"
    ]


def test_fractions_and_gaps_in_an_integer_key_are_refused(movielens: DatasetSpec) -> None:
    frames = _movielens_frames()
    frames["items"]["item_id"] = [10.5, None]
    [problem] = _problems(movielens, frames)
    assert "'users.key_type'" not in problem and "'items.key_type'" in problem
    assert "column 'item_id' of the items table holds 1 empty values" in problem


def test_duplicate_keys_name_the_key_field_and_column(shop: DatasetSpec) -> None:
    frames = _shop_frames()
    frames["items"] = pd.concat([frames["items"], frames["items"].head(1)])
    assert _problems(shop, frames) == [
        "spec field 'items.key' names column 'sku' as the key, but products.csv holds "
        "1 key more than once, e.g. 'SKU-16341'"
    ]


def test_column_types_the_spec_cannot_take_are_each_reported(shop: DatasetSpec) -> None:
    frames = _shop_frames()
    frames["items"]["price"] = ["cheap", 3]
    frames["events"]["ts"] = ["yesterday", "2024-03-01"]
    frames["events"]["event"] = ["view", "click"]
    assert _problems(shop, frames) == [
        "spec field 'items.attributes[3].kind' declares numeric, but column 'price' of "
        "products.csv holds non-numbers, e.g. 'cheap'",
        "spec field 'events.timestamp.format' declares iso8601 times, but column 'ts' of "
        "events.csv holds non-ISO 8601 times, e.g. 'yesterday'",
        "spec field 'events.event_type.weights' declares the types view, add_to_cart, "
        "purchase, but column 'event' of events.csv holds undeclared types, e.g. 'click'",
    ]


def test_sources_name_the_files_the_frames_came_from(movielens: DatasetSpec) -> None:
    frames = {"events": _movielens_frames()["events"].assign(rating=["4", "five"])}
    with pytest.raises(DataError) as caught:
        check_columns(movielens, frames, sources={"events": "u.data"})
    assert (
        "spec field 'events.value.column' declares numbers, but column 'rating' of u.data "
        "holds non-numbers, e.g. 'five'"
    ) in str(caught.value)


def test_parsed_timestamps_fit_either_format(shop: DatasetSpec, movielens: DatasetSpec) -> None:
    stamps = pd.to_datetime(["2024-03-01", "2024-03-02"], utc=True)
    shop_events = _shop_frames()["events"].assign(ts=stamps)
    ml_events = _movielens_frames()["events"].assign(timestamp=stamps)
    check_columns(shop, {"events": shop_events})  # raises on any problem
    check_columns(movielens, {"events": ml_events})  # raises on any problem


def test_empty_event_times_and_values_are_refused(movielens: DatasetSpec) -> None:
    frames = _movielens_frames()
    frames["events"] = frames["events"].assign(timestamp=[8e8, None], rating=[None, 4])
    problems = _problems(movielens, frames)
    assert any("'events.timestamp.format'" in p and "1 empty values" in p for p in problems)
    assert any("'events.value.column'" in p and "'rating'" in p for p in problems)


def test_a_file_without_a_header_line_is_named_as_such(movielens: DatasetSpec) -> None:
    frames = _movielens_frames()
    first = frames["events"].iloc[0]
    frames["events"] = frames["events"].iloc[1:].set_axis([str(v) for v in first], axis=1)
    with pytest.raises(DataError, match="seems to have no header line") as info:
        check_columns(movielens, {"events": frames["events"]})
    assert "spec field 'events.user_key' names column 'user_id'" in str(info.value)


def test_times_in_a_strftime_pattern_are_checked(shop: DatasetSpec) -> None:
    stamp = shop.events.timestamp.model_copy(update={"format": "%d/%m/%Y %H:%M"})
    spec = shop.model_copy(update={"events": shop.events.model_copy(update={"timestamp": stamp})})
    frames = _shop_frames()
    frames["events"]["ts"] = ["01/03/2024 10:00", "2024-03-02"]
    with pytest.raises(
        DataError, match=r"times not written as '%d/%m/%Y %H:%M', e.g. '2024-03-02'"
    ):
        check_columns(spec, {"events": frames["events"]})
    frames["events"]["ts"] = ["01/03/2024 10:00", "02/03/2024 11:30"]
    check_columns(spec, {"events": frames["events"]})
