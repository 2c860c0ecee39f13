"""The spec-driven two-tower: fitting, training on planted clusters, export signatures.

The tiny data plants three taste clusters (``_tiny_data``); holding out five random items
per user, a random ranking finds about 10/125 of them in its top 10. A model that
learns the clusters (from the ids, the occupation and the genres) finds several times
more after a few epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _tiny_data import write_tiny_data
from recops.dataset_spec import load_spec
from recops.layout import layout_from_spec
from recops_models.feature_defs import FeatureDef, raw_inputs
from recops_models.metrics import ranking_metrics, top_k_items
from recops_models.tf_env import tensorflow

tf = tensorflow()

import tf_keras as keras  # noqa: E402
from recops_models.two_tower import (  # noqa: E402
    HISTORY_INPUT,
    HISTORY_PAD,
    MASKED_SCORE,
    InBatchSoftmaxLoss,
    TwoTowerSpec,
    build_training_model,
    candidate_embeddings,
    export_retrieval_model,
    load_trained_model,
    model_inputs,
    save_trained_model,
    towers_from_training_model,
    train_inputs,
)

HELD_OUT = 5


@dataclass
class Trained:
    model: Any
    spec: TwoTowerSpec
    users: pd.DataFrame
    items: pd.DataFrame
    train: pd.DataFrame
    test: pd.DataFrame


def _fit(tmp: Path, epochs: int = 6) -> Trained:
    data = write_tiny_data(tmp)
    layout = layout_from_spec(load_spec(data.spec_uri))
    users, items = pd.read_parquet(data.users_uri), pd.read_parquet(data.items_uri)
    # Shuffled first: the file lists each user's in-cluster items before the others.
    frame = pd.read_parquet(data.training_set_uri).sample(frac=1.0, random_state=0)
    last = frame.groupby("user_id").cumcount() < HELD_OUT
    train, test = frame[~last].reset_index(drop=True), frame[last].reset_index(drop=True)
    spec = TwoTowerSpec.from_tables(
        train=train,
        users=users,
        items=items,
        user_features=layout.user_features,
        item_features=layout.item_features,
        embedding_dim=16,
        temperature=0.2,
    )
    keras.utils.set_random_seed(0)
    model = build_training_model(spec)
    features = model_inputs(spec, {c: train[c].to_numpy() for c in train.columns})
    dataset = tf.data.Dataset.from_tensor_slices((features, np.zeros(len(train))))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=InBatchSoftmaxLoss())
    model.fit(dataset.shuffle(len(train), seed=0).batch(64), epochs=epochs, verbose=0)
    return Trained(model, spec, users, items, train, test)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _fit(tmp_path_factory.mktemp("two-tower"))


def _catalogue(items: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: items[c].to_numpy() for c in items.columns if c != "event_timestamp"}


def _recall(t: Trained, scores: np.ndarray, users: np.ndarray, item_ids: np.ndarray) -> float:
    column = {int(item): i for i, item in enumerate(item_ids.tolist())}

    def per_user(frame: pd.DataFrame) -> list[np.ndarray]:
        groups = frame.groupby("user_id")["item_id"].apply(
            lambda s: np.array([column[int(i)] for i in s], np.int64)
        )
        return [groups.get(u, np.empty(0, np.int64)) for u in users.tolist()]

    ranked = top_k_items(scores, 10, per_user(t.train))
    return float(ranking_metrics(ranked, per_user(t.test), 10).recall)


def test_spec_fits_features_on_the_entity_tables_and_round_trips_json(trained: Trained) -> None:
    spec = trained.spec
    assert [f.name for f in spec.user_features] == ["age", "gender", "occupation", "zip_code"]
    assert [f.name for f in spec.item_features] == ["title", "release_year", "genres"]
    occupation = spec.user_features[2]
    assert occupation.vocab == ("artist", "doctor", "engineer")
    genres = spec.item_features[2]
    assert genres.vocab == ("classic", "comedy", "drama", "horror")
    # Statistics come from one row per user, not one per training row.
    assert spec.user_features[0].mean == pytest.approx(trained.users["age"].mean())
    years = trained.items["release_year"]
    assert spec.item_features[1].mean == pytest.approx(years[years.notna()].mean())
    assert TwoTowerSpec.from_json(spec.to_json()) == spec
    assert train_inputs(spec) == (
        "user_idx", "age", "gender", "occupation", "zip_code",
        "item_idx", "title", "release_year", "genres", "item_logq",
    )  # fmt: skip


def test_from_tables_refuses_missing_columns_and_reserved_names(trained: Trained) -> None:
    base: dict[str, Any] = {
        "train": trained.train,
        "users": trained.users,
        "items": trained.items,
        "item_features": (),
    }
    with pytest.raises(ValueError, match="lacks the feature column"):
        TwoTowerSpec.from_tables(**base, user_features=(FeatureDef("country", "categorical"),))
    users = trained.users.assign(item_idx="x")
    with pytest.raises(ValueError, match="reserved"):
        TwoTowerSpec.from_tables(
            **{**base, "users": users}, user_features=(FeatureDef("item_idx", "categorical"),)
        )


def test_the_trained_model_beats_random_on_the_planted_clusters(trained: Trained) -> None:
    item_ids, item_vectors = candidate_embeddings(
        trained.model, trained.spec, _catalogue(trained.items)
    )
    user_tower, _ = towers_from_training_model(trained.model)
    users = np.sort(trained.test["user_id"].unique())
    profiles = trained.users.set_index("user_id").loc[users].reset_index()
    vectors = user_tower(
        {
            "user_idx": trained.spec.user_index(users),
            **raw_inputs(trained.spec.user_features, profiles),
        },
        training=False,
    ).numpy()
    recall = _recall(trained, vectors @ item_vectors.T, users, item_ids)
    random_recall = 10 / (len(item_ids) - 25)
    assert recall > 3 * random_recall, recall


def test_towers_take_their_own_inputs_only(trained: Trained) -> None:
    user_tower, item_tower = towers_from_training_model(trained.model)
    assert sorted(user_tower.input) == ["age", "gender", "occupation", "user_idx", "zip_code"]
    assert sorted(item_tower.input) == ["genres", "item_idx", "release_year", "title"]


def test_export_signatures_are_named_by_feature_and_tolerate_unknowns(
    trained: Trained, tmp_path: Path
) -> None:
    k = export_retrieval_model(
        model=trained.model,
        spec=trained.spec,
        items=_catalogue(trained.items),
        export_dir=tmp_path / "model",
        k=20,
    )
    assert k == 20
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    serve = loaded.signatures["serving_default"]
    _, named = serve.structured_input_signature
    assert {name: spec.dtype for name, spec in named.items()} == {
        "user_id": tf.int64,
        "age": tf.float32,
        "gender": tf.string,
        "occupation": tf.string,
        "zip_code": tf.string,
        HISTORY_INPUT: tf.int64,
    }
    assert named[HISTORY_INPUT].shape.as_list() == [None, None]
    assert set(loaded.signatures["user_embedding"].structured_input_signature[1]) == set(named)
    assert loaded.signatures["item_embeddings"].structured_input_signature == ((), {})

    request = {
        "user_id": tf.constant([1, 2, 10_000], tf.int64),  # the last user is unknown
        "age": tf.constant([30.0, np.nan, 45.0], tf.float32),  # a missing age
        "gender": tf.constant(["M", "F", "X"]),  # an unknown category
        "occupation": tf.constant(["engineer", "", "pilot"]),
        "zip_code": tf.constant(["10001", "", "99999 x"]),
        # The unknown user's history names no candidate, so it keeps the tower's
        # out-of-vocabulary embedding (test_retrieval_export covers a usable one).
        HISTORY_INPUT: tf.constant(
            [[1, 2], [HISTORY_PAD] * 2, [10_000_000, HISTORY_PAD]], tf.int64
        ),
    }
    out = serve(**request)
    assert out["item_ids"].shape == (3, 20) and out["scores"].dtype == tf.float32
    assert np.isfinite(out["scores"].numpy()).all()
    assert set(out["item_ids"].numpy().ravel()) <= set(trained.items["item_id"])

    # The exported user tower and candidates are the in-memory ones.
    user_tower, _ = towers_from_training_model(trained.model)
    frame = {name: value.numpy() for name, value in request.items() if name != HISTORY_INPUT}
    expected = user_tower(
        {
            "user_idx": trained.spec.user_index(frame["user_id"]),
            **raw_inputs(trained.spec.user_features, frame),
        },
        training=False,
    ).numpy()
    embedded = loaded.signatures["user_embedding"](**request)["embedding"].numpy()
    np.testing.assert_allclose(embedded, expected, atol=1e-5)
    catalogue = loaded.signatures["item_embeddings"]()
    ids, vectors = candidate_embeddings(trained.model, trained.spec, _catalogue(trained.items))
    np.testing.assert_array_equal(catalogue["item_ids"].numpy(), ids)
    np.testing.assert_allclose(catalogue["embeddings"].numpy(), vectors, atol=1e-6)


def test_catalogue_without_a_feature_column_is_refused(trained: Trained) -> None:
    items = _catalogue(trained.items)
    del items["genres"]
    with pytest.raises(ValueError, match="genres"):
        candidate_embeddings(trained.model, trained.spec, items)


def test_save_and_load_rebuild_the_same_model(trained: Trained, tmp_path: Path) -> None:
    save_trained_model(trained.model, trained.spec, tmp_path / "weights")
    model, spec = load_trained_model(tmp_path / "weights")
    assert spec == trained.spec
    batch = model_inputs(spec, {c: trained.train[c].to_numpy()[:16] for c in trained.train})
    np.testing.assert_allclose(model(batch).numpy(), trained.model(batch).numpy(), rtol=1e-5)
    with pytest.raises(FileNotFoundError):
        load_trained_model(tmp_path / "absent")


def test_mixed_precision_keeps_index_layers_and_outputs_float32(trained: Trained) -> None:
    model = build_training_model(trained.spec, mixed_precision=True)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert model.get_layer("user_projection").compute_dtype == "float16"
    assert model.get_layer("user_attr_age_index").compute_dtype == "float32"
    batch = model_inputs(trained.spec, {c: trained.train[c].to_numpy()[:8] for c in trained.train})
    assert model(batch).dtype == tf.float32


@pytest.fixture(scope="module")
def full_export(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The retrieval export returning every candidate (k = catalogue size)."""
    folder = tmp_path_factory.mktemp("full") / "model"
    export_retrieval_model(
        model=trained.model,
        spec=trained.spec,
        items=_catalogue(trained.items),
        export_dir=folder,
        k=len(trained.items),
    )
    return tf.saved_model.load(str(folder))


