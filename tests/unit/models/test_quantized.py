"""The folded, quantized retrieval export: same signatures, scores close to the float one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _tiny_tower import Tiny, train_tiny
from recops_models.tf_env import tensorflow

tf = tensorflow()

from recops_models.quantized import (  # noqa: E402
    dequantize_rows,
    export_quantized_retrieval_model,
    fold_user_tower,
    quantize_rows,
)
from recops_models.two_tower import (  # noqa: E402
    HISTORY_INPUT,
    HISTORY_PAD,
    export_retrieval_model,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A two-tower trained a few epochs on the tiny data."""
    return train_tiny(tmp_path_factory.mktemp("tiny"))


def _request(users: pd.DataFrame, history: np.ndarray | None = None) -> dict[str, Any]:
    ids = np.append(users["user_id"].to_numpy(), 10_000)  # plus an unknown user
    if history is None:
        history = np.full((len(ids), 1), HISTORY_PAD, np.int64)
    return {
        HISTORY_INPUT: tf.constant(history, tf.int64),
        "user_id": tf.constant(ids, tf.int64),
        "age": tf.constant(np.append(users["age"].to_numpy(), np.nan), tf.float32),
        "gender": tf.constant([*users["gender"], "X"]),
        "occupation": tf.constant([*users["occupation"], ""]),
        "zip_code": tf.constant([*users["zip_code"], "00000"]),
    }


