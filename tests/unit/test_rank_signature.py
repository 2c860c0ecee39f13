"""The ``rank`` request the ranker's signature takes, built from a frame of users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recops.errors import DataError
from recops.rank_signature import load_signatures, rank_request
from recops.tables import InputMissingError


def test_rank_request_takes_user_ids_from_a_column_or_the_index() -> None:
    profiles = pd.DataFrame(
        {"age": [30, 40], "gender": ["M", "F"], "occupation": ["x", "y"], "activity": [1, 2]},
        index=pd.Index([7, 8], name="user_id"),
    )
    items = np.array([[1, 2], [3, 4]])
    request = rank_request(profiles, items, ("activity",))
    assert sorted(request) == ["activity", "age", "gender", "item_ids", "occupation", "user_id"]
    assert request["user_id"].numpy().tolist() == [7, 8]
    assert request["item_ids"].numpy().tolist() == [[1, 2], [3, 4]]
    assert request["activity"].dtype.name == "float32"
    assert request["gender"].numpy().tolist() == [b"M", b"F"]
    with_column = rank_request(profiles.reset_index().assign(user_id=[5, 6]), items, ())
    assert with_column["user_id"].numpy().tolist() == [5, 6]
    assert "activity" not in with_column


def test_load_signatures_names_what_is_missing(tmp_path: Path) -> None:
    import tensorflow as tf

    with pytest.raises(InputMissingError, match="model_dir not found"):
        load_signatures(str(tmp_path / "none"), ("rank",))

    class Empty(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[])  # type: ignore[untyped-decorator]
        def ping(self) -> dict[str, tf.Tensor]:
            return {"ok": tf.constant(1)}

    module = Empty()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"ping": module.ping})
    assert "ping" in load_signatures(str(tmp_path / "m"), ("ping",)).signatures
    with pytest.raises(DataError, match="lacks signature 'rank'"):
        load_signatures(str(tmp_path / "m"), ("rank",))