def _profiles(trained: Trained, user_ids: list[int], history: Any) -> dict[str, Any]:
    """A ``serving_default`` request for known users with the given history matrix."""
    users = trained.users.set_index("user_id").loc[user_ids].reset_index()
    return {
        "user_id": tf.constant(user_ids, tf.int64),
        **{
            name: tf.constant(value)
            for name, value in raw_inputs(trained.spec.user_features, users).items()
        },
        HISTORY_INPUT: tf.constant(np.asarray(history, np.int64).reshape(len(user_ids), -1)),
    }


def test_serving_masks_each_rows_history_with_padding(trained: Trained, full_export: Any) -> None:
    serve = full_export.signatures["serving_default"]
    trained_users = [1, 2, 3]
    # Unmasked ranking: an all-pad history and a width-0 history are both "no history".
    plain = serve(**_profiles(trained, trained_users, np.full((3, 2), HISTORY_PAD)))
    width0 = serve(**_profiles(trained, trained_users, np.zeros((3, 0))))
    np.testing.assert_array_equal(plain["item_ids"].numpy(), width0["item_ids"].numpy())
    ranked = plain["item_ids"].numpy()
    assert (plain["scores"].numpy() > MASKED_SCORE / 2).all()
    # Each row's history: its own top items, of different lengths (right-padded), plus an
    # unknown item id that masks nothing.
    lengths = [5, 0, 2]
    history = np.full((3, 6), HISTORY_PAD, np.int64)
    for row, n in enumerate(lengths):
        history[row, :n] = ranked[row, :n]
    history[1, 0] = 10_000_000
    out = serve(**_profiles(trained, trained_users, history))
    ids, scores = out["item_ids"].numpy(), out["scores"].numpy()
    for row, n in enumerate(lengths):
        # Unseen candidates first, in the unmasked order; seen ones last, masked.
        np.testing.assert_array_equal(ids[row, : len(ranked[row]) - n], ranked[row, n:])
        assert set(ids[row, len(ranked[row]) - n :]) == set(ranked[row, :n])
        assert (scores[row, len(ranked[row]) - n :] == MASKED_SCORE).all()
        assert (scores[row, : len(ranked[row]) - n] > MASKED_SCORE / 2).all()


def test_seen_items_never_reach_a_top_k_smaller_than_the_unseen(
    trained: Trained, tmp_path: Path
) -> None:
    export_retrieval_model(
        model=trained.model,
        spec=trained.spec,
        items=_catalogue(trained.items),
        export_dir=tmp_path / "m",
        k=10,
    )
    serve = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    plain = serve(**_profiles(trained, [4, 5], np.zeros((2, 0))))["item_ids"].numpy()
    # Row 0 has seen its whole unmasked top 10 (twice over: duplicates are fine).
    history = np.concatenate([plain, plain], axis=1)
    history[1] = HISTORY_PAD
    out = serve(**_profiles(trained, [4, 5], history))["item_ids"].numpy()
    assert not set(out[0]) & set(plain[0])
    np.testing.assert_array_equal(out[1], plain[1])
