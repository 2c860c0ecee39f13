"""The client side of the ranker's ``rank`` signature, shared by ranking and evaluation.

``load_signatures`` loads a SavedModel and checks it has the signatures a caller needs;
``rank_inputs`` lists the numeric user features a ranker takes; ``rank_request`` builds
the keyword arguments of one ``rank`` call; ``rating_rmse`` scores the rating head on
labelled rows. The ranker stage uses them to test the model it exported, evaluation to
re-rank with it.

This module is a leaf (it imports no other recops stage). TensorFlow is imported inside
the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from recops_models.tf_env import tensorflow

from recops.errors import DataError
from recops.tables import InputMissingError

__all__ = [
    "RANK_BASE_INPUTS",
    "load_signatures",
    "rank_inputs",
    "rank_request",
    "rating_rmse",
]

#: Inputs of the ranker's ``rank`` signature that are not numeric user features.
RANK_BASE_INPUTS = ("user_id", "age", "gender", "occupation", "item_ids")


def load_signatures(model_dir: str, names: Sequence[str]) -> Any:
    """Load the SavedModel in ``model_dir`` and check that it has the signatures ``names``.

    Raises:
        InputMissingError: If ``model_dir`` does not exist (a ``FileNotFoundError``).
        DataError: If a signature is missing.
    """
    if not Path(model_dir).is_dir():
        raise InputMissingError(f"model_dir not found: {model_dir}")
    tf = tensorflow()

    loaded = tf.saved_model.load(model_dir)
    for name in names:
        if name not in loaded.signatures:
            raise DataError(f"SavedModel {model_dir} lacks signature {name!r}")
    return loaded


def rank_inputs(loaded: Any, model_dir: str) -> tuple[str, ...]:
    """Names of the numeric user features the ranker's ``rank`` signature takes."""
    if "rank" not in loaded.signatures:
        raise DataError(f"SavedModel {model_dir} lacks signature 'rank'")
    _, inputs = loaded.signatures["rank"].structured_input_signature
    return tuple(sorted(name for name in inputs if name not in RANK_BASE_INPUTS))


def rating_rmse(
    model_dir: str,
    rows: pd.DataFrame,
    *,
    batch_size: int = 8192,
) -> float:
    """RMSE of the ranker's rating head on labelled rows, through its ``rank`` signature.

    Args:
        model_dir: Ranker SavedModel.
        rows: One row per (user, item) with ``user_id, item_id, rating, age, gender,
            occupation`` and the ranker's numeric user features (for example the test
            rows of the ranking training set).
        batch_size: Rows scored per call.

    Returns:
        The root mean squared error.

    Raises:
        DataError: If ``rows`` is empty or lacks a column the ranker needs (a ``ValueError``).
    """
    loaded = load_signatures(model_dir, ("rank",))
    numeric = rank_inputs(loaded, model_dir)
    needed = ("user_id", "item_id", "rating", "age", "gender", "occupation", *numeric)
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise DataError(f"rating_rmse: rows lack columns {missing}")
    if rows.empty:
        raise DataError("rating_rmse: no rows to score")
    rank = loaded.signatures["rank"]
    errors = []
    for start in range(0, len(rows), batch_size):
        part = rows.iloc[start : start + batch_size]
        inputs = rank_request(part, part["item_id"].to_numpy().reshape(-1, 1), numeric)
        predicted = rank(**inputs)["ratings"].numpy()[:, 0]
        errors.append(predicted - part["rating"].to_numpy(np.float64))
    return float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))


def rank_request(profiles: pd.DataFrame, item_ids: np.ndarray, numeric: Sequence[str]) -> Any:
    """Keyword arguments of one ``rank`` call: user columns of ``profiles`` and items."""
    tf = tensorflow()

    inputs = {
        "age": tf.constant(profiles["age"].to_numpy().astype(np.int64)),
        "gender": tf.constant(profiles["gender"].to_numpy().astype(str)),
        "occupation": tf.constant(profiles["occupation"].to_numpy().astype(str)),
        "item_ids": tf.constant(np.asarray(item_ids, dtype=np.int64)),
    }
    if "user_id" in profiles.columns:
        inputs["user_id"] = tf.constant(profiles["user_id"].to_numpy().astype(np.int64))
    else:
        inputs["user_id"] = tf.constant(profiles.index.to_numpy().astype(np.int64))
    for name in numeric:
        inputs[name] = tf.constant(profiles[name].to_numpy().astype(np.float32))
    return inputs
