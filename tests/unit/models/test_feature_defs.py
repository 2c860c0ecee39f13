"""``recops_models.feature_defs``: what each attribute is, and what training learns of it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from recops_models.feature_defs import (
    TEXT_BUCKETS,
    FeatureDef,
    encoded_from_json,
    encoded_to_json,
    fit_features,
    raw_inputs,
    split_values,
)

DEFS = (
    FeatureDef("colour", "categorical"),
    FeatureDef("tags", "multi_categorical", "|"),
    FeatureDef("name", "text"),
    FeatureDef("price", "numeric"),
)
FRAME = pd.DataFrame(
    {
        "colour": ["red", None, "blue", "red"],
        "tags": ["a|b", "b", None, " c | a "],
        "name": ["Red shoe", "x", None, "y"],
        "price": [1.0, np.nan, 3.0, 5.0],
    }
)


def test_fit_learns_vocabularies_and_statistics_ignoring_missing_values() -> None:
    colour, tags, name, price = fit_features(DEFS, FRAME)

    assert colour.vocab == ("blue", "red")  # no "" for the missing value
    assert tags.vocab == ("a", "b", "c") and tags.separator == "|"
    assert name.buckets == TEXT_BUCKETS and name.vocab == ()
    assert price.mean == 3.0 and np.isclose(price.std, np.std([1.0, 3.0, 5.0]))


def test_a_constant_numeric_has_unit_spread() -> None:
    (encoded,) = fit_features((FeatureDef("n", "numeric"),), {"n": np.array([2.0, 2.0])})
    assert encoded.std == 1.0 and encoded.mean == 2.0


def test_raw_inputs_are_strings_or_float32_with_missing_kept_visible() -> None:
    inputs = raw_inputs(DEFS, FRAME)

    assert inputs["colour"].tolist() == ["red", "", "blue", "red"]
    assert inputs["tags"][2] == ""
    assert inputs["price"].dtype == np.float32 and np.isnan(inputs["price"][1])


def test_split_values_strips_and_drops_empties() -> None:
    assert split_values(FRAME["tags"], "|") == [["a", "b"], ["b"], [], ["c", "a"]]


def test_encoded_features_round_trip_through_json() -> None:
    encoded = fit_features(DEFS, FRAME)
    assert encoded_from_json(json.loads(json.dumps(encoded_to_json(encoded)))) == encoded
