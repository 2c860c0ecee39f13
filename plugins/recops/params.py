"""Every run-time knob, declared once: its default, JSON schema, title and description.

The DAG Params (the UI's trigger form), the JSON schemas the package checks again, the
defaults, the stage configs' field defaults and replay's mapping from a version's recorded
Params back to stage configs are all derived from the ``Knob`` tuples below
(``NIGHTLY``, ``REPLAY``, ``promote_knobs``). Change a default here and the form, the
pipeline, ``TrainConfig()`` and replay all see it.

The package checks a run's values again where it takes them (``merged_params``,
``check_params``) because its functions are also called from the CLI and from tests, a
task can be cleared with an edited conf, and Airflow lets a conf carry keys no Param
declares. A value that becomes part of a path or a subprocess argument (a model name, a
variant, a version) must never get there unchecked: ``../..`` or ``x; rm -rf /`` is refused
with a ``ParamError`` naming the param.

This module is light (no Airflow, no TensorFlow at import): DAG files and the package
both import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recops.errors import ParamError

__all__ = [
    "HISTORY_MAX",
    "NAME_PATTERN",
    "NIGHTLY",
    "NIGHTLY_DEFAULTS",
    "NIGHTLY_SCHEMAS",
    "REASON_PATTERN",
    "REPLAY",
    "REPLAY_SCHEMAS",
    "UI_REASON",
    "VARIANTS",
    "VARIANT_NAMES",
    "Knob",
    "check_model_name",
    "check_param",
    "check_params",
    "check_variant",
    "dag_params",
    "defaults",
    "merged_params",
    "promote_knobs",
    "promote_schemas",
    "schemas",
    "stage_default",
    "stage_fields",
]

#: A name that is safe as one path component and as a shell word: a letter, then letters,
#: digits, ``_`` or ``-``. Python's ``$`` also matches before a final newline (jsonschema
#: uses ``re.search``), so ``(?!\n)`` pins the real end; in a browser's RegExp it is a no-op.
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$(?!\n)"
#: Free text without control characters (C0, DEL, C1): no newlines or escapes forged
#: into the ledger or a log line.
REASON_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$(?!\n)"
MAX_INT32 = 2**31 - 1
#: The promotion reason a trigger form starts with.
UI_REASON = "manual promotion from the Airflow trigger form"

#: Every compression variant, with what it does, in the order the UI lists them (the
#: form shows the text beside each name). ``recops.compression`` dispatches each name to
#: its builder; this module stays free of TensorFlow.
VARIANTS: dict[str, str] = {
    "prune_50": "magnitude pruning of Dense+Embedding to 50%, stripped SavedModel",
    "prune_80": "magnitude pruning of Dense+Embedding to 80%, stripped SavedModel",
    "prune_90": "magnitude pruning of Dense+Embedding to 90%, stripped SavedModel",
    "cluster_16": "weight clustering of Dense+Embedding (16 centroids), stripped SavedModel",
    "int8_tables": "folded user tower, int8 tables + per-row scales, SavedModel",
    "fp16_tables": "folded user tower, float16 tables, SavedModel",
    "folded_fp32": "folded user tower, float32 tables (ablation of the fold), SavedModel",
    "distill_d32": "student with 32-d embeddings trained on teacher scores, SavedModel",
    "distill_d32_int8": "32-d student with int8 tables, SavedModel",
    "ptq_dynamic": "TFLite dynamic-range PTQ (float SavedModel served)",
    "ptq_float16": "TFLite float16 PTQ (float SavedModel served)",
    "ptq_int8": "TFLite full-int8 PTQ, calibrated on training users (float SavedModel served)",
    "qat_int8": "TFLite int8 after QAT of the user tower (float SavedModel served)",
}
VARIANT_NAMES = tuple(VARIANTS)


@dataclass(frozen=True, kw_only=True)
class Knob:
    """One run-time choice.

    Attributes:
        name: The Param's name (the key in a run's conf).
        default: The value a run gets when the conf does not set it.
        schema: Its JSON schema (type, bounds, enum...), without annotations.
        title: Short label for the trigger form.
        description: One sentence on what it changes, shown under the field.
        feeds: ``(stage, field)`` pairs: the stage configs whose field takes this value
            (``"train"``: ``TrainConfig``, ``"rank"``: ``RankerConfig``, ``"compress"``:
            ``VariantConfig``, ``"select"``: ``SelectConfig``, ``"gate"``: ``GateConfig``).
    """

    name: str
    default: Any
    schema: Mapping[str, Any]
    title: str
    description: str
    feeds: tuple[tuple[str, str], ...] = ()


#: The longest history a model pools (the ``history_length`` knob's and the dataset
#: spec's ``training.history_length`` bound).
HISTORY_MAX = 200


def _int(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def _share() -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": 1}


def _positive(low: float, high: float) -> dict[str, Any]:
    # A floor the trigger form can enforce: Airflow 3.3's number field takes its bounds
    # from ``minimum`` / ``maximum`` only (``exclusiveMinimum: 0`` let 0 reach the server).
    return {"type": "number", "minimum": low, "maximum": high}


#: The dataset a run works on unless its conf names another (kept equal to
#: ``recops.config.DEFAULT_DATASET``; this module does not import the config).
DEFAULT_DATASET = "movielens-100k"

# Training defaults were picked on ml-100k's valid split (see benchmarks/quality.py).
NIGHTLY: tuple[Knob, ...] = (
    Knob(
        name="dataset",
        default=DEFAULT_DATASET,
        schema={"type": "string", "pattern": NAME_PATTERN, "maxLength": 64},
        title="Dataset",
        description=(
            "The dataset this run validates, trains on and registers models for: a spec in "
            "datasets/ or one imported with `recops data import --spec`."
        ),
    ),
    Knob(
        name="epochs",
        default=15,
        schema=_int(1, 200),
        title="Retrieval epochs",
        description="Training epochs of the two-tower retrieval model.",
        feeds=(("train", "epochs"),),
    ),
    Knob(
        name="embedding_dim",
        default=64,
        schema=_int(4, 512),
        title="Embedding size",
        description="Width of the user and item embeddings of the two-tower model.",
        feeds=(("train", "embedding_dim"),),
    ),
    Knob(
        name="batch_size",
        default=1024,
        schema=_int(16, 65536),
        title="Batch size",
        description="Global batch of training and fine-tuning (in-batch negatives grow with it).",
        feeds=(("train", "batch_size"), ("compress", "batch_size")),
    ),
    Knob(
        name="history_length",
        default=None,
        schema={**_int(0, HISTORY_MAX), "type": ["null", "integer"]},
        title="History length",
        description=(
            "Newest seen items the retrieval user tower and the ranker pool "
            "(recency-weighted); 0 trains both without a history. Empty (the default): "
            "the dataset spec's training.history_length, else 0."
        ),
        feeds=(("train", "history_length"), ("rank", "history_length")),
    ),
    Knob(
        name="learning_rate",
        default=0.005,
        schema=_positive(1e-6, 10),
        title="Learning rate",
        description="Adam learning rate of the two-tower model.",
        feeds=(("train", "learning_rate"),),
    ),
    Knob(
        name="temperature",
        default=0.25,
        schema=_positive(0.001, 10),
        title="Softmax temperature",
        description="Divides the in-batch softmax logits; lower sharpens the loss.",
        feeds=(("train", "temperature"),),
    ),
    Knob(
        name="replicas",
        default=2,
        schema=_int(1, 16),
        title="CPU replicas",
        description="Logical CPU devices for MirroredStrategy when no GPU is present.",
        feeds=(("train", "replicas"), ("rank", "replicas"), ("compress", "replicas")),
    ),
    Knob(
        name="early_stopping_patience",
        default=0,
        schema=_int(0, 50),
        title="Early-stopping patience",
        description="Stop after this many epochs without a better valid NDCG@10 (0: off).",
        feeds=(("train", "early_stopping_patience"),),
    ),
    Knob(
        name="protocol",
        default=None,
        schema={"type": ["null", "string"], "enum": [None, "random", "temporal"]},
        title="Evaluation split",
        description=(
            "random: RecBole's per-user random split; temporal: each user's newest events "
            "are the holdout. Shares and seed come from the dataset spec's evaluation "
            "block. Empty (the default): the spec's first evaluation protocol."
        ),
        feeds=(("train", "protocol"), ("rank", "protocol")),
    ),
    Knob(
        name="ranker_epochs",
        default=30,
        schema=_int(1, 200),
        title="Ranker epochs",
        description="Training epochs of the DCN-v2 ranker.",
        feeds=(("rank", "epochs"),),
    ),
    Knob(
        name="max_rmse",
        default=1.0,
        schema=_positive(0.001, 5),
        title="Ranker RMSE ceiling",
        description="Ranker gate: the test RMSE above which the ranker is not blessed.",
    ),
    Knob(
        name="variants",
        default=["prune_50", "int8_tables", "distill_d32_int8", "ptq_int8"],
        schema={
            "type": "array",
            "items": {"type": "string", "enum": list(VARIANT_NAMES)},
            "minItems": 1,
            "maxItems": len(VARIANT_NAMES),
            "uniqueItems": True,
        },
        title="Compression variants",
        description="Variants built and measured side by side (one mapped task each).",
    ),
    Knob(
        name="fine_tune_epochs",
        default=1,
        schema=_int(1, 20),
        title="Fine-tune epochs",
        description="Epochs of fine-tuning after pruning, clustering or QAT.",
        feeds=(("compress", "fine_tune_epochs"),),
    ),
    Knob(
        name="quality_budget",
        default=0.01,
        schema=_share(),
        title="Compression quality budget",
        description="Largest relative NDCG@10 loss a compressed variant may have to be served.",
        feeds=(("select", "quality_budget"),),
    ),
    Knob(
        name="min_recall_at_10",
        default=0.05,
        schema=_share(),
        title="Gate: minimum Recall@10",
        description="The candidate is not blessed below this Recall@10.",
        feeds=(("gate", "min_recall_at_10"),),
    ),
    Knob(
        name="min_ndcg_at_10",
        default=0.05,
        schema=_share(),
        title="Gate: minimum NDCG@10",
        description="The candidate is not blessed below this NDCG@10.",
        feeds=(("gate", "min_ndcg_at_10"),),
    ),
    Knob(
        name="max_relative_drop",
        default=0.02,
        schema=_share(),
        title="Gate: largest drop vs champion",
        description="Largest relative metric drop against the champion (skipped on a first run).",
        feeds=(("gate", "max_relative_drop"),),
    ),
    Knob(
        name="seed",
        default=42,
        schema=_int(0, MAX_INT32),
        title="Seed",
        description="Seed of initialisation, shuffling and negative sampling.",
        feeds=(("train", "seed"), ("rank", "seed"), ("compress", "seed")),
    ),
)

REPLAY: tuple[Knob, ...] = (
    Knob(
        name="replay_model_version",
        default=1,
        schema=_int(1, MAX_INT32),
        title="Version to replay",
        description="The registered retrieval model version to rebuild from its lineage.",
    ),
    Knob(
        name="tolerance",
        default=0.01,
        schema=_share(),
        title="Tolerance",
        description="Largest absolute metric difference that still counts as reproduced.",
    ),
)


def promote_knobs(model_names: Sequence[str]) -> tuple[Knob, ...]:
    """The promotion DAG's knobs; its model choice comes from the deployment settings.

    Args:
        model_names: The promotable registered models (``Settings.promotable_models``),
            the first being the default.
    """
    return (
        Knob(
            name="model_name",
            default=model_names[0],
            schema={"type": "string", "enum": list(model_names)},
            title="Model",
            description="The registered model to promote or roll back.",
        ),
        Knob(
            name="version",
            default=None,
            schema={"type": ["null", "integer"], "minimum": 1, "maximum": MAX_INT32},
            title="Version",
            description="Version to serve; leave empty to serve the version the alias names.",
        ),
        Knob(
            name="alias",
            default="champion",
            schema={"type": "string", "pattern": NAME_PATTERN, "maxLength": 64},
            title="Alias",
            description="The MLflow alias resolved when no version is given.",
        ),
        Knob(
            name="action",
            default="promote",
            schema={"type": "string", "enum": ["promote", "rollback"]},
            title="Action",
            description="promote: canary, then stable; rollback: stable back to a served version.",
        ),
        Knob(
            name="force",
            default=False,
            schema={"type": "boolean"},
            title="Force",
            description="Serve a version the gate did not bless.",
        ),
        Knob(
            name="reason",
            # Not empty: a required text field that opens empty makes the whole trigger
            # form invalid. Left as is, the ledger still reads how it was asked for.
            default=UI_REASON,
            # Free text, but no control characters: it reaches the ledger and MLflow text.
            schema={"type": "string", "maxLength": 500, "pattern": REASON_PATTERN},
            title="Reason",
            description="Why, for the audit ledger (recops history).",
        ),
        Knob(
            name="max_score_psi",
            default=None,
            schema={"type": ["null", "number"], "minimum": 0, "maximum": 100},
            title="Canary guard: largest score PSI",
            description=(
                "Reject a canary whose score distribution's PSI against stable's, on the "
                "same requests, is above this (0.25 is the usual large shift); leave empty "
                "to report the PSI only."
            ),
        ),
        Knob(
            name="min_top_overlap",
            default=None,
            schema={"type": ["null", "number"], "minimum": 0, "maximum": 1},
            title="Canary guard: smallest top-k overlap",
            description=(
                "Reject a canary whose answers share less than this share of stable's top-k "
                "on the same requests; leave empty to report the overlap only."
            ),
        ),
    )


def schemas(knobs: Sequence[Knob]) -> dict[str, dict[str, Any]]:
    """``{name: JSON schema}`` of ``knobs``."""
    return {k.name: dict(k.schema) for k in knobs}


def defaults(knobs: Sequence[Knob]) -> dict[str, Any]:
    """``{name: default}`` of ``knobs`` (lists copied, so callers may mutate them)."""
    return {k.name: list(k.default) if isinstance(k.default, list) else k.default for k in knobs}


NIGHTLY_SCHEMAS: dict[str, dict[str, Any]] = schemas(NIGHTLY)
NIGHTLY_DEFAULTS: dict[str, Any] = defaults(NIGHTLY)
REPLAY_SCHEMAS: dict[str, dict[str, Any]] = schemas(REPLAY)


def promote_schemas(model_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The promotion DAG's schemas for these promotable models."""
    return schemas(promote_knobs(model_names))


