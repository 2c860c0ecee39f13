"""The TFLite edge artifact: indexed inputs prepared in Python, top-k agreeing with float.

Threshold: the dynamic-range artifact (int8 weights, float activations) must share on
average at least 80 % of its top-10 with the float tower's; full int8 at least 60 %
(activations on 256 levels reorder near-ties). A broken conversion (wrong inputs, mixed-up
features) shares about 10/150 at random.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _tiny_tower import Tiny, train_tiny
from recops_models.feature_defs import raw_inputs
from recops_models.tf_env import tensorflow

tf = tensorflow()

from recops_models.edge import (  # noqa: E402
    TFLiteScorer,
    convert_retrieval_tflite,
    edge_input_names,
    edge_inputs,
    edge_user_tower,
)
from recops_models.two_tower import (  # noqa: E402
    HISTORY_INPUT,
    HISTORY_PAD,
    MASKED_SCORE,
    candidate_embeddings,
    towers_from_training_model,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A two-tower trained a few epochs on the tiny data."""
    return train_tiny(tmp_path_factory.mktemp("tiny"))


def _users_with_unknowns(users: pd.DataFrame) -> pd.DataFrame:
    odd = pd.DataFrame(
        {
            "user_id": [10_000, 1],
            "age": [np.nan, 200.0],
            "gender": ["X", None],
            "occupation": ["pilot", "engineer"],
            "zip_code": [None, "Hello, World"],
        }
    )
    return pd.concat([users.drop(columns="event_timestamp"), odd], ignore_index=True)


def _float_top10(tiny: Tiny, users: pd.DataFrame, vectors: np.ndarray) -> np.ndarray:
    user_tower, _ = towers_from_training_model(tiny.model)
    embedded = user_tower(
        {
            "user_idx": tiny.spec.user_index(users["user_id"]),
            **raw_inputs(tiny.spec.user_features, users),
        },
        training=False,
    ).numpy()
    return np.argsort(-(embedded @ vectors.T), axis=1)[:, :10]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True)]))


def test_edge_inputs_are_indexed_features_named_like_the_signature(tiny: Tiny) -> None:
    users = _users_with_unknowns(tiny.users)
    inputs = edge_inputs(tiny.spec, users)
    assert tuple(inputs) == edge_input_names(tiny.spec)
    assert tuple(inputs) == ("user_idx", "age", "gender", "occupation", "zip_code")
    assert inputs["user_idx"][-2] == 0  # unknown user
    assert inputs["gender"][-2] == 0 and inputs["gender"][-1] == 0  # unknown, missing
    assert inputs["age"][-2].tolist() == [0.0, 1.0]  # missing age: the flag
    assert inputs["zip_code"].ndim == 2 and inputs["zip_code"].dtype == np.int64
    with pytest.raises(ValueError, match="occupation"):
        edge_inputs(tiny.spec, users.drop(columns="occupation"))


def test_edge_tower_equals_the_float_tower(tiny: Tiny) -> None:
    users = _users_with_unknowns(tiny.users)
    user_tower, _ = towers_from_training_model(tiny.model)
    want = user_tower(
        {
            "user_idx": tiny.spec.user_index(users["user_id"]),
            **raw_inputs(tiny.spec.user_features, users),
        },
        training=False,
    ).numpy()
    got = edge_user_tower(tiny.model, tiny.spec)(edge_inputs(tiny.spec, users), training=False)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


@pytest.mark.parametrize(("mode", "bound"), [("dynamic", 0.8), ("int8", 0.6)])
def test_tflite_top10_mostly_agrees_with_the_float_model(
    tiny: Tiny, mode: str, bound: float
) -> None:
    item_ids, vectors = candidate_embeddings(tiny.model, tiny.spec, tiny.catalogue)
    users = _users_with_unknowns(tiny.users)
    inputs = edge_inputs(tiny.spec, users)
    blob = convert_retrieval_tflite(
        user_tower=edge_user_tower(tiny.model, tiny.spec),
        candidate_ids=item_ids,
        candidates=vectors,
        k=len(item_ids),
        mode=mode,
        representative=inputs,
    )
    scorer = TFLiteScorer(blob)
    assert set(scorer.input_names) == {*edge_input_names(tiny.spec), HISTORY_INPUT}
    out = scorer(inputs)  # no history: nothing masked
    assert out["item_ids"].shape == (len(users), len(item_ids))
    assert out["embedding"].shape == (len(users), tiny.spec.embedding_dim)
    assert np.isfinite(out["scores"]).all() and (out["scores"] > MASKED_SCORE / 2).all()
    column = {int(item): i for i, item in enumerate(item_ids.tolist())}
    top10 = np.vectorize(column.__getitem__)(out["item_ids"][:, :10])
    assert _overlap(top10, _float_top10(tiny, users, vectors)) >= bound

    # Rows that have seen their top 3 (or 2: padded rows) get them last, masked.
    seen = np.full((len(users), 3), HISTORY_PAD, np.int64)
    seen[:] = out["item_ids"][:, :3]
    seen[1::2, 2] = HISTORY_PAD
    masked = scorer({**inputs, HISTORY_INPUT: seen})
    for row, served, scores in zip(seen, masked["item_ids"], masked["scores"], strict=True):
        count = int((row != HISTORY_PAD).sum())
        assert set(served[-count:]) == set(row[:count])
        assert (scores[-count:] == MASKED_SCORE).all()
        assert (scores[:-count] > MASKED_SCORE / 2).all()


