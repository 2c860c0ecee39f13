"""``recops.service.recommender``: requests hold exactly the signature; online values read back."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
from recops.service.recommender import model_inputs
from recops.service.state import ServedModel


def test_model_inputs_hold_exactly_the_signature() -> None:
    model = ServedModel(
        "m",
        1,
        {"user_id": "int64", "age": "float32", "gender": "string", "history_item_ids": "int64"},
    )
    out = model_inputs(model, 7, {"age": None, "gender": "F", "zip": "x"}, [5, 3])
    assert set(out) == set(model.inputs)
    assert out["user_id"].tolist() == [7] and out["user_id"].dtype == np.int64
    assert math.isnan(float(out["age"][0])) and out["age"].dtype == np.float32
    assert out["gender"].tolist() == [b"F"]
    assert out["history_item_ids"].tolist() == [[5, 3]]
    empty = model_inputs(model, 7, {}, [])
    assert empty["history_item_ids"].tolist() == [[-1]] and empty["gender"].tolist() == [b""]
    ranker = ServedModel("r", 1, {"user_id": "int64", "item_ids": "int64"})
    assert model_inputs(ranker, 7, {}, [], [4, 2])["item_ids"].tolist() == [[4, 2]]


def test_online_values_become_python_and_the_history_its_seen_items() -> None:
    from feast.protos.feast.types.Value_pb2 import Int64List, StringList, Value
    from recops.service.recommender import _python, _seen

    assert _python(Value(string_val="F")) == "F"
    assert _python(Value(float_val=2.5)) == 2.5
    assert _python(Value()) is None and _python(None) is None
    row = {
        "history_item_ids": Value(int64_list_val=Int64List(val=[9, 4, 9, 2])),
        "history_timestamps": Value(int64_list_val=Int64List(val=[4, 3, 2, 1])),
        "history_event_types": Value(string_list_val=StringList(val=["view", "buy", "buy", "x"])),
    }
    state = SimpleNamespace(layout=SimpleNamespace(seen_types=("view", "buy")))
    # Most recent first, each once, only the seen types.
    assert _seen(cast(Any, state), row) == [9, 4]
    assert _seen(cast(Any, state), {}) == []
