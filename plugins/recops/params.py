"""The DAG Params' JSON schemas, checked again inside the package (defence in depth).

Airflow validates a run's conf against each DAG's Param schemas before any task runs
(``SerializedDAG.create_dagrun``). The package checks the values once more where it
takes them (``recops.pipeline``, ``recops.promotion``), because its functions are also
called from the CLI and from tests, a task can be cleared with an edited conf, and
Airflow lets a conf carry keys no Param declares (with no schema at all). A value that
becomes part of a path or a subprocess argument (a model name, a variant, a version)
must never get there unchecked: ``../..`` or ``x; rm -rf /`` is refused here with a
``ValueError`` naming the param.

The schemas below are the DAG files' Params, key for key (``tests/dags/test_params.py``
asserts they are equal), so the UI form, a REST trigger and a direct call agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from recops.errors import ParamError

__all__ = [
    "NAME_PATTERN",
    "NIGHTLY_SCHEMAS",
    "PROMOTE_SCHEMAS",
    "REASON_PATTERN",
    "REPLAY_SCHEMAS",
    "VARIANT_NAMES",
    "check_model_name",
    "check_param",
    "check_params",
    "check_variant",
]

#: A name that is safe as one path component and as a shell word: a letter, then letters,
#: digits, ``_`` or ``-``. Python's ``$`` also matches before a final newline (jsonschema
#: uses ``re.search``), so ``(?!\n)`` pins the real end; in a browser's RegExp it is a no-op.
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$(?!\n)"
#: Free text without control characters (C0, DEL, C1): no newlines or escapes forged
#: into the ledger or a log line.
REASON_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$(?!\n)"
MAX_INT32 = 2**31 - 1

#: Compression variants (``recops.compression.VARIANTS``; kept here by value so this module
#: stays free of TensorFlow; a test checks the three lists agree).
VARIANT_NAMES = (
    "prune_50", "prune_80", "prune_90", "cluster_16", "int8_tables", "fp16_tables", "folded_fp32",
    "distill_d32", "distill_d32_int8", "ptq_dynamic", "ptq_float16", "ptq_int8", "qat_int8",
)  # fmt: skip

NIGHTLY_SCHEMAS: dict[str, dict[str, Any]] = {
    "epochs": {"type": "integer", "minimum": 1, "maximum": 200},
    "embedding_dim": {"type": "integer", "minimum": 4, "maximum": 512},
    "batch_size": {"type": "integer", "minimum": 16, "maximum": 65536},
    "learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
    "temperature": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
    "replicas": {"type": "integer", "minimum": 1, "maximum": 16},
    "early_stopping_patience": {"type": "integer", "minimum": 0, "maximum": 50},
    "protocol": {"type": "string", "enum": ["random", "temporal"]},
    "ranker_epochs": {"type": "integer", "minimum": 1, "maximum": 200},
    "max_rmse": {"type": "number", "exclusiveMinimum": 0, "maximum": 5},
    "variants": {
        "type": "array",
        "items": {"type": "string", "enum": list(VARIANT_NAMES)},
        "minItems": 1,
        "maxItems": 13,
        "uniqueItems": True,
    },  # fmt: skip
    "fine_tune_epochs": {"type": "integer", "minimum": 1, "maximum": 20},
    "quality_budget": {"type": "number", "minimum": 0, "maximum": 1},
    "min_recall_at_10": {"type": "number", "minimum": 0, "maximum": 1},
    "min_ndcg_at_10": {"type": "number", "minimum": 0, "maximum": 1},
    "max_relative_drop": {"type": "number", "minimum": 0, "maximum": 1},
    "seed": {"type": "integer", "minimum": 0, "maximum": MAX_INT32},
}

PROMOTE_SCHEMAS: dict[str, dict[str, Any]] = {
    "model_name": {"type": "string", "enum": ["recops_retrieval", "recops_ranking"]},
    "version": {"type": ["null", "integer"], "minimum": 1, "maximum": MAX_INT32},
    "alias": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 64},
    "action": {"type": "string", "enum": ["promote", "rollback"]},
    "force": {"type": "boolean"},
    "reason": {"type": "string", "maxLength": 500, "pattern": REASON_PATTERN},
}

REPLAY_SCHEMAS: dict[str, dict[str, Any]] = {
    "replay_model_version": {"type": "integer", "minimum": 1, "maximum": MAX_INT32},
    "tolerance": {"type": "number", "minimum": 0, "maximum": 1},
}


def _shown(value: Any) -> str:
    # A 10 MB conf value must not become a 10 MB error message or log line.
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} chars)"


def _non_finite(value: Any) -> bool:
    # JSON Schema bounds never reject NaN (every comparison with it is false), and
    # Python's json accepts NaN and Infinity.
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False


def check_param(name: str, value: Any, schema: Mapping[str, Any]) -> Any:
    """Check one param value against its JSON schema.

    Args:
        name: The param's name (used in the error).
        value: The value to check.
        schema: Its JSON schema (one of this module's ``*_SCHEMAS`` entries).

    Returns:
        ``value``, unchanged.

    Raises:
        ValueError: The value does not satisfy the schema, or is NaN or infinite; the
            message names the param and (shortened) the value.
    """
    from jsonschema import Draft202012Validator

    if _non_finite(value):
        raise ParamError(f"param {name!r}: {_shown(value)} is not a finite number")
    error = next(iter(Draft202012Validator(dict(schema)).iter_errors(value)), None)
    if error is not None:
        raise ParamError(
            f"param {name!r}: {_shown(value)} is invalid (fails {error.validator} {_shown(error.validator_value)})"
        )
    return value


def check_params(
    params: Mapping[str, Any], schemas: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Check every param of a run against its DAG's schemas; unknown keys are refused.

    Args:
        params: The run's params (a subset of ``schemas``' keys).
        schemas: ``NIGHTLY_SCHEMAS``, ``PROMOTE_SCHEMAS`` or ``REPLAY_SCHEMAS``.

    Returns:
        A plain dict copy of ``params``.

    Raises:
        ValueError: A key no Param declares, or a value its schema refuses.
    """
    unknown = sorted(str(k) for k in params if k not in schemas)
    if unknown:
        raise ParamError(
            f"unknown params {[_shown(k) for k in unknown]}; expected a subset of {sorted(schemas)}"
        )
    return {name: check_param(name, value, schemas[name]) for name, value in params.items()}


def check_model_name(value: Any, *, name: str = "model_name") -> str:
    """A registered model name that is safe as a path component (``NAME_PATTERN``).

    Raises:
        ValueError: Not a string, or not a plain name (``../..``, ``a;rm -rf /``...).
    """
    check_param(name, value, {"type": "string", "pattern": NAME_PATTERN, "maxLength": 64})
    return str(value)


def check_variant(value: Any) -> str:
    """One compression variant name (it becomes part of the variant's output folder).

    Raises:
        ValueError: Not one of ``VARIANT_NAMES``.
    """
    check_param("variants", value, NIGHTLY_SCHEMAS["variants"]["items"])
    return str(value)