def test_int8_without_calibration_data_is_refused(tiny: Tiny) -> None:
    item_ids, vectors = candidate_embeddings(tiny.model, tiny.spec, tiny.catalogue)
    with pytest.raises(ValueError, match="representative"):
        convert_retrieval_tflite(
            user_tower=edge_user_tower(tiny.model, tiny.spec),
            candidate_ids=item_ids,
            candidates=vectors,
            k=10,
            mode="int8",
        )


@pytest.mark.parametrize(
    ("mode", "id_scale"), [("dynamic", 1), ("dynamic", 1_000_000), ("int8", 1)]
)
def test_unknown_users_are_embedded_from_their_history_on_the_edge(
    tiny: Tiny, mode: str, id_scale: int
) -> None:
    # id_scale spreads the item ids so the edge maps them by comparison, not a dense array.
    item_ids, vectors = candidate_embeddings(tiny.model, tiny.spec, tiny.catalogue)
    cluster = (item_ids - 1) % 3  # as _tiny_data plants them
    users = tiny.users.drop(columns="event_timestamp").iloc[[0, 0, 0]].reset_index(drop=True)
    users["user_id"] = [10_001, 10_002, int(tiny.spec.user_ids[0])]  # two unknown, one known
    inputs = edge_inputs(tiny.spec, users)
    blob = convert_retrieval_tflite(
        user_tower=edge_user_tower(tiny.model, tiny.spec),
        candidate_ids=item_ids * id_scale,
        candidates=vectors,
        k=10,
        mode=mode,
        representative=edge_inputs(tiny.spec, _users_with_unknowns(tiny.users)),
    )
    scorer = TFLiteScorer(blob)
    history = np.stack([item_ids[cluster == c][:5] * id_scale for c in (0, 1, 1)])
    out = scorer({**inputs, HISTORY_INPUT: history})
    plain = scorer(inputs)
    served = out["item_ids"] // id_scale
    for row, taste in enumerate((0, 1)):
        assert ((served[row] - 1) % 3 == taste).mean() >= 0.7, served[row]
        assert not set(out["item_ids"][row]) & set(history[row])
    # The known user keeps its tower embedding whatever its history.
    np.testing.assert_allclose(out["embedding"][2], plain["embedding"][2], atol=1e-6)


def test_edge_tower_of_a_history_model_takes_the_history(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from recops_models.two_tower import HISTORY_IDX, history_index

    tiny = train_tiny(tmp_path_factory.mktemp("tiny_history"), history_length=4)
    users = tiny.users.drop(columns="event_timestamp")
    items = tiny.items["item_id"].to_numpy(np.int64)
    history = np.full((len(users), 6), HISTORY_PAD, np.int64)
    history[::2, :3] = items[:3]
    inputs = edge_inputs(tiny.spec, users, history)
    assert tuple(inputs) == edge_input_names(tiny.spec)
    assert edge_input_names(tiny.spec)[-1] == HISTORY_IDX
    np.testing.assert_array_equal(inputs[HISTORY_IDX], history_index(tiny.spec, history))
    assert inputs[HISTORY_IDX].shape == (len(users), 4)
    user_tower, _ = towers_from_training_model(tiny.model)
    want = user_tower(
        {
            "user_idx": tiny.spec.user_index(users["user_id"]),
            **raw_inputs(tiny.spec.user_features, users),
            HISTORY_IDX: inputs[HISTORY_IDX],
        },
        training=False,
    ).numpy()
    got = edge_user_tower(tiny.model, tiny.spec)(inputs, training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    item_ids, vectors = candidate_embeddings(tiny.model, tiny.spec, tiny.catalogue)
    blob = convert_retrieval_tflite(
        user_tower=edge_user_tower(tiny.model, tiny.spec),
        candidate_ids=item_ids,
        candidates=vectors,
        k=5,
        mode="dynamic",
    )
    out = TFLiteScorer(blob)(inputs)
    np.testing.assert_allclose(out["embedding"], want, atol=0.05)
    # Without a history, the edge inputs encode an empty one.
    assert (edge_inputs(tiny.spec, users)[HISTORY_IDX] == 0).all()
