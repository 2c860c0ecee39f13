"""The retrieval signatures embed a user unknown to the model from its pushed history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _tiny_data import N_CLUSTERS
from _tiny_tower import Tiny, train_tiny
from recops_models.tf_env import tensorflow

tf = tensorflow()

from recops_models.quantized import export_quantized_retrieval_model  # noqa: E402
from recops_models.retrieval_export import (  # noqa: E402
    HISTORY_DECAY,
    HISTORY_POOL_MAX,
    history_weights,
)
from recops_models.two_tower import (  # noqa: E402
    HISTORY_INPUT,
    HISTORY_PAD,
    MASKED_SCORE,
    export_retrieval_model,
)

#: Ids the tiny model never trained on.
NEW_USERS = (10_001, 10_002)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A two-tower trained a few epochs on the tiny data."""
    return train_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module", params=["float", "int8"])
def exported(
    request: pytest.FixtureRequest, tiny: Tiny, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """The float and the int8 retrieval SavedModels of the same towers (k = 10)."""
    folder: Path = tmp_path_factory.mktemp(request.param) / "m"
    if request.param == "float":
        export_retrieval_model(
            model=tiny.model, spec=tiny.spec, items=tiny.catalogue, export_dir=folder, k=10
        )
    else:
        export_quantized_retrieval_model(
            model=tiny.model, spec=tiny.spec, items=tiny.catalogue, export_dir=folder, k=10
        )
    return tf.saved_model.load(str(folder))


def _request(user_ids: list[int], history: np.ndarray, tiny: Tiny) -> dict[str, Any]:
    """Rows with the same attributes (the first user's), differing by id and history."""
    profile = tiny.users.iloc[0]
    n = len(user_ids)
    return {
        "user_id": tf.constant(user_ids, tf.int64),
        "age": tf.constant([float(profile["age"])] * n, tf.float32),
        "gender": tf.constant([str(profile["gender"])] * n),
        "occupation": tf.constant([str(profile["occupation"])] * n),
        "zip_code": tf.constant([str(profile["zip_code"])] * n),
        HISTORY_INPUT: tf.constant(np.asarray(history, np.int64).reshape(n, -1)),
    }


def _cluster(item_ids: np.ndarray) -> np.ndarray:
    return (np.asarray(item_ids) - 1) % N_CLUSTERS  # as _tiny_data plants them


def _cluster_history(cluster: int, n: int, tiny: Tiny) -> np.ndarray:
    """The first ``n`` catalogue items of ``cluster``, newest first."""
    ids = tiny.items["item_id"].to_numpy()
    return ids[_cluster(ids) == cluster][:n]


def _embed(model: Any, request: dict[str, Any]) -> np.ndarray:
    return np.asarray(model.signatures["user_embedding"](**request)["embedding"])


def _expected_pool(model: Any, history: np.ndarray) -> np.ndarray:
    """The documented rule in numpy: 0.9**slot-weighted mean of the first 50 entries'
    candidate embeddings, L2-normalised."""
    out = model.signatures["item_embeddings"]()
    ids, matrix = out["item_ids"].numpy(), out["embeddings"].numpy()
    row = {int(i): r for r, i in enumerate(ids)}
    total = np.zeros(matrix.shape[1], np.float64)
    for slot, item in enumerate(history[:HISTORY_POOL_MAX]):
        if int(item) in row:
            total += HISTORY_DECAY**slot * matrix[row[int(item)]]
    return (total / np.linalg.norm(total)).astype(np.float32)


def test_unknown_users_are_recommended_their_historys_cluster(exported: Any, tiny: Tiny) -> None:
    serve = exported.signatures["serving_default"]
    histories = np.stack([_cluster_history(0, 5, tiny), _cluster_history(1, 5, tiny)])
    out = serve(**_request(list(NEW_USERS), histories, tiny))
    ids, scores = out["item_ids"].numpy(), out["scores"].numpy()
    assert set(ids[0]) != set(ids[1])
    for row, cluster in enumerate((0, 1)):
        # Dominated by the history's cluster, and the history itself never comes back.
        assert (_cluster(ids[row]) == cluster).mean() >= 0.7, ids[row]
        assert not set(ids[row]) & set(histories[row])
        assert (scores[row] > MASKED_SCORE / 2).all()
    # Without a usable history both get the same out-of-vocabulary ranking.
    none = serve(**_request(list(NEW_USERS), np.full((2, 3), HISTORY_PAD), tiny))
    np.testing.assert_array_equal(none["item_ids"].numpy()[0], none["item_ids"].numpy()[1])


def test_an_unknown_users_embedding_is_its_recency_weighted_history(
    exported: Any, tiny: Tiny
) -> None:
    # Newest first, a non-candidate id in the middle, then more than 50 entries whose
    # tail (another cluster) lies past the cap.
    head = _cluster_history(2, 10, tiny)
    tail = _cluster_history(0, HISTORY_POOL_MAX, tiny)
    history = np.concatenate([head[:4], [10_000_000], head[4:], tail])
    assert history.size > HISTORY_POOL_MAX
    got = _embed(exported, _request([NEW_USERS[0]], history[None, :], tiny))[0]
    np.testing.assert_allclose(got, _expected_pool(exported, history), atol=1e-5)
    capped = _embed(exported, _request([NEW_USERS[0]], history[None, :HISTORY_POOL_MAX], tiny))
    np.testing.assert_allclose(capped[0], got, atol=1e-6)


def test_known_users_and_unusable_histories_keep_the_towers_embedding(
    exported: Any, tiny: Tiny
) -> None:
    known = int(tiny.spec.user_ids[0])
    other_taste = _cluster_history(1, 6, tiny)
    plain = _embed(exported, _request([known, NEW_USERS[0]], np.zeros((2, 0)), tiny))
    # The known user's embedding ignores its history; the unknown user's history holds
    # only padding and an id that is not a candidate, so it stays out-of-vocabulary.
    history = np.full((2, other_taste.size), HISTORY_PAD, np.int64)
    history[0] = other_taste
    history[1, 0] = 10_000_000
    with_history = _embed(exported, _request([known, NEW_USERS[0]], history, tiny))
    np.testing.assert_allclose(with_history, plain, atol=1e-6)
    # And the known user's served top-10 still excludes what it has seen.
    ids = exported.signatures["serving_default"](**_request([known], history[:1], tiny))
    assert not set(ids["item_ids"].numpy()[0]) & set(other_taste)


def test_history_weights_decay_by_slot_and_skip_non_candidates() -> None:
    positions = tf.constant([[3, -1, 0], [-1, -1, -1]], tf.int64)
    weights = history_weights(positions).numpy()
    np.testing.assert_allclose(weights, [[1.0, 0.0, HISTORY_DECAY**2], [0.0, 0.0, 0.0]])
    wide = history_weights(tf.zeros((1, HISTORY_POOL_MAX + 7), tf.int64)).numpy()
    assert wide.shape == (1, HISTORY_POOL_MAX)
