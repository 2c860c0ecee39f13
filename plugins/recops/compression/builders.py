"""Builders of the SavedModel variants: pruning, clustering, folded tables, distillation.

Each builder takes the shared ``BuildContext`` (the trained model's folder, training rows,
catalogue, the dataset's layout, staging folder) and exports ``model/`` under staging with
the serving contract, returning a ``Built``. The TFLite builders
(``recops.compression.tflite``) share the context and the training-feature helpers
defined here. The features are the trained model's: the layout comes from the spec the
training run was configured with (``training_layout``), and the model inputs are built
by ``recops.training.inputs`` from the model's own spec.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recops.compression.pruning import prune_model
from recops.compression.records import MissingInputError, VariantConfig
from recops.config import RETRIEVAL_K
from recops.training import make_dataset, seed_everything
from recops.training.inputs import training_inputs

if TYPE_CHECKING:
    from recops.layout import Layout

__all__ = [
    "BuildContext",
    "Built",
    "build_cluster",
    "build_distill",
    "build_prune",
    "build_tables",
    "training_dataset",
    "training_features",
    "training_layout",
]

log = logging.getLogger(__name__)


@dataclass
class BuildContext:
    """Inputs every variant builder shares (in memory; never crosses XCom)."""

    config: VariantConfig
    train_dir: Path
    rows: Any
    items: dict[str, np.ndarray]
    logq: np.ndarray | None
    staging: Path
    layout: Layout
    #: The training run's split protocol: it sets how training rows' histories are cut.
    protocol: str = "random"


@dataclass
class Built:
    """What a builder produced under staging."""

    saved_model: bool = False
    tflite: bytes | None = None
    quality: tuple[float, float] | None = None
    loss: float | None = None


def training_layout(train_dir: Path, train_config: Mapping[str, Any]) -> Layout:
    """The layout of the dataset a training run was configured with (its ``spec_uri``).

    Raises:
        MissingInputError: If the run's stored config names no spec (a run from before
            dataset specs; retrain it).
        DataError: If the spec file is missing or invalid.
    """
    from recops.dataset_spec import load_spec
    from recops.layout import layout_from_spec

    spec_uri = train_config.get("spec_uri")
    if not spec_uri:
        raise MissingInputError(
            f"training run {train_dir} has no spec_uri in its config.json; retrain it"
        )
    return layout_from_spec(load_spec(str(spec_uri)))


def training_features(ctx: BuildContext, spec: Any) -> dict[str, np.ndarray]:
    """The model inputs of the training rows (ids, features, logQ)."""
    return training_inputs(
        spec,
        ctx.rows,
        ctx.logq,
        ctx.layout.seen_types,
        ctx.protocol,
        negative_types=ctx.layout.negative_types,
    )


def training_dataset(ctx: BuildContext, spec: Any) -> Any:
    """The shuffled, batched ``tf.data`` dataset of the training rows."""
    return make_dataset(
        training_features(ctx, spec), batch_size=ctx.config.batch_size, seed=ctx.config.seed
    )


def _export_float(ctx: BuildContext, model: Any, spec: Any) -> None:
    from recops_models.two_tower import export_retrieval_model

    export_retrieval_model(
        model=model, spec=spec, items=ctx.items, export_dir=ctx.staging / "model", k=RETRIEVAL_K
    )


def _export_tables(ctx: BuildContext, model: Any, spec: Any, dtype: str) -> None:
    from recops_models.quantized import export_quantized_retrieval_model

    export_quantized_retrieval_model(
        model=model,
        spec=spec,
        items=ctx.items,
        export_dir=ctx.staging / "model",
        k=RETRIEVAL_K,
        table_dtype=dtype,
    )


def build_prune(ctx: BuildContext, sparsity: float) -> Built:
    """Magnitude pruning of Dense+Embedding to ``sparsity``, stripped, float export."""
    c = ctx.config
    plain, spec, loss, _, _ = prune_model(
        weights_dir=ctx.train_dir / "weights",
        rows=ctx.rows,
        logq=ctx.logq,
        target_sparsity=sparsity,
        epochs=c.fine_tune_epochs,
        batch_size=c.batch_size,
        learning_rate=c.learning_rate,
        replicas=c.replicas,
        seed=c.seed,
        seen_types=ctx.layout.seen_types,
        protocol=ctx.protocol,
        negative_types=ctx.layout.negative_types,
    )
    _export_float(ctx, plain, spec)
    return Built(saved_model=True, loss=loss)


def build_cluster(ctx: BuildContext, clusters: int) -> Built:
    """Weight clustering of Dense+Embedding into ``clusters`` centroids, float export."""
    from recops_models.compressors import cluster_model
    from recops_models.two_tower import load_trained_model

    seed_everything(ctx.config.seed)
    model, spec = load_trained_model(ctx.train_dir / "weights")
    clustered, loss = cluster_model(
        model,
        spec,
        training_dataset(ctx, spec),
        clusters=clusters,
        epochs=ctx.config.fine_tune_epochs,
        learning_rate=ctx.config.learning_rate,
    )
    _export_float(ctx, clustered, spec)
    return Built(saved_model=True, loss=loss)


def build_tables(ctx: BuildContext, dtype: str) -> Built:
    """The folded user tower with ``dtype`` tables (int8 with per-row scales, fp16, fp32)."""
    from recops_models.two_tower import load_trained_model

    model, spec = load_trained_model(ctx.train_dir / "weights")
    _export_tables(ctx, model, spec, dtype)
    return Built(saved_model=True)


def build_distill(ctx: BuildContext, dtype: str, dim: int = 32) -> Built:
    """A ``dim``-d student trained on the teacher's scores, exported with ``dtype`` tables."""
    from recops_models.compressors import distill_student
    from recops_models.two_tower import load_trained_model

    c = ctx.config
    seed_everything(c.seed)
    teacher, spec = load_trained_model(ctx.train_dir / "weights")
    student, student_spec, loss = distill_student(
        teacher,
        spec,
        training_dataset(ctx, spec),
        embedding_dim=dim,
        epochs=c.distill_epochs,
        learning_rate=c.distill_learning_rate,
        alpha=c.distill_alpha,
        temperature=c.distill_temperature,
        seed=c.seed,
        on_epoch=lambda epoch, value: log.info("distill epoch %d: loss %.4f", epoch, value),
    )
    if dtype == "float32":
        _export_float(ctx, student, student_spec)
    else:
        _export_tables(ctx, student, student_spec, dtype)
    return Built(saved_model=True, loss=loss)
