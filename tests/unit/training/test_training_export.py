"""The output folder (staging, publish, ``_SUCCESS``) and the exported SavedModel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _tiny_data import TinyData
from recops.config import RETRIEVAL_K
from recops.dataset_spec import load_spec
from recops.io import SUCCESS_MARKER
from recops.layout import layout_from_spec
from recops.training import TrainResult
from recops.training.export import (
    OutputConflictError,
    load_completed,
    prepare_output_dir,
    publish,
)
from recops_models.tf_env import use_legacy_keras
from recops_models.two_tower import HISTORY_INPUT, HISTORY_PAD

use_legacy_keras()

#: ``TINY_DIM`` of the session fixture ``tiny_two_tower`` (tests/unit/conftest.py).
DIM = 16


def test_publish_then_load_completed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    backup = out / "backup"
    backup.mkdir(parents=True)
    staging = prepare_output_dir(out, {"a": 1}, backup)
    assert staging == out / "_staging" and not any(staging.iterdir())
    assert json.loads((out / "config.json").read_text()) == {"a": 1}
    assert backup.is_dir()  # same config: the backup is kept
    assert load_completed(out, {"a": 1}) is None  # no _SUCCESS yet

    (staging / "model").mkdir()
    (staging / "model" / "saved_model.pb").write_text("new")
    (staging / "split.parquet").write_text("rows")
    (out / "model").mkdir()
    (out / "model" / "stale.txt").write_text("old")
    publish(staging, out, ("model", "split.parquet"), {"k": 10})
    assert sorted(p.name for p in (out / "model").iterdir()) == ["saved_model.pb"]
    assert (out / "split.parquet").read_text() == "rows"
    assert (out / SUCCESS_MARKER).is_file() and not staging.exists()
    assert load_completed(out, {"a": 1}) == {"k": 10}
    with pytest.raises(OutputConflictError, match="different config"):
        load_completed(out, {"a": 2})
    assert issubclass(OutputConflictError, ValueError)


def test_another_config_drops_the_backup(tmp_path: Path) -> None:
    out = tmp_path / "run"
    prepare_output_dir(out, {"a": 1}, None)
    (out / "backup").mkdir()
    (out / "_staging" / "leftover").write_text("x")
    staging = prepare_output_dir(out, {"a": 2}, out / "backup")
    assert not (out / "backup").exists() and not any(staging.iterdir())
    assert json.loads((out / "config.json").read_text()) == {"a": 2}
    worker = prepare_output_dir(out, {"a": 2}, None, staging_name="_staging_worker1")
    assert worker == out / "_staging_worker1" and staging.is_dir()


def test_export_obeys_the_serving_contract(
    tiny_two_tower: TrainResult, tiny_data: TinyData
) -> None:
    import pandas as pd
    import tensorflow as tf

    trained, data = tiny_two_tower, tiny_data
    layout = layout_from_spec(load_spec(data.spec_uri))

    model = tf.saved_model.load(trained.model_dir)
    assert set(model.signatures) == {"serving_default", "user_embedding", "item_embeddings"}
    serve = model.signatures["serving_default"]
    _, inputs = serve.structured_input_signature
    # user_id plus one input per user attribute of the spec: raw strings or float32.
    assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in inputs.items()} == {
        "user_id": (tf.int64, [None]),
        **{
            f.name: (tf.string if f.is_string else tf.float32, [None]) for f in layout.user_features
        },
        HISTORY_INPUT: (tf.int64, [None, None]),
    }
    assert serve.structured_outputs["item_ids"].shape.as_list() == [None, RETRIEVAL_K]
    assert serve.structured_outputs["scores"].dtype == tf.float32

    # User 999 is unknown and its profile is odd: an unseen category, a missing number.
    users = pd.read_parquet(data.users_uri).set_index("user_id").loc[[1, 2]].reset_index()
    odd = {"user_id": 999, "age": np.nan, "gender": "X", "occupation": "pilot", "zip_code": ""}
    users = pd.concat([users, pd.DataFrame([odd])], ignore_index=True)
    request = {
        "user_id": tf.constant(users["user_id"].to_numpy(np.int64)),
        **{
            f.name: tf.constant(users[f.name].fillna("").astype(str).to_numpy())
            if f.is_string
            else tf.constant(users[f.name].to_numpy(np.float32))
            for f in layout.user_features
        },
        # User 1 has seen items 1 and 2, user 2 nothing (padding), user 999 item 3.
        HISTORY_INPUT: tf.constant([[1, 2], [HISTORY_PAD] * 2, [3, HISTORY_PAD]], tf.int64),
    }
    out = serve(**request)
    assert not {1, 2} & set(out["item_ids"].numpy()[0].tolist())
    assert 3 not in out["item_ids"].numpy()[2]
    assert out["item_ids"].dtype == tf.int64 and out["item_ids"].shape == (3, RETRIEVAL_K)
    scores = out["scores"].numpy()
    assert np.isfinite(scores).all() and np.all(np.diff(scores, axis=1) <= 1e-6)
    assert set(out["item_ids"].numpy().ravel()) <= set(range(1, data.n_items + 1))

    user = model.signatures["user_embedding"](**request)["embedding"].numpy()
    assert user.shape == (3, DIM) and user.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(user, axis=1), 1.0, rtol=1e-5)

    catalogue = model.signatures["item_embeddings"]()
    assert catalogue["item_ids"].numpy().tolist() == list(range(1, data.n_items + 1))
    assert catalogue["embeddings"].shape == (data.n_items, DIM)
    # The served top-K is the brute-force top-K over the stored candidates, less the seen.
    brute = user @ catalogue["embeddings"].numpy().T
    history = request[HISTORY_INPUT].numpy()
    seen = (catalogue["item_ids"].numpy()[None, None, :] == history[:, :, None]).any(axis=1)
    best = np.argsort(-np.where(seen, -np.inf, brute), axis=1)[:, :5]
    np.testing.assert_array_equal(catalogue["item_ids"].numpy()[best], out["item_ids"][:, :5])