def dag_params(
    knobs: Sequence[Knob],
    *,
    choices: Mapping[str, Sequence[str]] | None = None,
    overrides: Mapping[str, Any] | None = None,
    notes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Airflow ``Param`` objects for a DAG's ``params=``, one per knob.

    Each carries the knob's schema, title and description. An enum array (the variants)
    also gets ``examples``, which the trigger form renders as a multi-select, and the
    variants get ``values_display``, the text the form shows beside each name.

    Args:
        knobs: The DAG's knobs.
        choices: Values a string knob offers in the form (an ``enum``), known only to the
            deployment (the datasets present); the package still checks the knob's own
            schema.
        overrides: Deployment defaults that replace a knob's own (the deployment's
            dataset).
        notes: Text appended to a knob's description, known only to the deployment
            (the registered versions recsys_promote may serve).
    """
    from airflow.sdk import Param

    out: dict[str, Any] = {}
    for knob in knobs:
        extra: dict[str, Any] = {}
        if choices and knob.name in choices:
            extra["enum"] = list(choices[knob.name])
        items = knob.schema.get("items")
        if knob.schema.get("type") == "array" and isinstance(items, Mapping) and "enum" in items:
            extra["examples"] = list(items["enum"])
            if knob.name == "variants":
                extra["values_display"] = {n: f"{n}: {text}" for n, text in VARIANTS.items()}
        default = defaults([knob])[knob.name]
        if overrides and knob.name in overrides:
            default = overrides[knob.name]
        description = knob.description
        if notes and notes.get(knob.name):
            description = f"{description} {notes[knob.name]}"
        out[knob.name] = Param(
            default,
            title=knob.title,
            description=description,
            **dict(knob.schema),
            **extra,
        )
    return out


def _feeds(stage: str) -> dict[str, str]:
    return {field: k.name for k in NIGHTLY for s, field in k.feeds if s == stage}


def stage_default(stage: str, field: str) -> Any:
    """The default of a stage config's field, taken from the knob that feeds it.

    Used as the dataclass default (``epochs: int = stage_default("train", "epochs")``).

    Raises:
        KeyError: No knob feeds that field.
    """
    return NIGHTLY_DEFAULTS[_feeds(stage)[field]]


def stage_fields(stage: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments a stage config takes from a run's (merged) Params.

    Args:
        stage: ``train``, ``rank``, ``compress``, ``select`` or ``gate``.
        params: A complete set of nightly Params (``merged_params``' result).
    """
    by_name = {k.name: k for k in NIGHTLY}
    return {field: _typed(by_name[name], params[name]) for field, name in _feeds(stage).items()}


