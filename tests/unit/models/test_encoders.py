"""The feature encoders: inputs named by feature, index layers, pooling, serialisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from recops_models.feature_defs import EncodedFeature, FeatureDef, fit_features, raw_inputs
from recops_models.tf_env import tensorflow

tf = tensorflow()

from recops_models.encoders import (  # noqa: E402
    CUSTOM_LAYERS,
    MAX_CATEGORY_DIM,
    NUMERIC_CLIP,
    TEXT_DIM,
    embedding_dim,
    encode_indexed,
    encoded_width,
    feature_inputs,
    index_features,
    index_layer,
    indexed_signature,
    input_signature,
)

DEFS = (
    FeatureDef("age", "numeric"),
    FeatureDef("occupation", "categorical"),
    FeatureDef("zip_code", "text"),
    FeatureDef("genres", "multi_categorical", "|"),
)
COLUMNS = {
    "age": np.array([20.0, 40.0, np.nan, 60.0]),
    "occupation": np.array(["doctor", "artist", None, "doctor"], dtype=object),
    "zip_code": np.array(["10001", "", "Ab-12", None], dtype=object),
    "genres": np.array(["drama|comedy", "comedy", "", "horror | drama"], dtype=object),
}


@pytest.fixture(scope="module")
def features() -> tuple[EncodedFeature, ...]:
    return fit_features(DEFS, COLUMNS)


def test_inputs_and_signature_are_named_by_feature_with_raw_dtypes(
    features: tuple[EncodedFeature, ...],
) -> None:
    inputs = feature_inputs(features)
    assert list(inputs) == ["age", "occupation", "zip_code", "genres"]
    assert [inputs[n].dtype for n in inputs] == [tf.float32, tf.string, tf.string, tf.string]
    specs = input_signature(features)
    assert [(s.name, s.dtype, s.shape.as_list()) for s in specs] == [
        ("age", tf.float32, [None]),
        ("occupation", tf.string, [None]),
        ("zip_code", tf.string, [None]),
        ("genres", tf.string, [None]),
    ]
    indexed = {s.name: (s.dtype, s.shape.as_list()) for s in indexed_signature(features)}
    assert indexed == {
        "age": (tf.float32, [None, 2]),
        "occupation": (tf.int64, [None]),
        "zip_code": (tf.int64, [None, None]),
        "genres": (tf.int64, [None, None]),
    }


def test_categorical_index_maps_unknown_and_missing_to_zero(
    features: tuple[EncodedFeature, ...],
) -> None:
    occupation = features[1]
    assert occupation.vocab == ("artist", "doctor")
    layer = index_layer(occupation, "occupation_index")
    out = layer(tf.constant(["doctor", "artist", "", "pilot"])).numpy()
    assert out.tolist() == [2, 1, 0, 0]


def test_empty_vocabulary_still_builds_and_maps_everything_to_zero() -> None:
    (empty,) = fit_features([FeatureDef("color", "categorical")], {"color": [None, None]})
    assert empty.vocab == ()
    out = index_layer(empty, "color_index")(tf.constant(["red", ""])).numpy()
    assert out.tolist() == [0, 0]


def test_multi_valued_index_splits_strips_and_pads_with_zero(
    features: tuple[EncodedFeature, ...],
) -> None:
    genres = features[3]
    assert genres.vocab == ("comedy", "drama", "horror")
    out = index_layer(genres, "genres_index")(
        tf.constant(["drama|comedy", "", "horror | drama", "western|comedy"])
    ).numpy()
    # Unknown values and padding are both 0: the pool ignores them.
    assert out.tolist() == [[2, 1], [0, 0], [3, 2], [0, 1]]


def test_text_index_hashes_lowercased_words_and_ignores_punctuation(
    features: tuple[EncodedFeature, ...],
) -> None:
    text = features[2]
    out = index_layer(text, "zip_code_index")(
        tf.constant(["Hello, World!", "hello world", "", "world"])
    ).numpy()
    assert out.shape == (4, 2)
    assert out[0].tolist() == out[1].tolist()  # case and punctuation do not matter
    assert out[2].tolist() == [0, 0]  # empty text: padding only
    assert out[3, 0] == out[0, 1] and out[3, 1] == 0
    assert ((out[out > 0] >= 1) & (out[out > 0] <= text.buckets)).all()


def test_numeric_index_standardises_clips_and_flags_missing(
    features: tuple[EncodedFeature, ...],
) -> None:
    age = features[0]
    assert age.mean == pytest.approx(40.0)
    out = index_layer(age, "age_index")(tf.constant([40.0, np.nan, 1e9], tf.float32)).numpy()
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.0, 1.0], [NUMERIC_CLIP, 0.0]])


def test_encoding_widths_follow_the_vocabulary_size(features: tuple[EncodedFeature, ...]) -> None:
    age, occupation, text, genres = features
    assert [encoded_width(f) for f in features] == [2, 4, TEXT_DIM, 4]
    assert embedding_dim(age) == 0
    big = EncodedFeature("sku", "categorical", vocab=tuple(f"v{i}" for i in range(1000)))
    assert embedding_dim(big) == MAX_CATEGORY_DIM
    assert embedding_dim(occupation) == embedding_dim(genres) == 4


def test_pooled_encoding_is_the_mean_of_known_rows_and_zero_when_empty(
    features: tuple[EncodedFeature, ...],
) -> None:
    import tf_keras as keras

    genres = features[3]
    raw = keras.Input(shape=(), dtype=tf.string, name="genres")
    index = index_layer(genres, "genres_index")(raw)
    (encoded,) = encode_indexed([genres], {"genres": index}, "item_attr_")
    model = keras.Model(raw, encoded)
    table = model.get_layer("item_attr_genres_embedding").get_weights()[0]
    out = model(tf.constant(["drama|comedy", "", "western|horror"])).numpy()
    np.testing.assert_allclose(out[0], (table[2] + table[1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[1], 0.0)
    np.testing.assert_allclose(out[2], table[3], rtol=1e-6)  # the unknown value is ignored


def test_index_features_match_the_layers_and_pad_empty_batches(
    features: tuple[EncodedFeature, ...],
) -> None:
    raw = raw_inputs(features, COLUMNS)
    out = index_features(features, raw)
    assert out["occupation"].tolist() == [2, 1, 0, 2]
    assert out["age"].shape == (4, 2) and out["age"][2].tolist() == [0.0, 1.0]
    empty = index_features(features[2:3], {"zip_code": np.array(["", ""])})
    assert empty["zip_code"].shape == (2, 1)  # at least one column, all padding
    assert not empty["zip_code"].any()


def test_a_model_with_encoders_clones_saves_and_reloads(
    features: tuple[EncodedFeature, ...], tmp_path: Path
) -> None:
    import tf_keras as keras

    inputs = feature_inputs(features)
    indexed = {f.name: index_layer(f, f"{f.name}_index")(inputs[f.name]) for f in features}
    encoded = keras.layers.Concatenate()(encode_indexed(features, indexed, "user_attr_"))
    model = keras.Model(inputs, keras.layers.Dense(3)(encoded))
    batch = {k: tf.constant(v) for k, v in raw_inputs(features, COLUMNS).items()}
    expected = model(batch).numpy()
    assert np.isfinite(expected).all()

    with keras.utils.custom_object_scope(CUSTOM_LAYERS):
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(batch).numpy(), expected, rtol=1e-6)

    model.save_weights(str(tmp_path / "ckpt"))
    clone.load_weights(str(tmp_path / "ckpt")).assert_existing_objects_matched()
    tf.saved_model.save(model, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(loaded(batch, training=False).numpy(), expected, rtol=1e-5)
