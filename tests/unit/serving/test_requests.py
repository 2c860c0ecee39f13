"""Unit tests for ``recops.serving.requests``: instances built from a signature's inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from recops.errors import DataError
from recops.serving.requests import json_value, metadata_inputs, row_instances


def _metadata(inputs: dict[str, str]) -> dict[str, object]:
    """A model server's metadata reply for one ``serving_default`` signature."""
    return {
        "model_spec": {"name": "m", "version": "1"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": {
                            name: {"dtype": dtype, "name": f"serving_default_{name}:0"}
                            for name, dtype in inputs.items()
                        }
                    }
                }
            }
        },
    }


def test_metadata_inputs_reads_names_and_dtypes() -> None:
    reply = _metadata({"user_id": "DT_INT64", "country": "DT_STRING", "spend": "DT_FLOAT"})
    assert metadata_inputs(reply) == {"user_id": "int64", "country": "string", "spend": "float32"}
    with pytest.raises(DataError, match="model 'm' serves no signature 'rank'"):
        metadata_inputs(reply, "rank")


def test_row_instances_hold_exactly_the_inputs_with_missing_values_filled() -> None:
    frame = pd.DataFrame(
        {
            "user_id": np.array([3, 4], dtype=np.int64),
            "country": ["fr", None],
            "spend": [np.float64(2.5), np.nan],
            "not_an_input": ["x", "y"],
        }
    )
    inputs = {"user_id": "int64", "country": "string", "spend": "float32", "item_ids": "int64"}
    rows = row_instances(frame, inputs, item_ids=[np.array([7, 8]), [9, 10]])
    assert rows[0] == {"user_id": 3, "country": "fr", "spend": 2.5, "item_ids": [7, 8]}
    assert rows[1]["country"] == "" and math.isnan(rows[1]["spend"])
    assert rows[1]["item_ids"] == [9, 10]
    # JSON-ready: plain Python types, never numpy scalars.
    assert [type(v) for v in rows[0].values()] == [int, str, float, list]
    assert all(type(i) is int for i in rows[0]["item_ids"])


def test_row_instances_name_what_the_data_lacks() -> None:
    frame = pd.DataFrame({"user_id": [1]})
    with pytest.raises(DataError, match=r"inputs \['region'\].*\['user_id'\]"):
        row_instances(frame, {"user_id": "int64", "region": "string"})
    with pytest.raises(DataError, match="2 values given for 1 rows"):
        row_instances(frame, {"user_id": "int64", "item_ids": "int64"}, item_ids=[[1], [2]])
    # An index level counts as a column.
    indexed = pd.DataFrame({"spend": [1.0]}, index=pd.Index([5], name="user_id"))
    assert row_instances(indexed, {"user_id": "int64", "spend": "float32"}) == [
        {"user_id": 5, "spend": 1.0}
    ]


def test_json_value_converts_by_dtype() -> None:
    assert json_value(b"caf\xc3\xa9", "string") == "café"
    assert json_value(np.int64(4), "string") == "4"
    assert json_value(None, "int64") == 0
    assert json_value(np.float32(1.5), "float32") == 1.5
    assert math.isnan(json_value(pd.NA, "float32"))
    assert json_value(np.array([[1, 2]]), "int64") == [[1, 2]]