@pytest.fixture(scope="module")
def float_model(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("float")
    export_retrieval_model(
        model=tiny.model, spec=tiny.spec, items=tiny.catalogue, export_dir=root / "m", k=10
    )
    return tf.saved_model.load(str(root / "m"))


def test_quantize_rows_round_trips_within_half_a_step() -> None:
    matrix = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    matrix[2] = 0.0
    values, scales = quantize_rows(matrix)
    assert values.dtype == np.int8 and scales[2] == 1.0
    np.testing.assert_allclose(dequantize_rows(values, scales), matrix, atol=scales.max() / 2)


def test_fold_folds_the_small_tables_and_keeps_the_text_table_narrow(tiny: Tiny) -> None:
    tower = fold_user_tower(tiny.model, tiny.spec, "int8")
    assert tower.user.shape == (len(tiny.spec.user_ids) + 1, 16)
    assert list(tower.features) == ["age", "gender", "occupation", "zip_code"]
    age, gender, zip_code = (tower.features[n] for n in ("age", "gender", "zip_code"))
    assert age.table is None and age.projection is not None
    assert age.projection.shape == (2, 16)  # value and missing flag
    # Three rows of 16 take fewer bytes than three of 4 plus a [4, 16] float slice.
    assert gender.folded and gender.table is not None and gender.table.shape == (3, 16)
    # A hashed text table stays 4 wide: folding it would quadruple it at dim 16.
    rows = tiny.spec.user_features[3].buckets + 1
    assert not zip_code.folded
    assert zip_code.table is not None and zip_code.table.shape == (rows, 4)
    assert zip_code.projection is not None and zip_code.projection.shape == (4, 16)


def _float32_fold(tiny: Tiny, export_dir: Path) -> Any:
    """The float32-table export of ``tiny`` (folded, not quantized), loaded."""
    export_quantized_retrieval_model(
        model=tiny.model,
        spec=tiny.spec,
        items=tiny.catalogue,
        export_dir=export_dir,
        k=10,
        table_dtype="float32",
    )
    return tf.saved_model.load(str(export_dir))


def test_fold_keeps_the_tower_output(tiny: Tiny) -> None:
    # The fold is exact: gender's folded rows are its trained rows times its kernel slice.
    tower = fold_user_tower(tiny.model, tiny.spec)
    trained = tiny.model.get_layer("user_attr_gender_embedding").get_weights()[0]
    kernel = tiny.model.get_layer("user_projection").get_weights()[0]
    start = 16 + 2  # after the id embedding and age's pair
    gender = tower.features["gender"].table
    assert gender is not None
    np.testing.assert_allclose(gender, trained @ kernel[start : start + 4], atol=1e-6)
    with pytest.raises(ValueError, match="table_dtype"):
        fold_user_tower(tiny.model, tiny.spec, "int4")


def test_float32_fold_gives_the_float_model_embeddings(
    tiny: Tiny, float_model: Any, tmp_path: Path
) -> None:
    folded = _float32_fold(tiny, tmp_path / "q")
    request = _request(tiny.users)
    np.testing.assert_allclose(
        folded.signatures["user_embedding"](**request)["embedding"].numpy(),
        float_model.signatures["user_embedding"](**request)["embedding"].numpy(),
        atol=1e-5,
    )


def test_int8_export_keeps_the_signatures_and_scores_close(
    tiny: Tiny, float_model: Any, tmp_path: Path
) -> None:
    k = export_quantized_retrieval_model(
        model=tiny.model, spec=tiny.spec, items=tiny.catalogue, export_dir=tmp_path / "q", k=10
    )
    assert k == 10
    quantized = tf.saved_model.load(str(tmp_path / "q"))
    for name in ("serving_default", "user_embedding", "item_embeddings"):
        assert (
            quantized.signatures[name].structured_input_signature
            == float_model.signatures[name].structured_input_signature
        )
    # Every row has seen the float model's top 3 (rows padded to different lengths): the
    # int8 export masks them as the float one does.
    unmasked = float_model.signatures["serving_default"](**_request(tiny.users))
    history = np.full((len(tiny.users) + 1, 4), HISTORY_PAD, np.int64)
    history[:, :3] = unmasked["item_ids"].numpy()[:, :3]
    history[::2, 2] = HISTORY_PAD
    request = _request(tiny.users, history)
    got = quantized.signatures["serving_default"](**request)
    want = float_model.signatures["serving_default"](**request)
    for seen, served in zip(history, got["item_ids"].numpy(), strict=True):
        assert not set(seen) & set(served)
    assert np.isfinite(got["scores"].numpy()).all()
    np.testing.assert_allclose(got["scores"].numpy(), want["scores"].numpy(), atol=0.03)
    overlap = np.mean(
        [
            len(set(a) & set(b)) / 10
            for a, b in zip(got["item_ids"].numpy(), want["item_ids"].numpy(), strict=True)
        ]
    )
    assert overlap >= 0.8, overlap
    catalogue = quantized.signatures["item_embeddings"]()
    assert catalogue["embeddings"].dtype == tf.float32


def _variables_bytes(export_dir: Path) -> int:
    return sum(f.stat().st_size for f in (export_dir / "variables").iterdir())


def test_quantized_tables_are_smaller_than_the_float_model(tiny: Tiny, tmp_path: Path) -> None:
    export_retrieval_model(
        model=tiny.model, spec=tiny.spec, items=tiny.catalogue, export_dir=tmp_path / "f", k=10
    )
    sizes = {"float": _variables_bytes(tmp_path / "f")}
    for dtype in ("float32", "float16", "int8"):
        export_quantized_retrieval_model(
            model=tiny.model,
            spec=tiny.spec,
            items=tiny.catalogue,
            export_dir=tmp_path / dtype,
            k=10,
            table_dtype=dtype,
        )
        sizes[dtype] = _variables_bytes(tmp_path / dtype)
    # The fold never grows the model; halving or quartering the tables shows in the total.
    assert sizes["float32"] <= sizes["float"], sizes
    assert sizes["float16"] < 0.6 * sizes["float"], sizes
    assert sizes["int8"] < 0.8 * sizes["float16"], sizes


def test_unknown_table_dtype_is_refused(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="table_dtype"):
        export_quantized_retrieval_model(
            model=tiny.model,
            spec=tiny.spec,
            items=tiny.catalogue,
            export_dir=tmp_path / "q",
            k=10,
            table_dtype="int4",
        )


@pytest.fixture(scope="module")
def tiny_history(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A two-tower with a 5-entry history encoding, trained on the tiny data."""
    return train_tiny(tmp_path_factory.mktemp("tiny_history"), history_length=5)


def _histories(tiny: Tiny, rows: int) -> np.ndarray:
    """Real items, newest first, of varied lengths (empty, short, past the model's 5)."""
    items = tiny.items["item_id"].to_numpy(np.int64)
    history = np.full((rows, 7), HISTORY_PAD, np.int64)
    for row in range(rows):
        count = row % 8
        history[row, :count] = items[(row * 3 + np.arange(count)) % items.size]
    history[1, 0] = 999_999  # an item the model does not know: skipped by the pool
    return history


def test_history_encoding_moves_known_users_and_folds_exactly(
    tiny_history: Tiny, tmp_path: Path
) -> None:
    tiny = tiny_history
    assert tiny.spec.history_length == 5
    export_retrieval_model(
        model=tiny.model, spec=tiny.spec, items=tiny.catalogue, export_dir=tmp_path / "f", k=10
    )
    float_model = tf.saved_model.load(str(tmp_path / "f"))
    rows = len(tiny.users) + 1
    history = _histories(tiny, rows)
    with_history = _request(tiny.users, history)
    embed = float_model.signatures["user_embedding"]
    got = embed(**with_history)["embedding"].numpy()
    empty = embed(**_request(tiny.users))["embedding"].numpy()
    # Known users with a history are embedded differently; an empty history changes
    # nothing; entries past the model's 5 are ignored.
    has = np.isin(history[:-1], tiny.items["item_id"].to_numpy()).any(axis=1)
    assert not has[1]  # row 1 holds only the unknown item
    moved = np.abs(got[:-1] - empty[:-1]).max(axis=1) > 1e-4
    np.testing.assert_array_equal(moved, has)
    longer = history.copy()
    longer[:, 5:] = tiny.items["item_id"].to_numpy()[0]
    # (Known users only: an unknown one is pooled from up to HISTORY_POOL_MAX entries.)
    np.testing.assert_allclose(
        embed(**_request(tiny.users, longer))["embedding"].numpy()[:-1], got[:-1], atol=1e-6
    )
    # The float32 fold gives the float model's embeddings, history included.
    folded = _float32_fold(tiny, tmp_path / "q")
    np.testing.assert_allclose(
        folded.signatures["user_embedding"](**with_history)["embedding"].numpy(), got, atol=1e-5
    )
    tower = fold_user_tower(tiny.model, tiny.spec, "int8")
    assert tower.history is not None and tower.history.folded
