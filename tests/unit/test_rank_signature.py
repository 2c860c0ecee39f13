"""The generic signature client: requests built from a frame by the signature's own inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from recops.errors import DataError
from recops.rank_signature import (
    CONTEXT_ATTRIBUTE,
    load_signatures,
    rank_inputs,
    signature_inputs,
    signature_request,
    weight_rmse,
)
from recops.tables import InputMissingError


@pytest.fixture(scope="module")
def toy_ranker(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A hand-written SavedModel shaped like the ranker: ``ratings = score + item id``.

    ``score`` is a float context feature, ``kind`` a string attribute whose length adds
    to the rating, so a test can compute every output by hand.
    """
    import tensorflow as tf

    class Toy(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            setattr(self, CONTEXT_ATTRIBUTE, tf.Variable([b"score"], trainable=False))
            specs = [
                tf.TensorSpec([None], tf.int64, name="user_id"),
                tf.TensorSpec([None], tf.string, name="kind"),
                tf.TensorSpec([None], tf.float32, name="score"),
                tf.TensorSpec([None, None], tf.int64, name="item_ids"),
            ]
            self.rank = tf.function(self._rank, input_signature=specs)

        def _rank(self, *args: tf.Tensor) -> dict[str, tf.Tensor]:
            _, kind, score, items = args
            score = tf.where(tf.math.is_nan(score), -100.0, score)
            length = tf.cast(tf.strings.length(kind), tf.float32)
            ratings = (score + length)[:, None] + tf.cast(items, tf.float32)
            return {"ratings": ratings, "scores": tf.sigmoid(ratings)}

    module = Toy()
    path = tmp_path_factory.mktemp("toy") / "model"
    rank = module.rank.get_concrete_function()
    tf.saved_model.save(module, str(path), signatures={"rank": rank})
    return str(path)


@pytest.fixture(scope="module")
def rank(toy_ranker: str) -> Any:
    return load_signatures(toy_ranker, ("rank",)).signatures["rank"]


def test_signature_request_converts_each_input_to_its_dtype(rank: Any) -> None:
    frame = pd.DataFrame(
        {"kind": ["ab", None], "score": [1.5, None], "extra": [0, 0]},
        index=pd.Index([7, 8], name="user_id"),
    )
    request = signature_request(rank, frame, item_ids=[[1, 2], [3, 4]])
    assert sorted(request) == ["item_ids", "kind", "score", "user_id"]
    assert request["user_id"].numpy().tolist() == [7, 8]  # from the index
    assert request["kind"].numpy().tolist() == [b"ab", b""]  # missing -> ""
    assert request["score"].dtype.name == "float32" and np.isnan(request["score"].numpy()[1])
    assert request["item_ids"].dtype.name == "int64"  # a Python list, cast
    out = rank(**request)["ratings"].numpy()
    np.testing.assert_allclose(out, [[4.5, 5.5], [-97.0, -96.0]])
    # A column beats nothing; a fixed value beats the column.
    fixed = signature_request(
        rank, frame.reset_index(), user_id=np.array([5, 6]), item_ids=[[1]] * 2
    )
    assert fixed["user_id"].numpy().tolist() == [5, 6]


def test_signature_request_names_what_is_wrong(rank: Any) -> None:
    frame = pd.DataFrame({"user_id": [1], "kind": ["a"]})
    with pytest.raises(DataError, match=r"\['score'\]"):
        signature_request(rank, frame, item_ids=[[1]])
    with pytest.raises(DataError, match="pass it fixed"):
        signature_request(rank, frame.assign(score=1.0, item_ids=0))
    with pytest.raises(DataError, match="takes no inputs"):
        signature_request(rank, frame.assign(score=1.0), item_ids=[[1]], age=[3])
    with pytest.raises(DataError, match="missing values"):
        signature_request(rank, frame.assign(score=1.0, user_id=[None]), item_ids=[[1]])


def test_rank_inputs_reads_the_recorded_context(toy_ranker: str, tmp_path: Path) -> None:
    import tensorflow as tf

    loaded = load_signatures(toy_ranker, ("rank",))
    assert rank_inputs(loaded, toy_ranker) == ("score",)
    assert sorted(signature_inputs(loaded.signatures["rank"])) == sorted(
        ["user_id", "kind", "score", "item_ids"]
    )

    class Bare(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="user_id")])  # type: ignore[untyped-decorator]
        def rank(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"scores": tf.cast(user_id, tf.float32)}

    bare = Bare()
    tf.saved_model.save(bare, str(tmp_path / "bare"), signatures={"rank": bare.rank})
    with pytest.raises(DataError, match="does not record its context"):
        rank_inputs(load_signatures(str(tmp_path / "bare"), ()), "bare")


def test_context_attribute_matches_the_exporter() -> None:
    from recops_models.dcn import CONTEXT_FEATURES_ATTRIBUTE

    assert CONTEXT_ATTRIBUTE == CONTEXT_FEATURES_ATTRIBUTE


def test_weight_rmse_by_hand(toy_ranker: str) -> None:
    rows = pd.DataFrame(
        {"user_id": [1, 2], "kind": ["", "a"], "score": [0.0, 1.0], "item_id": [2, 3]}
    )
    # Predicted ratings: 0 + 0 + 2 = 2 and 1 + 1 + 3 = 5.
    rmse = weight_rmse(toy_ranker, rows.assign(weight=[3.0, 5.0]), batch_size=1)
    assert rmse == pytest.approx(np.sqrt(0.5))
    with pytest.raises(DataError, match=r"\['score'\]"):
        weight_rmse(toy_ranker, rows.drop(columns="score").assign(weight=1.0))
    with pytest.raises(DataError, match="no rows"):
        weight_rmse(toy_ranker, rows.iloc[:0].assign(weight=1.0))


def test_load_signatures_names_what_is_missing(tmp_path: Path, toy_ranker: str) -> None:
    with pytest.raises(InputMissingError, match="model_dir not found"):
        load_signatures(str(tmp_path / "none"), ("rank",))
    with pytest.raises(DataError, match="lacks signature 'ping'"):
        load_signatures(toy_ranker, ("ping",))
