"""Unit tests for ``recops.serving.codec``: the JSON depth guard and TF Serving's formats.

No server runs here: request bodies are parsed and converted to tensors, and outputs back
to JSON, in the row and columnar formats.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from recops.errors import ServingError
from recops.serving.codec import (
    TensorMeta,
    json_depth,
    json_to_tensors,
    parse_json_body,
    tensors_to_json,
)

# -- JSON depth guard ----------------------------------------------------------------------


def test_json_depth_counts_structure_not_strings() -> None:
    assert json_depth(b"1") == 0
    assert json_depth(b'{"a": [1, [2]]}') == 3
    assert json_depth(b'{"a": "[[[[[[", "b": "\\"[[[["}') == 1
    assert json_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000


def test_parse_json_body_rejects_before_parsing() -> None:
    with pytest.raises(ServingError, match="nesting depth") as info:
        parse_json_body(b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert info.value.http_status == 400
    for body, message in [
        (b"", "empty"),
        (b'{"instances": [1,', "JSON Parse error"),
        (b"[1, 2]", "Is not object"),
        (b"\xff\xfe{", "JSON Parse error"),
    ]:
        with pytest.raises(ServingError, match=message) as info:
            parse_json_body(body)
        assert info.value.code == "INVALID_ARGUMENT"
    assert parse_json_body(b'{"inputs": [NaN]}')["inputs"][0] != 0  # NaN accepted, like TF Serving


# -- JSON -> tensors --------------------------------------------------------------------------

ONE_INPUT = {"user_id": TensorMeta("int64", (None,))}
TWO_INPUTS = {"user_id": TensorMeta("int64", (None,)), "item_id": TensorMeta("int64", (None,))}


def test_row_format_stacks_instances() -> None:
    arrays, fmt = json_to_tensors({"instances": [{"user_id": 1}, {"user_id": 2}]}, ONE_INPUT)
    assert fmt == "row"
    assert arrays["user_id"].dtype == np.int64
    assert arrays["user_id"].tolist() == [1, 2]
    # With one input the instances may be bare values.
    bare, _ = json_to_tensors({"instances": [1, 2]}, ONE_INPUT)
    assert bare["user_id"].tolist() == [1, 2]
    # Each instance may itself be a tensor.
    feats = {"x": TensorMeta("float32", (None, 2))}
    arrays, _ = json_to_tensors({"instances": [{"x": [1, 2.5]}, {"x": [3, 4]}]}, feats)
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (2, 2)


def test_columnar_format_takes_whole_tensors() -> None:
    arrays, fmt = json_to_tensors({"inputs": {"user_id": [1, 2], "item_id": [3, 4]}}, TWO_INPUTS)
    assert fmt == "columnar"
    assert arrays["item_id"].tolist() == [3, 4]
    bare, _ = json_to_tensors({"inputs": [5]}, ONE_INPUT)
    assert bare["user_id"].tolist() == [5]


def test_strings_and_base64() -> None:
    meta = {"q": TensorMeta("string", (None,))}
    blob = base64.b64encode(b"\x00\xff").decode()
    arrays, _ = json_to_tensors({"instances": ["héllo", {"b64": blob}]}, meta)
    assert arrays["q"].tolist() == ["héllo".encode(), b"\x00\xff"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"instances": [{"user_id": 1.5}]}, "is not of expected type: int64"),
        ({"instances": [{"user_id": True}]}, "is not of expected type: int64"),
        ({"instances": [{"user_id": "7"}]}, "is not of expected type: int64"),
        ({"instances": [{"user_id": 2**70}]}, "out of range"),
        ({"instances": [{"item_id": 1}]}, "keys must be equal to: user_id"),
        ({"instances": [{"user_id": 1}, 2]}, "Expecting object"),
        ({"instances": []}, "No values"),
        ({"instances": {"user_id": 1}}, "list/array"),
        ({"inputs": {"user_id": [[1], [2, 3]]}}, "unexpected size"),
        ({"inputs": {"user_id": [[1], 2]}}, "incorrect level"),
        ({"inputs": {"item_id": [1]}}, "Missing named input: user_id"),
        ({"inputs": [1], "instances": [1]}, "only one of"),
        ({"signature_name": "x"}, "Missing 'inputs' or 'instances'"),
    ],
)
def test_bad_requests_are_invalid_argument(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ServingError, match=message) as info:
        json_to_tensors(doc, ONE_INPUT)
    assert info.value.code == "INVALID_ARGUMENT"
    assert info.value.http_status == 400


def test_several_inputs_need_objects() -> None:
    with pytest.raises(ServingError, match="expecting list of objects"):
        json_to_tensors({"instances": [1, 2]}, TWO_INPUTS)
    with pytest.raises(ServingError, match="expecting an object"):
        json_to_tensors({"inputs": [1, 2]}, TWO_INPUTS)
    with pytest.raises(ServingError, match="Expecting shape"):
        json_to_tensors(
            {"instances": [{"user_id": 1, "item_id": 1}, {"user_id": [1], "item_id": 1}]},
            TWO_INPUTS,
        )


# -- tensors -> JSON ---------------------------------------------------------------------------


def test_row_output_single_and_several() -> None:
    ids = np.array([[3, 1], [2, 0]], dtype=np.int64)
    scores = np.array([[0.5, 0.25], [1.0, 0.0]], dtype=np.float32)
    assert tensors_to_json({"item_ids": ids}, "row") == {"predictions": [[3, 1], [2, 0]]}
    both = tensors_to_json({"item_ids": ids, "scores": scores}, "row")
    assert both == {
        "predictions": [
            {"item_ids": [3, 1], "scores": [0.5, 0.25]},
            {"item_ids": [2, 0], "scores": [1.0, 0.0]},
        ]
    }
    with pytest.raises(ServingError, match="inconsistent batch size"):
        tensors_to_json({"a": ids, "b": np.zeros(3)}, "row")


def test_columnar_output_single_and_several() -> None:
    ids = np.array([[3, 1]], dtype=np.int64)
    assert tensors_to_json({"item_ids": ids}, "columnar") == {"outputs": [[3, 1]]}
    both = tensors_to_json({"item_ids": ids, "n": np.array(2)}, "columnar")
    assert both == {"outputs": {"item_ids": [[3, 1]], "n": 2}}


def test_string_outputs() -> None:
    out = tensors_to_json(
        {
            "title": np.array([b"Heat", b"\xff"], dtype=object),
            "raw_bytes": np.array([b"a"], dtype=object),
        },
        "columnar",
    )
    assert out["outputs"]["title"] == ["Heat", {"b64": base64.b64encode(b"\xff").decode()}]
    assert out["outputs"]["raw_bytes"] == [{"b64": "YQ=="}]
    json.dumps(out)  # serialisable as is
