"""The dataset spec model: the shipped specs load, bad specs fail naming file and field."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from recops.dataset_spec import (
    ATTRIBUTE_KINDS,
    DatasetSpec,
    is_time_pattern,
    load_spec,
    spec_to_yaml,
)
from recops.errors import DataError
from recops.layout import layout_from_spec

ROOT = Path(__file__).resolve().parents[2]
MOVIELENS = ROOT / "datasets" / "movielens-100k.yaml"
SHOP = ROOT / "datasets" / "shop-synthetic.yaml"


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _shop() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(SHOP.read_text())
    return copy.deepcopy(raw)


def test_the_movielens_spec_declares_todays_contract() -> None:
    spec = load_spec(MOVIELENS)
    assert spec.name == "movielens-100k"
    assert (spec.users.key, spec.users.key_type) == ("user_id", "integer")
    assert (spec.items.key, spec.items.key_type) == ("item_id", "integer")
    assert spec.events.value is not None
    assert (spec.events.value.column, spec.events.value.range.low) == ("rating", 1)
    assert spec.events.value.range.high == 5
    assert spec.events.timestamp.format == "unix_seconds"
    users = {a.name: a for a in spec.users.attributes}
    assert users["occupation"].allowed is not None
    assert len(users["occupation"].allowed.values) == 21
    assert users["age"].range is not None
    assert (users["age"].range.low, users["age"].range.high) == (1, 120)
    genres = {a.name: a for a in spec.items.attributes}["genres"]
    assert (genres.kind, genres.separator) == ("multi_categorical", "|")
    assert genres.allowed is not None and len(genres.allowed.values) == 19
    assert spec.evaluation.protocols == ("random", "temporal")
    # No event types: every rating is a positive and makes the item seen.
    assert spec.event_types == () and spec.seen is None
    # Its runs pool each user's 20 newest ratings unless a run's Params say otherwise.
    assert spec.training.history_length == 20


def test_the_shop_spec_declares_string_keys_and_weighted_events() -> None:
    spec = load_spec(SHOP)
    assert (spec.users.key_type, spec.items.key_type) == ("string", "string")
    assert spec.events.event_type is not None
    assert spec.events.event_type.weights == {"view": 1, "add_to_cart": 3, "purchase": 5}
    assert spec.positive_types == ("purchase", "add_to_cart")
    assert spec.seen_types == ("view", "add_to_cart", "purchase")
    assert spec.events.value is None
    assert spec.events.timestamp.format == "iso8601"
    assert spec.training.history_length is None  # the history lowers its figures
    price = {a.name: a for a in spec.items.attributes}["price"]
    assert price.range is not None and (price.range.low, price.range.high) == (0, None)
    assert spec.file_paths(SHOP)["items"] == SHOP.parent / "shop-synthetic" / "products.csv"


@pytest.mark.parametrize("path", [MOVIELENS, SHOP], ids=lambda p: p.stem)
def test_a_spec_survives_a_round_trip_through_yaml(path: Path, tmp_path: Path) -> None:
    spec = load_spec(path)
    again = tmp_path / "again.yaml"
    again.write_text(spec_to_yaml(spec))
    assert load_spec(again) == spec


def test_short_forms_mean_the_long_forms() -> None:
    short = _shop()
    short["users"]["attributes"][0].update(not_null=True, allowed=["DE", "FR"])
    long = _shop()
    long["users"]["attributes"][0].update(
        not_null={"severity": "fail"}, allowed={"values": ["DE", "FR"], "severity": "fail"}
    )
    assert DatasetSpec.model_validate(short) == DatasetSpec.model_validate(long)


def _edit_kind(raw: dict[str, Any]) -> None:
    raw["items"]["attributes"][1]["kind"] = "colour"


def _edit_unknown_key(raw: dict[str, Any]) -> None:
    raw["events"]["colour"] = "red"


def _edit_positive(raw: dict[str, Any]) -> None:
    raw["events"]["event_type"]["positives"] = ["purchase", "click"]


def _edit_negative_positive(raw: dict[str, Any]) -> None:
    raw["events"]["event_type"]["negatives"] = ["purchase"]


def _edit_negative_unknown(raw: dict[str, Any]) -> None:
    raw["events"]["event_type"]["negatives"] = ["skip"]


def _edit_all_negative(raw: dict[str, Any]) -> None:
    del raw["events"]["event_type"]["positives"]
    raw["events"]["event_type"]["negatives"] = ["view", "add_to_cart", "purchase"]


def _edit_range(raw: dict[str, Any]) -> None:
    raw["items"]["attributes"][3]["range"] = [10, 1]


def _edit_name(raw: dict[str, Any]) -> None:
    raw["name"] = "../x"


def _edit_weight(raw: dict[str, Any]) -> None:
    raw["events"]["event_type"]["weights"]["view"] = 0


def _edit_seen(raw: dict[str, Any]) -> None:
    raw["seen"] = ["view", "wishlist"]


def _edit_duplicate_name(raw: dict[str, Any]) -> None:
    raw["users"]["attributes"].append({"name": "brand", "column": "fav", "kind": "text"})


def _edit_value_range(raw: dict[str, Any]) -> None:
    raw["events"]["value"] = {"column": "stars", "range": [1]}


def _edit_separator(raw: dict[str, Any]) -> None:
    raw["items"]["attributes"][1]["kind"] = "multi_categorical"


def _edit_split(raw: dict[str, Any]) -> None:
    raw["evaluation"]["random_split"] = {"train": 0.5, "valid": 0.1, "test": 0.1}


def _edit_severity(raw: dict[str, Any]) -> None:
    raw["users"]["attributes"][0]["allowed"] = {"values": ["DE"], "severity": "info"}


def _edit_reserved(raw: dict[str, Any]) -> None:
    raw["items"]["attributes"].append({"name": "weight", "column": "grams", "kind": "numeric"})


def _edit_history(raw: dict[str, Any]) -> None:
    raw["training"] = {"history_length": 500}


def _edit_cut(raw: dict[str, Any]) -> None:
    raw["evaluation"]["temporal_cut"] = 0.1


def _edit_time_name(raw: dict[str, Any]) -> None:
    raw["events"]["timestamp"]["format"] = "iso"


def _edit_time_pattern(raw: dict[str, Any]) -> None:
    raw["events"]["timestamp"]["format"] = "%H:%M on day %d"


def _edit_training_key(raw: dict[str, Any]) -> None:
    raw["training"] = {"epochs": 3}


BAD_SPECS = [
    (_edit_history, "training.history_length", "less than or equal to 200"),
    (_edit_training_key, "training.epochs", "unknown key"),
    (_edit_reserved, "items.attributes[4].name", "'weight' is reserved"),
    (_edit_kind, "items.attributes[1].kind", "'categorical', 'multi_categorical'"),
    (_edit_unknown_key, "events.colour", "unknown key"),
    (_edit_positive, "events.event_type.positives[1]", "'click' is not a declared"),
    (_edit_negative_positive, "events.event_type.negatives[0]", "'purchase' is a positive too"),
    (_edit_negative_unknown, "events.event_type.negatives[0]", "'skip' is not a declared"),
    (_edit_all_negative, "events.event_type.negatives", "every event type is negative"),
    (_edit_range, "items.attributes[3].range", "low (10) must be below high (1)"),
    (_edit_name, "name", "'../x' must be a letter"),
    (_edit_weight, "events.event_type.weights.view", "must be above 0"),
    (_edit_seen, "seen[1]", "'wishlist' is not a declared event type"),
    (_edit_duplicate_name, "items.attributes[2].name", "unique across users and items"),
    (_edit_value_range, "events.value.range", "a range is [low, high]"),
    (_edit_separator, "items.attributes[1].separator", "needs a separator"),
    (_edit_split, "evaluation.random_split", "must be 1, got 0.7"),
    (_edit_cut, "evaluation", "temporal_cut (0.1) must be above random_split.valid (0.1)"),
    (_edit_severity, "users.attributes[0].allowed.severity", "'fail' or 'warn'"),
    (_edit_time_name, "events.timestamp.format", "none of unix_seconds, unix_milliseconds"),
    (_edit_time_pattern, "events.timestamp.format", "does not hold a full date"),
]


@pytest.mark.parametrize(
    ("edit", "field", "says"),
    BAD_SPECS,
    ids=[edit.__name__.removeprefix("_edit_") for edit, _, _ in BAD_SPECS],
)
def test_a_bad_spec_names_its_file_and_field(
    edit: Callable[[dict[str, Any]], None], field: str, says: str, tmp_path: Path
) -> None:
    raw = _shop()
    edit(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(DataError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert f"{path}: field '{field}'" in message
    assert says in message
    assert message.endswith("hint: docs/datasets.md describes every field of a dataset spec")


def test_an_unknown_kind_lists_every_allowed_kind(tmp_path: Path) -> None:
    raw = _shop()
    _edit_kind(raw)
    with pytest.raises(DataError) as caught:
        load_spec(_write(tmp_path, raw))
    assert "(attribute 'category')" in str(caught.value)
    assert all(f"'{kind}'" in str(caught.value) for kind in ATTRIBUTE_KINDS)


@pytest.mark.parametrize(
    ("text", "says"),
    [("name: [unclosed\n", "not valid YAML"), ("- a list\n", "a mapping of fields")],
)
def test_a_file_that_is_no_spec_is_refused(text: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=says):
        load_spec(path)


def test_a_missing_spec_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read the dataset spec"):
        load_spec(tmp_path / "absent.yaml")


def test_importing_the_module_loads_neither_pandas_nor_yaml() -> None:
    code = "import sys, recops.dataset_spec; print('pandas' in sys.modules, 'yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_each_protocols_shares_come_from_the_evaluation_block() -> None:
    from recops.dataset_spec import EvaluationSpec, RandomSplit

    default = EvaluationSpec()
    # RecBole's 80/10/10 both ways; 1 - 0.9 is rounded, so a tenth of ten rows is a row.
    assert default.shares("random") == default.shares("temporal") == (0.8, 0.1, 0.1)
    custom = EvaluationSpec(
        protocols=("temporal",),
        random_split=RandomSplit(train=0.7, valid=0.15, test=0.15, seed=3),
        temporal_cut=0.75,
    )
    assert custom.shares("random") == (0.7, 0.15, 0.15)
    assert custom.shares("temporal") == (0.6, 0.15, 0.25)


def test_negatives_are_neither_positives_nor_hidden_from_seen(tmp_path: Path) -> None:
    raw = _shop()
    del raw["events"]["event_type"]["positives"]
    raw["events"]["event_type"]["weights"]["remove_from_cart"] = 0.5
    raw["events"]["event_type"]["negatives"] = ["remove_from_cart"]
    raw.pop("seen", None)  # every type, the refusal too: a removed item is not offered again
    spec = load_spec(_write(tmp_path, raw))
    assert spec.negative_types == ("remove_from_cart",)
    assert set(spec.positive_types) == {"view", "add_to_cart", "purchase"}
    assert "remove_from_cart" in spec.seen_types
    layout = layout_from_spec(spec)
    assert layout.negative_types == ("remove_from_cart",)
    assert "remove_from_cart" not in layout.positive_types


def test_a_strftime_pattern_is_a_timestamp_format(tmp_path: Path) -> None:
    raw = _shop()
    raw["events"]["timestamp"]["format"] = "%d/%m/%Y %H:%M"
    spec = load_spec(_write(tmp_path, raw))
    assert spec.events.timestamp.format == "%d/%m/%Y %H:%M"
    assert is_time_pattern(spec.events.timestamp.format)
    assert not any(is_time_pattern(f) for f in ("unix_seconds", "unix_milliseconds", "iso8601"))