def _typed(knob: Knob, value: Any) -> Any:
    # JSON Schema calls 15.0 an integer and 1 a number; configs (and the output keys hashed
    # from them) want the Python type the schema means.
    kind = knob.schema.get("type")
    if value is None:  # a nullable knob left unset: the stage resolves it
        return None
    if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
        return int(value)
    if kind == "number":
        return float(value)
    return value


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
        schema: Its JSON schema.

    Returns:
        ``value``, unchanged.

    Raises:
        ParamError: The value does not satisfy the schema, or is NaN or infinite; the
            message names the param and (shortened) the value.
    """
    from jsonschema import Draft202012Validator

    if _non_finite(value):
        raise ParamError(f"param {name!r}: {_shown(value)} is not a finite number")
    error = next(iter(Draft202012Validator(dict(schema)).iter_errors(value)), None)
    if error is not None:
        raise ParamError(
            f"param {name!r}: {_shown(value)} is invalid "
            f"(fails {error.validator} {_shown(error.validator_value)})"
        )
    return value


def check_params(
    params: Mapping[str, Any], schemas: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Check every param of a run against its DAG's schemas; unknown keys are refused.

    Args:
        params: The run's params (a subset of ``schemas``' keys).
        schemas: ``NIGHTLY_SCHEMAS``, ``promote_schemas(...)`` or ``REPLAY_SCHEMAS``.

    Returns:
        A plain dict copy of ``params``.

    Raises:
        ParamError: A key no Param declares, or a value its schema refuses.
    """
    unknown = sorted(str(k) for k in params if k not in schemas)
    if unknown:
        raise ParamError(
            f"unknown params {[_shown(k) for k in unknown]}; expected a subset of {sorted(schemas)}"
        )
    return {name: check_param(name, value, schemas[name]) for name, value in params.items()}


def merged_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The nightly's defaults overlaid with a run's Params, each checked.

    Raises:
        ParamError: An unknown key, or a value its Param schema refuses (named).
    """
    return check_params({**NIGHTLY_DEFAULTS, **dict(params or {})}, NIGHTLY_SCHEMAS)


def check_model_name(value: Any, *, name: str = "model_name") -> str:
    """A registered model name that is safe as a path component (``NAME_PATTERN``).

    Raises:
        ParamError: Not a string, or not a plain name (``../..``, ``a;rm -rf /``...).
    """
    check_param(name, value, {"type": "string", "pattern": NAME_PATTERN, "maxLength": 64})
    return str(value)


def check_variant(value: Any) -> str:
    """One compression variant name (it becomes part of the variant's output folder).

    Raises:
        ParamError: Not one of ``VARIANT_NAMES``.
    """
    check_param("variants", value, NIGHTLY_SCHEMAS["variants"]["items"])
    return str(value)
