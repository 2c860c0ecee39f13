"""The DCN-v2 ranker graph and its ``rank`` export, on the tiny dataset's spec features."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _tiny_data import write_tiny_data
from recops.dataset_spec import load_spec
from recops.layout import layout_from_spec

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from recops_models.dcn import (  # noqa: E402
    CONTEXT_FEATURES_ATTRIBUTE,
    RankerSpec,
    build_ranking_model,
    export_ranking_model,
    ranking_inputs,
)


@dataclass(frozen=True)
class Exported:
    spec: RankerSpec
    model: Any
    catalogue: pd.DataFrame
    users: pd.DataFrame
    model_dir: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("dcn")
    data = write_tiny_data(root / "data", n_users=12, n_items=30, per_user=6)
    layout = layout_from_spec(load_spec(data.spec_uri))
    rows = pd.read_parquet(data.training_set_uri).assign(activity=3.0)
    users = pd.read_parquet(data.users_uri)
    catalogue = pd.read_parquet(data.items_uri).drop(columns="event_timestamp")
    catalogue["popularity"] = np.arange(len(catalogue), dtype=np.float64)
    # Users 1..10 only: 11 and 12 stay unknown to the id embedding.
    train = rows[rows["user_id"] <= 10].merge(catalogue[["item_id", "popularity"]])
    spec = RankerSpec.fit(
        train={c: train[c].to_numpy() for c in train.columns},
        users={c: users[c].to_numpy() for c in users.columns},
        items={c: catalogue[c].to_numpy() for c in catalogue.columns},
        user_defs=layout.user_features,
        item_defs=layout.item_features,
        user_context=("activity",),
        item_context=("popularity",),
        embedding_dim=4,
        cross_layers=1,
        deep_units=(8,),
    )
    model = build_ranking_model(spec)
    model_dir = root / "model"
    export_ranking_model(
        model=model,
        spec=spec,
        catalogue={c: catalogue[c].to_numpy() for c in catalogue.columns},
        export_dir=model_dir,
    )
    return Exported(spec, model, catalogue, users, model_dir)


@pytest.fixture(scope="module")
def rank(exported: Exported) -> Any:
    """The exported ``rank`` signature, loaded once."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported.model_dir))
    return loaded.signatures["rank"]


def _request(users: pd.DataFrame, items: list[list[int]]) -> dict[str, Any]:
    import tensorflow as tf

    return {
        "user_id": tf.constant(users["user_id"].to_numpy(np.int64)),
        "age": tf.constant(users["age"].to_numpy(np.float32)),
        "gender": tf.constant(users["gender"].to_numpy(str)),
        "occupation": tf.constant(users["occupation"].to_numpy(str)),
        "zip_code": tf.constant(users["zip_code"].to_numpy(str)),
        "activity": tf.constant(np.full(len(users), 3.0, np.float32)),
        "item_ids": tf.constant(np.asarray(items, np.int64)),
    }


def test_spec_fits_on_train_entities_and_round_trips(exported: Exported) -> None:
    spec = exported.spec
    assert spec.user_ids == tuple(range(1, 11)) and len(spec.item_ids) <= 30
    by_name = {f.name: f for f in spec.features}
    assert [f.name for f in spec.request_features] == [
        "age", "gender", "occupation", "zip_code", "activity",
    ]  # fmt: skip
    assert [f.name for f in spec.catalogue_features] == [
        "title", "release_year", "genres", "popularity",
    ]  # fmt: skip
    # Fitted on the train users' rows of the users table: one row per user.
    ages = exported.users.loc[exported.users["user_id"] <= 10, "age"]
    assert by_name["age"].mean == pytest.approx(ages.mean())
    assert by_name["genres"].vocab == ("classic", "comedy", "drama", "horror")
    assert by_name["occupation"].vocab == ("artist", "doctor", "engineer")
    assert np.isfinite(by_name["release_year"].mean)  # NaNs are left out of the stats
    assert RankerSpec.from_json(spec.to_json()) == spec


def test_reserved_and_duplicate_names_are_refused(exported: Exported) -> None:
    age = exported.spec.user_features[0]
    with pytest.raises(ValueError, match="reserved"):
        replace(exported.spec, user_features=(replace(age, name="weight"),))
    with pytest.raises(ValueError, match=r"\['age'\]"):
        replace(exported.spec, item_features=(age,))
    with pytest.raises(ValueError, match="must be numeric"):
        gender = exported.spec.user_features[1]
        replace(exported.spec, user_context=(replace(gender, name="recent_gender"),))


def test_rank_signature_is_named_by_the_spec(exported: Exported) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported.model_dir))
    assert set(loaded.signatures) == {"rank", "serving_default"}
    _, inputs = loaded.signatures["rank"].structured_input_signature
    assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in inputs.items()} == {
        "user_id": (tf.int64, [None]),
        "age": (tf.float32, [None]),
        "gender": (tf.string, [None]),
        "occupation": (tf.string, [None]),
        "zip_code": (tf.string, [None]),
        "activity": (tf.float32, [None]),
        "item_ids": (tf.int64, [None, None]),
    }
    assert set(loaded.signatures["rank"].structured_outputs) == {"scores", "ratings"}
    recorded = getattr(loaded, CONTEXT_FEATURES_ATTRIBUTE).numpy().tolist()
    assert recorded == [b"activity"]


