"""The client side of exported signatures, shared by ranking, evaluation and serving.

``load_signatures`` loads a SavedModel and checks it has the signatures a caller needs;
``signature_request`` builds the keyword arguments of one call of any loaded signature
(the ranker's ``rank``, the retrieval model's ``serving_default``) from a frame, taking
each input's name and dtype from the signature itself; ``rank_inputs`` lists the numeric
context features a ranker takes (the ones the caller looks up besides the user's
profile); ``weight_rmse`` scores the ranker's weight head on labelled rows.

Nothing here knows a dataset's feature names: they come from the model.

This module is a leaf (it imports no other recops stage). TensorFlow is imported inside
the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from recops_models.contract import HISTORY_INPUT, HISTORY_PAD
from recops_models.tf_env import tensorflow

from recops.errors import DataError
from recops.tables import InputMissingError

__all__ = [
    "load_signatures",
    "rank_inputs",
    "signature_inputs",
    "signature_request",
    "weight_rmse",
]

#: Attribute of an exported ranker (a string variable) naming its context features.
CONTEXT_ATTRIBUTE = "context_features"


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


def signature_inputs(signature: Any) -> dict[str, Any]:
    """The named inputs of a loaded signature: name -> ``tf.TensorSpec``."""
    _, inputs = signature.structured_input_signature
    return dict(inputs)


def rank_inputs(loaded: Any, model_dir: str) -> tuple[str, ...]:
    """Names of the numeric context features the ranker's ``rank`` signature takes.

    The ranker records them at export (``dcn.export_ranking_model``), so a caller can tell
    them from the user's profile features: the profile comes from the users table, the
    context features from the feature store (recent activity and popularity).

    Raises:
        DataError: If the model has no ``rank`` signature or does not record them.
    """
    if "rank" not in loaded.signatures:
        raise DataError(f"SavedModel {model_dir} lacks signature 'rank'")
    recorded = getattr(loaded, CONTEXT_ATTRIBUTE, None)
    if recorded is None:
        raise DataError(
            f"ranker {model_dir} does not record its context features; "
            "hint: retrain it with this version of recops"
        )
    return tuple(v.decode() for v in recorded.numpy().tolist())


def _index_or_column(frame: pd.DataFrame, name: str) -> pd.Series | None:
    if name in frame.columns:
        return frame[name]
    if name in (frame.index.names or ()):
        return frame.index.get_level_values(name).to_series(index=frame.index)
    return None


def _column_tensor(tf: Any, name: str, spec: Any, values: pd.Series) -> Any:
    """One frame column as a tensor of the input's dtype; missing never fails for features."""
    if spec.dtype == tf.string:
        strings = values.astype(object).where(values.notna(), "").astype(str)
        return tf.constant(strings.to_numpy(dtype=str).astype(object), tf.string)
    if spec.dtype.is_floating:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        return tf.constant(numbers, spec.dtype)
    if values.isna().any():
        raise DataError(f"signature input {name!r}: the frame's column has missing values")
    return tf.constant(values.to_numpy().astype(spec.dtype.as_numpy_dtype), spec.dtype)


def signature_request(signature: Any, frame: pd.DataFrame, **fixed: Any) -> dict[str, Any]:
    """Keyword arguments of one call of ``signature``, one row of ``frame`` per example.

    Each input of the signature takes, in this order: the ``fixed`` value of that name
    (for example ``item_ids=[b, k]`` candidates), else the frame's column (or index
    level) of that name, converted to the input's dtype: strings with ``""`` for
    missing (out of vocabulary to the model), floats with NaN for missing (the model's
    "missing" flag), integers as they are. A retrieval model's ``history_item_ids``
    that is neither fixed nor a column is an empty history per row.

    Args:
        signature: A loaded signature (``loaded.signatures[name]``).
        frame: One row per example.
        **fixed: Values for inputs not taken from ``frame`` (arrays or tensors).

    Returns:
        Tensors by input name, ready for ``signature(**request)``.

    Raises:
        DataError: If an input is neither fixed nor a column of ``frame``, a
            multi-dimensional input is not fixed, an integer column has missing values,
            or a fixed name is not an input.
    """
    tf = tensorflow()

    inputs = signature_inputs(signature)
    unknown = sorted(set(fixed) - set(inputs))
    if unknown:
        raise DataError(f"signature takes no inputs {unknown}; it takes {sorted(inputs)}")
    request: dict[str, Any] = {}
    missing = []
    for name, spec in inputs.items():
        if name in fixed:
            request[name] = tf.cast(tf.convert_to_tensor(fixed[name]), spec.dtype)
            continue
        values = _index_or_column(frame, name)
        if values is None and name == HISTORY_INPUT:
            # A caller that knows no history sends an empty one: nothing is excluded,
            # which is what a model without the input did.
            request[name] = tf.fill([len(frame), 1], tf.constant(HISTORY_PAD, spec.dtype))
        elif values is None:
            missing.append(name)
        elif spec.shape.rank is not None and spec.shape.rank != 1:
            raise DataError(f"signature input {name!r} has rank {spec.shape.rank}; pass it fixed")
        else:
            request[name] = _column_tensor(tf, name, spec, values)
    if missing:
        raise DataError(
            f"signature inputs {missing} are neither columns of the frame nor given; "
            f"the frame has {list(frame.columns)}"
        )
    return request


def weight_rmse(
    model_dir: str,
    rows: pd.DataFrame,
    *,
    batch_size: int = 8192,
    history: np.ndarray | None = None,
) -> float:
    """RMSE of the ranker's weight head on labelled rows, through its ``rank`` signature.

    The head predicts an interaction's ``weight`` (the explicit value when the dataset has
    one, else the event type's weight); the signature returns it as ``ratings``.

    Args:
        model_dir: Ranker SavedModel.
        rows: One row per (user, item) with ``item_id``, ``weight`` and every user-side
            input of the ``rank`` signature (``user_id``, the user's features and the
            context features), for example the test rows of the ranking training set.
            Item features come from the model's catalogue.
        batch_size: Rows scored per call.
        history: Each row's ``HISTORY_INPUT`` (``[len(rows), L]``) for a ranker that
            takes one; None sends empty histories.

    Returns:
        The root mean squared error.

    Raises:
        DataError: If ``rows`` is empty or lacks a column the ranker needs (a ``ValueError``).
    """
    loaded = load_signatures(model_dir, ("rank",))
    rank = loaded.signatures["rank"]
    needed = [
        "item_id",
        "weight",
        *(n for n in signature_inputs(rank) if n not in ("item_ids", HISTORY_INPUT)),
    ]
    missing = [c for c in needed if _index_or_column(rows, c) is None]
    if missing:
        raise DataError(f"weight_rmse: rows lack columns {missing}")
    if rows.empty:
        raise DataError("weight_rmse: no rows to score")
    errors = []
    for start in range(0, len(rows), batch_size):
        part = rows.iloc[start : start + batch_size]
        items = part["item_id"].to_numpy(np.int64).reshape(-1, 1)
        fixed = {} if history is None else {HISTORY_INPUT: history[start : start + batch_size]}
        predicted = rank(**signature_request(rank, part, item_ids=items, **fixed))[
            "ratings"
        ].numpy()
        errors.append(predicted[:, 0] - part["weight"].to_numpy(np.float64))
    return float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
