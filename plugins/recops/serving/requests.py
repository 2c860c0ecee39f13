"""Model-server requests built from a signature's inputs, whatever the dataset's columns.

A served model's inputs are ``user_id``, one input per user attribute it was trained with
(named by the attribute; a string or a float), and for the ranker its numeric context
features and ``item_ids``. The callers here never list those names: they read them from
the signature, either from the model server's metadata (``metadata_inputs``) or from a
SavedModel loaded in-process (``loaded_inputs``); ``context_frame`` adds a ranker's
context features from the online store, and ``row_instances`` turns a frame of users
into the row-format instances TF Serving takes.

A missing value travels as the model expects it: ``""`` for a string input (out of
vocabulary), NaN for a float input (the model's "missing" flag), 0 for an integer one.

Only numpy and pandas are imported at module level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from recops_models.contract import HISTORY_INPUT, HISTORY_PAD

from recops.errors import DataError

if TYPE_CHECKING:
    from recops.config import Settings

__all__ = [
    "DEFAULT_SIGNATURE",
    "context_frame",
    "json_value",
    "loaded_inputs",
    "metadata_inputs",
    "row_instances",
]

#: The signature a predict request calls when it names none.
DEFAULT_SIGNATURE = "serving_default"

#: TF Serving's metadata dtypes, as the dtype names ``tf.DType.name`` gives.
_METADATA_DTYPES = {
    "DT_STRING": "string",
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_HALF": "float16",
    "DT_INT64": "int64",
    "DT_INT32": "int32",
    "DT_BOOL": "bool",
}


def metadata_inputs(
    metadata: Mapping[str, Any], signature: str = DEFAULT_SIGNATURE
) -> dict[str, str]:
    """Input name -> dtype (``int64``, ``float32``, ``string``...) of one served signature.

    Args:
        metadata: A model server's ``GET .../metadata`` reply.
        signature: The signature's name.

    Raises:
        DataError: If the reply has no such signature.
    """
    try:
        defs = metadata["metadata"]["signature_def"]["signature_def"]
        inputs = defs[signature]["inputs"]
    except (KeyError, TypeError) as exc:
        model = (metadata.get("model_spec") or {}).get("name", "?")
        raise DataError(f"model {model!r} serves no signature {signature!r}") from exc
    return {
        name: _METADATA_DTYPES.get(str(info.get("dtype")), str(info.get("dtype")))
        for name, info in inputs.items()
    }


def loaded_inputs(signature: Any) -> dict[str, str]:
    """Input name -> dtype name of a signature loaded with ``tf.saved_model.load``."""
    _, inputs = signature.structured_input_signature
    return {name: str(spec.dtype.name) for name, spec in inputs.items()}


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def json_value(value: Any, dtype: str) -> Any:
    """``value`` as a JSON value of an input of ``dtype`` (lists element by element)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [json_value(v, dtype) for v in value]
    if dtype == "string":
        if _missing(value):
            return ""
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if dtype.startswith("float"):
        return math.nan if _missing(value) else float(value)
    if dtype == "bool":
        return False if _missing(value) else bool(value)
    return 0 if _missing(value) else int(value)


def row_instances(
    frame: pd.DataFrame, inputs: Mapping[str, str], **fixed: Sequence[Any]
) -> list[dict[str, Any]]:
    """Row-format instances holding exactly ``inputs``, one per row of ``frame``.

    Args:
        frame: One row per instance; its columns (or index level) named like the inputs.
        inputs: Input name -> dtype (``metadata_inputs`` / ``loaded_inputs``).
        **fixed: Per-row values of inputs not in ``frame`` (``item_ids=[[...], ...]``).
            A retrieval model's ``history_item_ids`` given neither way is empty (``[-1]``).

    Returns:
        JSON-ready dicts, values converted to each input's dtype (missing: ``""``, NaN, 0).

    Raises:
        DataError: If an input is neither fixed nor a column of ``frame``, or a fixed
            value does not have one entry per row.
    """
    columns: dict[str, list[Any]] = {}
    missing = []
    for name in inputs:
        if name in fixed:
            values = list(fixed[name])
            if len(values) != len(frame):
                raise DataError(f"input {name!r}: {len(values)} values given for {len(frame)} rows")
            columns[name] = values
        elif name in frame.columns:
            columns[name] = frame[name].tolist()
        elif name in (frame.index.names or ()):
            columns[name] = frame.index.get_level_values(name).tolist()
        elif name == HISTORY_INPUT:
            # No history known to the caller (a smoke or load request): an empty one.
            columns[name] = [[HISTORY_PAD]] * len(frame)
        else:
            missing.append(name)
    if missing:
        raise DataError(
            f"the model takes inputs {missing} that the data does not have "
            f"(it has {[*(n for n in frame.index.names if n), *frame.columns]})"
        )
    return [
        {name: json_value(columns[name][row], dtype) for name, dtype in inputs.items()}
        for row in range(len(frame))
    ]


def context_frame(
    settings: Settings, profiles: pd.DataFrame, inputs: Sequence[str]
) -> pd.DataFrame:
    """``profiles`` plus the ranker's context features it lacks, from the online store.

    Context features are the ranker's inputs that are neither a profile column nor
    ``user_id`` / ``item_ids`` / ``history_item_ids``: its numeric activity features (the
    ``user_activity`` view). A value the online store no longer holds (a TTL passed: no
    recent events) is 0, which is what the training set says for "no events in the
    window".

    Args:
        settings: The dataset's settings (its Feast project).
        profiles: One row per user, with ``user_id`` and the user's attributes.
        inputs: The ranker's input names.
    """
    from recops.features import online_features

    not_context = ("user_id", "item_ids", HISTORY_INPUT)
    context = [n for n in inputs if n not in profiles.columns and n not in not_context]
    if not context:
        return profiles
    refs = [f"user_activity:{name}" for name in context]
    ids = [int(u) for u in profiles["user_id"]]
    activity = online_features("user_id", ids, refs, settings)
    values = {name: [float(row.get(name) or 0.0) for row in activity] for name in context}
    return profiles.assign(**values)