def test_rank_matches_the_keras_model_and_scores_pairs_alone(exported: Exported, rank: Any) -> None:
    import tensorflow as tf

    users = exported.users.iloc[[0, 1]]
    items = [[1, 2, 3], [4, 5, 6]]
    out = rank(**_request(users, items))
    scores, ratings = out["scores"].numpy(), out["ratings"].numpy()
    assert scores.shape == ratings.shape == (2, 3)
    # The same pairs through the Keras model, item features taken from the catalogue.
    pairs = users.loc[users.index.repeat(3)].reset_index(drop=True)
    pairs = pairs.assign(item_id=np.ravel(items), activity=3.0).merge(
        exported.catalogue, on="item_id", how="left"
    )
    direct = exported.model(
        ranking_inputs(exported.spec, {c: pairs[c].to_numpy() for c in pairs}), training=False
    )
    expected = tf.sigmoid(direct["click"][:, 0]).numpy().reshape(2, 3)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    single = rank(**_request(users.iloc[[1]], [[5]]))["scores"].numpy()
    np.testing.assert_allclose(single[0, 0], scores[1, 1], rtol=1e-5)


def test_unknown_ids_categories_and_missing_numbers_are_scored(
    exported: Exported, rank: Any
) -> None:
    import tensorflow as tf

    strangers = pd.DataFrame(
        {
            "user_id": [999, 11],
            "age": [np.nan, 30.0],
            "gender": ["", "X"],
            "occupation": ["pilot", ""],
            "zip_code": ["", "nowhere 12"],
        }
    )
    request = _request(strangers, [[1, 10_000], [17, 10_001]])
    request["activity"] = tf.constant([np.nan, 1.0], tf.float32)
    out = rank(**request)
    spec = exported.spec
    assert np.all(np.isfinite(out["scores"].numpy()))
    ratings = out["ratings"].numpy()
    assert np.all((ratings >= spec.weight_min) & (ratings <= spec.weight_max))


def test_catalogue_is_checked(exported: Exported, tmp_path: Path) -> None:
    columns = {c: exported.catalogue[c].to_numpy() for c in exported.catalogue.columns}
    with pytest.raises(ValueError, match="popularity"):
        export_ranking_model(
            model=exported.model,
            spec=exported.spec,
            catalogue={k: v for k, v in columns.items() if k != "popularity"},
            export_dir=tmp_path / "a",
        )
    doubled = {k: np.concatenate([v, v[:1]]) for k, v in columns.items()}
    with pytest.raises(ValueError, match="duplicate"):
        export_ranking_model(
            model=exported.model, spec=exported.spec, catalogue=doubled, export_dir=tmp_path / "b"
        )


def test_a_history_ranker_scores_candidates_against_the_history(
    exported: Exported, tmp_path: Path
) -> None:
    import tensorflow as tf
    from recops_models.contract import HISTORY_INPUT, HISTORY_PAD

    spec = replace(exported.spec, history_length=3)
    assert RankerSpec.from_json(spec.to_json()) == spec
    assert RankerSpec.from_json(exported.spec.to_json()).history_length == 0
    tf.keras.utils.set_random_seed(1)
    model = build_ranking_model(spec)
    catalogue = {c: exported.catalogue[c].to_numpy() for c in exported.catalogue.columns}
    export_ranking_model(model=model, spec=spec, catalogue=catalogue, export_dir=tmp_path / "m")
    rank = tf.saved_model.load(str(tmp_path / "m")).signatures["rank"]
    _, inputs = rank.structured_input_signature
    assert inputs[HISTORY_INPUT].shape.as_list() == [None, None]
    users = exported.users.iloc[[0, 1]]
    items = [[1, 2, 3], [4, 5, 6]]
    # Newest first, padded; entries past history_length and unknown items are ignored.
    history = np.array([[7, 8, HISTORY_PAD, HISTORY_PAD, HISTORY_PAD], [9, 10, 999, 11, 12]])
    got = rank(**_request(users, items), **{HISTORY_INPUT: tf.constant(history)})
    cut = rank(**_request(users, items), **{HISTORY_INPUT: tf.constant(history[:, :3])})
    np.testing.assert_allclose(got["scores"].numpy(), cut["scores"].numpy(), rtol=1e-6)
    # The Keras model on the same pairs, each with its user's history.
    pairs = users.loc[users.index.repeat(3)].reset_index(drop=True)
    pairs = pairs.assign(item_id=np.ravel(items), activity=3.0).merge(
        exported.catalogue, on="item_id", how="left"
    )
    columns = {c: pairs[c].to_numpy() for c in pairs} | {HISTORY_INPUT: np.repeat(history, 3, 0)}
    direct = model(ranking_inputs(spec, columns), training=False)
    expected = tf.sigmoid(direct["click"][:, 0]).numpy().reshape(2, 3)
    np.testing.assert_allclose(got["scores"].numpy(), expected, rtol=1e-5)
    # Another history, other scores: the candidates are scored against it.
    other = rank(**_request(users, items), **{HISTORY_INPUT: tf.constant(history[::-1].copy())})
    assert not np.allclose(other["scores"].numpy(), got["scores"].numpy())
