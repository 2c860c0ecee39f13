"""The configs, results and constants that the compression steps share.

``VariantConfig``/``VariantResult`` travel between the fan-out (``compress_variant``) and
``select_variant`` through XCom and ``result.json``; ``SelectConfig``/``SelectResult``
describe the selection. The constants here are what every step agrees on: the quality
cut-off, the TFLite file name, the baseline's row name and the objective keys.

This module is a leaf of the package: it imports no sibling and nothing heavy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from recops.errors import ParamError, PermanentError
from recops.params import stage_default
from recops.records import Record

__all__ = [
    "BASELINE",
    "OBJECTIVE_KEYS",
    "QUALITY_K",
    "TFLITE_FILE",
    "MissingInputError",
    "SelectConfig",
    "SelectResult",
    "VariantConfig",
    "VariantResult",
    "canonical",
]

#: Cut-off of the quality metrics every variant is scored on.
QUALITY_K = 10
TFLITE_FILE = "model.tflite"
#: Row name of the uncompressed float model in the selection table.
BASELINE = "float"
#: Row fields an objective may minimise (all: lower is better).
OBJECTIVE_KEYS = (
    "p99_ms_b1",
    "p50_ms_b1",
    "cpu_p50_ms_b1",
    "p99_ms_b64",
    "p50_ms_b64",
    "gzip_bytes",
    "saved_model_bytes",
    "load_rss_bytes",
)


class MissingInputError(PermanentError, FileNotFoundError):
    """A training folder or float model a compression step needs is missing or incomplete.

    A ``FileNotFoundError`` as before the error tree, so callers that caught it still do;
    permanent because a retry of the same step finds the same folder.
    """


def canonical(config: Record) -> dict[str, Any]:
    """``to_dict`` as it reads back from JSON (tuples become lists), for config checks."""
    canonical: dict[str, Any] = json.loads(json.dumps(config.to_dict()))
    return canonical


@dataclass(frozen=True, kw_only=True)
class VariantConfig(Record):
    """One compression variant of a trained model.

    Attributes:
        variant: A name in ``VARIANTS``; an unknown name is recorded as failed.
        train_dir: A completed training folder (parent of ``TrainResult.model_dir``).
        training_set_uri: The training set the model was trained on.
        split_uri: The split written by training (train rows fine-tune; test rows score).
        users_uri: users.parquet, for scoring.
        items_uri: items.parquet, the candidate catalogue embedded at export.
        output_dir: Folder owned by this variant.
        batch_size: Global batch size of any fine-tune or distillation.
        replicas: Logical CPU devices for pruning's MirroredStrategy (the other
            variants fine-tune on one device).
        seed: Seed for shuffling, initialisation and calibration sampling.
        fine_tune_epochs: Epochs of pruning, clustering and QAT fine-tunes.
        learning_rate: Adam learning rate of those fine-tunes.
        distill_epochs: Epochs of student training.
        distill_learning_rate: Adam learning rate of the student.
        distill_alpha: Weight of the true-label loss in distillation.
        distill_temperature: Distillation temperature.
        calibration_rows: Training rows drawn as the int8 representative dataset.
    """

    variant: str
    train_dir: str
    training_set_uri: str
    split_uri: str
    users_uri: str
    items_uri: str
    output_dir: str
    batch_size: int = stage_default("compress", "batch_size")
    replicas: int = stage_default("compress", "replicas")
    seed: int = stage_default("compress", "seed")
    fine_tune_epochs: int = stage_default("compress", "fine_tune_epochs")
    learning_rate: float = 0.001
    distill_epochs: int = 15
    distill_learning_rate: float = 0.005
    distill_alpha: float = 0.5
    distill_temperature: float = 1.0
    calibration_rows: int = 512

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "replicas",
            "fine_tune_epochs",
            "distill_epochs",
            "calibration_rows",
        ):
            if getattr(self, name) < 1:
                raise ParamError(f"VariantConfig.{name}={getattr(self, name)!r} must be >= 1")
        for name in ("learning_rate", "distill_learning_rate", "distill_temperature"):
            if not getattr(self, name) > 0:
                raise ParamError(f"VariantConfig.{name}={getattr(self, name)!r} must be > 0")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ParamError(f"VariantConfig.distill_alpha={self.distill_alpha!r} not in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class VariantResult(Record):
    """What one variant produced and how good it is.

    Attributes:
        variant: The variant name.
        status: ``ok`` or ``failed``.
        reason: The exception text when failed, else empty.
        serves: ``saved_model`` (``model_dir`` is this variant) or ``tflite`` (the edge
            artifact is ``tflite_uri``; ``model_dir`` is the float SavedModel).
        model_dir: SavedModel with the serving contract ("" when failed).
        tflite_uri: The TFLite artifact, if any.
        saved_model_bytes: Size of ``model_dir`` on disk.
        gzip_bytes: Size of ``model_dir`` as a .tar.gz.
        tflite_bytes: Size of the TFLite artifact, if any.
        params: Weights stored in the SavedModel (float and int8 tensors; id arrays and
            hash tables not counted).
        nonzero_params: Of those, the non-zero ones.
        sparsity: ``1 - nonzero_params / params``.
        recall_at_10: Recall@10 on the test split (None when failed).
        ndcg_at_10: NDCG@10 on the test split (None when failed).
        quality_from: ``saved_model`` or ``tflite``: which artifact was scored.
        fine_tune_loss: Final loss of the fine-tune or distillation, if any.
        seconds: Wall time of this variant.
    """

    variant: str
    status: str
    reason: str = ""
    serves: str = "saved_model"
    model_dir: str = ""
    tflite_uri: str | None = None
    saved_model_bytes: int = 0
    gzip_bytes: int = 0
    tflite_bytes: int | None = None
    params: int = 0
    nonzero_params: int = 0
    sparsity: float = 0.0
    recall_at_10: float | None = None
    ndcg_at_10: float | None = None
    quality_from: str = "saved_model"
    fine_tune_loss: float | None = None
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class SelectConfig(Record):
    """Which variants to compare and how to choose.

    Attributes:
        train_dir: The completed training folder; its ``model/`` is the float baseline.
        split_uri: The split written by training (baseline scored on its test rows).
        users_uri: users.parquet (scoring and realistic latency inputs).
        variant_dirs: ``VariantConfig.output_dir`` of each variant (each holds a
            ``result.json``, failed ones included).
        output_dir: Folder owned by this selection.
        quality_budget: Largest relative NDCG@10 loss vs the float model allowed.
        objective: Row fields minimised in order among variants within budget (see
            ``OBJECTIVE_KEYS``).
        objective_tolerance: Relative slack under which values of one objective key
            count as a tie, so the next key decides. On the 2-core reference machine
            every SavedModel variant's batch-1 p99 sits within about ±12 % of the others
            from run to run (the time is signature dispatch, not weights), so 15 % keeps
            that noise from picking a model several times bigger.
        latency_calls: Timed calls per model and batch size (interleaved across models).
        warmup_calls: Untimed calls per model and batch size first.
        measure_memory: Measure load memory in one subprocess per SavedModel.
    """

    train_dir: str
    split_uri: str
    users_uri: str
    variant_dirs: tuple[str, ...]
    output_dir: str
    quality_budget: float = stage_default("select", "quality_budget")
    objective: tuple[str, ...] = ("p99_ms_b1", "gzip_bytes")
    objective_tolerance: float = 0.15
    latency_calls: int = 200
    warmup_calls: int = 20
    measure_memory: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.quality_budget < 1.0:
            raise ParamError(f"SelectConfig.quality_budget={self.quality_budget!r} not in [0, 1)")
        bad = [key for key in self.objective if key not in OBJECTIVE_KEYS]
        if bad or not self.objective:
            raise ParamError(f"SelectConfig.objective has unknown keys {bad}; use {OBJECTIVE_KEYS}")
        if self.objective_tolerance < 0:
            raise ParamError(
                f"SelectConfig.objective_tolerance={self.objective_tolerance!r} must be >= 0"
            )
        if self.latency_calls < 2 or self.warmup_calls < 0:
            raise ParamError("SelectConfig.latency_calls must be >= 2 and warmup_calls >= 0")


@dataclass(frozen=True, kw_only=True)
class SelectResult(Record):
    """The chosen model and where the comparison went.

    Attributes:
        selected: Variant name, or ``float`` for the uncompressed model.
        selection_reason: Why, in a sentence.
        model_dir: SavedModel to serve.
        table_uri: ``variants.json`` (one row per variant, baseline first).
        table_md_uri: ``variants.md``, the same table for people.
        pareto_png_uri: ``pareto.png``: NDCG@10 vs p99 at batch 1 and vs gzip size.
        selected_metrics: The selected row's figures.
        baseline_metrics: The float model's figures.
        n_variants: Variants compared (baseline excluded).
        n_failed: Of those, failed ones.
    """

    selected: str
    selection_reason: str
    model_dir: str
    table_uri: str
    table_md_uri: str
    pareto_png_uri: str
    selected_metrics: dict[str, Any] = field(default_factory=dict)
    baseline_metrics: dict[str, Any] = field(default_factory=dict)
    n_variants: int = 0
    n_failed: int = 0
