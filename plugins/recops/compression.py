"""Compression of the trained two-tower as a gated search over variants.

One entry point per variant, so the DAG can fan them out (Airflow dynamic task mapping),
and one selection step that measures them side by side:

- ``compress_variant(VariantConfig(variant=...)) -> VariantResult`` builds one variant from
  ``<train_dir>/weights``, exports it, scores it on the test split and writes into
  ``output_dir``::

      model/        SavedModel with the serving contract (SavedModel variants)
      model.tflite  edge artifact (TFLite variants)
      spec.json     vocabularies that index the TFLite inputs (TFLite variants)
      config.json   the config this folder belongs to
      result.json   VariantResult
      _SUCCESS      written last, only when the variant succeeded

  A variant that fails (unsupported layer, conversion error, unknown name) is *recorded*:
  ``status="failed"`` with the exception text in ``reason``, ``result.json`` written and
  no ``_SUCCESS``, so a retry tries again. It never raises, except on a completed folder
  of another config or a training folder that is not complete.
- ``select_variant(SelectConfig) -> SelectResult`` loads every ok variant and the float
  baseline in one process, measures size, parameters, latency (interleaved) and load
  memory (one subprocess each), gates on relative NDCG@10 loss and minimises the
  objective among SavedModel variants (TF Serving runs SavedModels, not TFLite). It writes
  ``variants.json``, ``variants.md`` and ``pareto.png``.
- ``compress(CompressConfig)`` is the original single-variant pruning step, kept for the
  pipeline.

Variants (``VARIANTS``), and what each one serves:

====================  ===========  =====================================================
name                  serves       what
====================  ===========  =====================================================
prune_50/80/90        SavedModel   magnitude pruning of Dense+Embedding, stripped
cluster_16            SavedModel   weight clustering (16 centroids), stripped
int8_tables           SavedModel   folded user tower; int8 tables + per-row scales
fp16_tables           SavedModel   folded user tower; float16 tables
folded_fp32           SavedModel   folded user tower, float32 tables (ablation: the fold
                                   alone, to attribute latency gains)
distill_d32           SavedModel   student (embedding 32) trained on teacher scores
distill_d32_int8      SavedModel   the student with int8 tables
ptq_dynamic           TFLite       dynamic-range PTQ of the float model
ptq_float16           TFLite       float16 PTQ
ptq_int8              TFLite       full int8 PTQ, calibrated on training-set users
qat_int8              TFLite       QAT of the user tower's dense layers, converted int8
====================  ===========  =====================================================

TFLite variants keep ``model_dir`` pointing at the float SavedModel (what TF Serving would
run) and put the edge artifact in ``tflite_uri``; their quality is measured through the
TFLite interpreter with the same metrics code. The TFLite function takes indexed ids (see
``recops_models.edge``): hash tables do not convert.

Pruning and clustering pay off in the compressed artifact (``gzip_bytes``), not in RAM or
latency: TF Serving loads dense tensors.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recops.config import RETRIEVAL_K
from recops.records import Record
from recops.training import (
    CONFIG_FILE,
    ITEM_COLUMNS,
    RESULT_FILE,
    SPLITS,
    SUCCESS_MARKER,
    USER_COLUMNS,
    item_log_probabilities,
    latest_rows,
    load_completed,
    make_dataset,
    prepare_output_dir,
    publish,
    read_parquet_columns,
    read_training_set,
    seed_everything,
    select_strategy,
    train_rows,
    write_atomic,
)

__all__ = [
    "VARIANTS",
    "CompressConfig",
    "CompressResult",
    "SelectConfig",
    "SelectResult",
    "VariantConfig",
    "VariantResult",
    "compress",
    "compress_variant",
    "directory_bytes",
    "gzip_bytes",
    "pareto_front",
    "saved_model_params",
    "select_variant",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CompressConfig(Record):
    """What to prune and how.

    Attributes:
        train_dir: A completed training folder, i.e. ``TrainConfig.output_dir`` (the
            parent of ``TrainResult.model_dir``). Its ``weights/`` are pruned and its
            ``model/`` is the float baseline for ``float_gzip_bytes``.
        training_set_uri: The training set the model was trained on.
        split_uri: The split written by training; only train rows are used.
        users_uri: users.parquet (kept so the run is self-described).
        items_uri: items.parquet, the candidate catalogue embedded at export.
        output_dir: Folder owned by this run.
        target_sparsity: Fraction of each pruned weight tensor set to zero.
        fine_tune_epochs: Epochs of fine-tuning while the sparsity ramps up.
        batch_size: Global batch size.
        learning_rate: Adam learning rate of the fine-tune.
        replicas: Logical CPU devices to mirror over when there is no GPU.
        seed: Seed for shuffling.
    """

    train_dir: str
    training_set_uri: str
    split_uri: str
    users_uri: str
    items_uri: str
    output_dir: str
    target_sparsity: float = 0.5
    # On ml-100k, 3 epochs at 0.005 recover about half of the quality 1 epoch at 0.001 loses.
    fine_tune_epochs: int = 3
    batch_size: int = 1024
    learning_rate: float = 0.005
    replicas: int = 2
    seed: int = 42

    def __post_init__(self) -> None:
        if not 0.0 < self.target_sparsity < 1.0:
            raise ValueError(
                f"CompressConfig.target_sparsity={self.target_sparsity!r} must be in (0, 1)"
            )
        for name in ("fine_tune_epochs", "batch_size", "replicas"):
            if getattr(self, name) < 1:
                raise ValueError(f"CompressConfig.{name}={getattr(self, name)!r} must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"CompressConfig.learning_rate={self.learning_rate!r} must be > 0")


@dataclass(frozen=True, kw_only=True)
class CompressResult(Record):
    """The pruned model and what pruning bought.

    Attributes:
        model_dir: Pruned, stripped retrieval SavedModel.
        sparsity: Measured fraction of zeros in the pruned tensors (Dense kernels and
            Embedding tables).
        saved_model_bytes: Size of the pruned SavedModel folder on disk.
        gzip_bytes: Size of the pruned SavedModel folder as a .tar.gz.
        float_gzip_bytes: Size of the float SavedModel folder as a .tar.gz.
        params: Parameters of the two-tower model.
        nonzero_params: Parameters that are not zero after pruning.
        final_loss: Mean training loss of the last fine-tune epoch.
        strategy: Distribution strategy class name.
        replicas: Replicas in sync.
    """

    model_dir: str
    sparsity: float
    saved_model_bytes: int
    gzip_bytes: int
    float_gzip_bytes: int
    params: int
    nonzero_params: int
    final_loss: float
    strategy: str
    replicas: int


def directory_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def gzip_bytes(path: Path) -> int:
    """Size of ``path`` packed as a gzip-compressed tarball (level 9)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as tar:
        tar.add(path, arcname=path.name)
    return len(buffer.getvalue())


def _prune(
    *,
    weights_dir: Path,
    rows: Any,
    logq: np.ndarray | None,
    target_sparsity: float,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    replicas: int,
    seed: int,
) -> tuple[Any, Any, float, str, int]:
    """Prune the trained model under the distribution strategy; return a plain copy.

    ``prune_low_magnitude`` is applied through ``clone_model`` inside
    ``strategy.scope()`` (TF-MOT wrappers must be created there), fine-tuned with
    ``UpdatePruningStep``, stripped, and copied by layer name into a plain model.

    Returns:
        ``(plain model, spec, final loss, strategy name, replicas in sync)``.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    strategy, strategy_name, in_sync = select_strategy(replicas)
    if batch_size % in_sync:
        raise ValueError(f"batch_size={batch_size} is not divisible by {in_sync} replicas")
    seed_everything(seed)
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from recops_models.compressors import copy_into_plain, pruning_schedule
    from recops_models.two_tower import InBatchSoftmaxLoss, load_trained_model, model_inputs

    steps = len(rows) // batch_size
    schedule = pruning_schedule(steps * epochs, target_sparsity)

    def prune_dense_and_embedding(layer: Any) -> Any:
        if isinstance(layer, tf_keras.layers.Dense | tf_keras.layers.Embedding):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    with strategy.scope():
        base, spec = load_trained_model(weights_dir)
        pruned = tf_keras.models.clone_model(base, clone_function=prune_dense_and_embedding)
        pruned.compile(
            optimizer=tf_keras.optimizers.Adam(learning_rate=learning_rate),
            loss=InBatchSoftmaxLoss(),
        )
    features = model_inputs(spec, {c: rows[c].to_numpy() for c in rows.columns}, logq)
    dataset = make_dataset(features, batch_size=batch_size, seed=seed)
    history = pruned.fit(
        dataset,
        epochs=epochs,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        verbose=0,
    )
    # The export must not hold mirrored variables.
    plain = copy_into_plain(tfmot.sparsity.keras.strip_pruning(pruned), spec)
    return plain, spec, float(history.history["loss"][-1]), strategy_name, in_sync


def _kernel_sparsity(model: Any) -> float:
    """Fraction of zeros in the Dense kernels and Embedding tables (what TF-MOT prunes)."""
    import tf_keras

    zeros, total = 0, 0
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.Dense | tf_keras.layers.Embedding):
            kernel = layer.weights[0].numpy()
            zeros += int(np.count_nonzero(kernel == 0))
            total += kernel.size
    return zeros / total if total else 0.0


def compress(config: CompressConfig) -> CompressResult:
    """Prune, fine-tune, strip and export the trained model.

    Args:
        config: The trained model, data and pruning settings.

    Returns:
        The result; the stored one when ``output_dir`` is already complete.

    Raises:
        FileNotFoundError: If ``train_dir`` is not a completed training folder.
        ValueError: On bad input data or a completed ``output_dir`` of another config.
    """
    output_dir = Path(config.output_dir)
    config_dict = config.to_dict()
    done = load_completed(output_dir, config_dict)
    if done is not None:
        log.info("%s is complete; returning its result without pruning", output_dir)
        return CompressResult.from_dict(done)
    train_dir = Path(config.train_dir)
    if not (train_dir / SUCCESS_MARKER).is_file():
        raise FileNotFoundError(f"train_dir {train_dir} is not a completed training run")
    train_config = json.loads((train_dir / CONFIG_FILE).read_text())
    staging = prepare_output_dir(output_dir, config_dict, backup=None)

    frame = read_training_set(config.training_set_uri)
    split = read_parquet_columns(config.split_uri, ("user_id", "item_id", "split"), "split")
    rows = train_rows(frame, split)
    items = latest_rows(read_parquet_columns(config.items_uri, ITEM_COLUMNS, "items"), "item_id")
    logq = (
        item_log_probabilities(rows["item_id"].to_numpy())
        if train_config.get("logq_correction")
        else None
    )
    plain, spec, final_loss, strategy_name, replicas = _prune(
        weights_dir=train_dir / "weights",
        rows=rows,
        logq=logq,
        target_sparsity=config.target_sparsity,
        epochs=config.fine_tune_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        replicas=config.replicas,
        seed=config.seed,
    )
    from recops_models.two_tower import export_retrieval_model

    all_weights = [w.numpy() for w in plain.weights]
    export_retrieval_model(
        model=plain,
        spec=spec,
        items={c: items[c].to_numpy() for c in ("item_id", "genre_mask", "release_year")},
        export_dir=staging / "model",
        k=RETRIEVAL_K,
    )
    result = CompressResult(
        model_dir=str(output_dir / "model"),
        sparsity=_kernel_sparsity(plain),
        saved_model_bytes=directory_bytes(staging / "model"),
        gzip_bytes=gzip_bytes(staging / "model"),
        float_gzip_bytes=gzip_bytes(train_dir / "model"),
        params=int(sum(w.size for w in all_weights)),
        nonzero_params=int(sum(np.count_nonzero(w) for w in all_weights)),
        final_loss=final_loss,
        strategy=strategy_name,
        replicas=replicas,
    )
    publish(staging, output_dir, ("model",), result.to_dict())
    log.info("compressed %s", result.to_dict())
    return result


# --------------------------------------------------------------------------- variants

#: Every variant ``compress_variant`` knows, with what it does.
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
#: Variants whose artifact is TFLite; TF Serving would keep running the float SavedModel.
TFLITE_VARIANTS = frozenset({"ptq_dynamic", "ptq_float16", "ptq_int8", "qat_int8"})
_PRUNE = {"prune_50": 0.5, "prune_80": 0.8, "prune_90": 0.9}
_TABLES = {"int8_tables": "int8", "fp16_tables": "float16", "folded_fp32": "float32"}
_DISTILL = {"distill_d32": "float32", "distill_d32_int8": "int8"}
_PTQ = {"ptq_dynamic": "dynamic", "ptq_float16": "float16", "ptq_int8": "int8"}
#: Cut-off of the quality metrics every variant is scored on.
QUALITY_K = 10
TFLITE_FILE = "model.tflite"


def _canonical(config: Record) -> dict[str, Any]:
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
    batch_size: int = 1024
    replicas: int = 2
    seed: int = 42
    fine_tune_epochs: int = 3
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
                raise ValueError(f"VariantConfig.{name}={getattr(self, name)!r} must be >= 1")
        for name in ("learning_rate", "distill_learning_rate", "distill_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"VariantConfig.{name}={getattr(self, name)!r} must be > 0")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"VariantConfig.distill_alpha={self.distill_alpha!r} not in [0, 1]")


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


@dataclass
class _Context:
    """Inputs every variant builder shares (in memory; never crosses XCom)."""

    config: VariantConfig
    train_dir: Path
    rows: Any
    items: dict[str, np.ndarray]
    logq: np.ndarray | None
    staging: Path


@dataclass
class _Built:
    """What a builder produced under staging."""

    saved_model: bool = False
    tflite: bytes | None = None
    quality: tuple[float, float] | None = None
    loss: float | None = None


def saved_model_params(model_dir: str | Path) -> tuple[int, int]:
    """Count the weights stored in a SavedModel's variables checkpoint.

    Float and int8 tensors count; int32/int64 id arrays, strings and the object graph do
    not, so the float model, pruned, quantized and distilled variants are counted alike.

    Returns:
        ``(params, nonzero params)``.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(Path(model_dir) / "variables" / "variables"))
    counted = (tf.float16, tf.float32, tf.float64, tf.bfloat16, tf.int8)
    params, nonzero = 0, 0
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if dtype not in counted or name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"):
            continue
        value = np.asarray(reader.get_tensor(name))
        params += int(value.size)
        nonzero += int(np.count_nonzero(value))
    return params, nonzero


def _training_features(ctx: _Context, spec: Any) -> dict[str, np.ndarray]:
    from recops_models.two_tower import model_inputs

    rows = ctx.rows
    return dict(model_inputs(spec, {c: rows[c].to_numpy() for c in rows.columns}, ctx.logq))


def _dataset(ctx: _Context, spec: Any) -> Any:
    return make_dataset(
        _training_features(ctx, spec), batch_size=ctx.config.batch_size, seed=ctx.config.seed
    )


def _export_float(ctx: _Context, model: Any, spec: Any) -> None:
    from recops_models.two_tower import export_retrieval_model

    export_retrieval_model(
        model=model, spec=spec, items=ctx.items, export_dir=ctx.staging / "model", k=RETRIEVAL_K
    )


def _export_tables(ctx: _Context, model: Any, spec: Any, dtype: str) -> None:
    from recops_models.quantized import export_quantized_retrieval_model

    export_quantized_retrieval_model(
        model=model,
        spec=spec,
        items=ctx.items,
        export_dir=ctx.staging / "model",
        k=RETRIEVAL_K,
        table_dtype=dtype,
    )


def _build_prune(ctx: _Context, sparsity: float) -> _Built:
    c = ctx.config
    plain, spec, loss, _, _ = _prune(
        weights_dir=ctx.train_dir / "weights",
        rows=ctx.rows,
        logq=ctx.logq,
        target_sparsity=sparsity,
        epochs=c.fine_tune_epochs,
        batch_size=c.batch_size,
        learning_rate=c.learning_rate,
        replicas=c.replicas,
        seed=c.seed,
    )
    _export_float(ctx, plain, spec)
    return _Built(saved_model=True, loss=loss)


def _build_cluster(ctx: _Context, clusters: int) -> _Built:
    from recops_models.compressors import cluster_model
    from recops_models.two_tower import load_trained_model

    seed_everything(ctx.config.seed)
    model, spec = load_trained_model(ctx.train_dir / "weights")
    clustered, loss = cluster_model(
        model,
        spec,
        _dataset(ctx, spec),
        clusters=clusters,
        epochs=ctx.config.fine_tune_epochs,
        learning_rate=ctx.config.learning_rate,
    )
    _export_float(ctx, clustered, spec)
    return _Built(saved_model=True, loss=loss)


def _build_tables(ctx: _Context, dtype: str) -> _Built:
    from recops_models.two_tower import load_trained_model

    model, spec = load_trained_model(ctx.train_dir / "weights")
    _export_tables(ctx, model, spec, dtype)
    return _Built(saved_model=True)


def _build_distill(ctx: _Context, dtype: str, dim: int = 32) -> _Built:
    from recops_models.compressors import distill_student
    from recops_models.two_tower import load_trained_model

    c = ctx.config
    seed_everything(c.seed)
    teacher, spec = load_trained_model(ctx.train_dir / "weights")
    student, student_spec, loss = distill_student(
        teacher,
        spec,
        _dataset(ctx, spec),
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
    return _Built(saved_model=True, loss=loss)


def _calibration_features(ctx: _Context, spec: Any) -> dict[str, np.ndarray]:
    """Indexed user features of training rows sampled for int8 calibration."""
    features = _training_features(ctx, spec)
    n = len(features["user_idx"])
    rng = np.random.default_rng(ctx.config.seed)
    pick = np.sort(rng.choice(n, min(n, ctx.config.calibration_rows), replace=False))
    return {
        name: features[name][pick] for name in ("user_idx", "gender_idx", "occupation_idx", "age")
    }


def _build_tflite(ctx: _Context, mode: str) -> _Built:
    from recops_models.edge import convert_retrieval_tflite
    from recops_models.two_tower import (
        candidate_embeddings,
        load_trained_model,
        towers_from_training_model,
    )

    seed_everything(ctx.config.seed)
    model, spec = load_trained_model(ctx.train_dir / "weights")
    loss: float | None = None
    if mode == "qat":
        from recops_models.compressors import qat_user_tower

        user_tower, item_tower, loss = qat_user_tower(
            model,
            spec,
            _dataset(ctx, spec),
            epochs=ctx.config.fine_tune_epochs,
            learning_rate=ctx.config.learning_rate,
        )
        # The fine-tune moved the (float) item tower too: re-embed the catalogue with it.
        item_ids = np.asarray(ctx.items["item_id"], np.int64)
        vectors = item_tower(
            {
                "item_idx": spec.item_index(item_ids),
                "genre_mask": np.asarray(ctx.items["genre_mask"], np.int64),
                "release_year": np.asarray(ctx.items["release_year"], np.int64),
            },
            training=False,
        ).numpy()
    else:
        user_tower, _ = towers_from_training_model(model)
        item_ids, vectors = candidate_embeddings(model, spec, ctx.items)
    calibration = _calibration_features(ctx, spec)

    def convert(k: int) -> bytes:
        return convert_retrieval_tflite(
            user_tower=user_tower,
            candidate_ids=item_ids,
            candidates=vectors,
            k=k,
            mode=mode,
            representative=calibration,
        )

    blob = convert(RETRIEVAL_K)
    (ctx.staging / TFLITE_FILE).write_bytes(blob)
    shutil.copyfile(ctx.train_dir / "weights" / "spec.json", ctx.staging / "spec.json")
    # Full ranking needs every candidate's score: the same conversion with k = catalogue
    # (same weights, same calibration data, so the same quantization) is scored instead.
    quality = _tflite_quality(convert(len(item_ids)), spec, item_ids, ctx.config)
    return _Built(tflite=blob, quality=quality, loss=loss)


def _eval_ground_truth(
    split_uri: str, users_uri: str, item_ids: np.ndarray
) -> tuple[np.ndarray, Any, list[np.ndarray], list[np.ndarray]]:
    """Test users, their profiles, ground-truth and seen candidate columns.

    The same protocol as ``recops.evaluation.evaluate`` (test split; train and valid
    items masked; relevant items missing from the catalogue count but are unreachable).
    """
    split = read_parquet_columns(split_uri, ("user_id", "item_id", "split"), "split")
    unknown = set(split["split"].unique()) - set(SPLITS)
    if unknown:
        raise ValueError(f"split {split_uri} has unknown split values {sorted(unknown)}")
    target = split[split["split"] == "test"]
    seen = split[split["split"].isin(("train", "valid"))]
    users = latest_rows(read_parquet_columns(users_uri, USER_COLUMNS, "users"), "user_id")
    eval_users = np.sort(target["user_id"].unique()).astype(np.int64)
    profiles = users.set_index("user_id").reindex(eval_users)
    if profiles["age"].isna().any():
        raise ValueError(f"users {users_uri} lacks rows for some test users")
    column_of = {int(item): col for col, item in enumerate(item_ids.tolist())}

    from recops.evaluation import _columns_for

    exclude = [cols[cols >= 0] for cols in _columns_for(seen, eval_users, column_of)]
    return eval_users, profiles, _columns_for(target, eval_users, column_of), exclude


def _tflite_quality(
    blob: bytes, spec: Any, item_ids: np.ndarray, config: VariantConfig
) -> tuple[float, float]:
    """Recall@10 and NDCG@10 of a TFLite retrieval model that returns every candidate."""
    from recops_models.edge import TFLiteScorer
    from recops_models.metrics import ROW_BLOCK, ranking_metrics, top_k_items

    eval_users, profiles, truth, exclude = _eval_ground_truth(
        config.split_uri, config.users_uri, item_ids
    )
    scorer = TFLiteScorer(blob)
    inputs = {
        "user_idx": spec.user_index(eval_users),
        "gender_idx": spec.gender_index(profiles["gender"].to_numpy().astype(str)),
        "occupation_idx": spec.occupation_index(profiles["occupation"].to_numpy().astype(str)),
        "age": profiles["age"].to_numpy().astype(np.int64),
    }
    column_of = {int(item): col for col, item in enumerate(item_ids.tolist())}
    to_column = np.vectorize(column_of.__getitem__, otypes=[np.int64])
    ranked = []
    # A block of users at a time: the flatbuffer returns every candidate per user.
    for start in range(0, eval_users.size, ROW_BLOCK):
        rows = slice(start, start + ROW_BLOCK)
        out = scorer({name: values[rows] for name, values in inputs.items()})
        scores = np.full((len(out["item_ids"]), item_ids.size), -np.inf)
        np.put_along_axis(
            scores, to_column(out["item_ids"]), out["scores"].astype(np.float64), axis=1
        )
        ranked.append(top_k_items(scores, QUALITY_K, exclude[rows]))
    metrics = ranking_metrics(np.concatenate(ranked), truth, QUALITY_K)
    return metrics.recall, metrics.ndcg


def _builder(variant: str) -> Callable[[_Context], _Built]:
    """The build function of ``variant``.

    Raises:
        ValueError: On an unknown variant.
    """
    if variant in _PRUNE:
        return lambda ctx: _build_prune(ctx, _PRUNE[variant])
    if variant == "cluster_16":
        return lambda ctx: _build_cluster(ctx, 16)
    if variant in _TABLES:
        return lambda ctx: _build_tables(ctx, _TABLES[variant])
    if variant in _DISTILL:
        return lambda ctx: _build_distill(ctx, _DISTILL[variant])
    if variant in _PTQ:
        return lambda ctx: _build_tflite(ctx, _PTQ[variant])
    if variant == "qat_int8":
        return lambda ctx: _build_tflite(ctx, "qat")
    raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")


def compress_variant(config: VariantConfig) -> VariantResult:
    """Build, export and score one compression variant; never raise for the variant.

    Args:
        config: The variant, the trained model and data, and the knobs.

    Returns:
        The result: the stored one when ``output_dir`` is already complete;
        ``status="failed"`` with the reason when the variant could not be built.

    Raises:
        FileNotFoundError: If ``train_dir`` is not a completed training folder.
        ValueError: If ``output_dir`` holds a completed run of another config.
    """
    output_dir = Path(config.output_dir)
    config_dict = _canonical(config)
    done = load_completed(output_dir, config_dict)
    if done is not None:
        log.info("%s is complete; returning its result", output_dir)
        return VariantResult.from_dict(done)
    train_dir = Path(config.train_dir)
    if not (train_dir / SUCCESS_MARKER).is_file():
        raise FileNotFoundError(f"train_dir {train_dir} is not a completed training run")
    staging = prepare_output_dir(output_dir, config_dict, backup=None)
    started = time.perf_counter()
    serves = "tflite" if config.variant in TFLITE_VARIANTS else "saved_model"
    try:
        build = _builder(config.variant)
        train_config = json.loads((train_dir / CONFIG_FILE).read_text())
        frame = read_training_set(config.training_set_uri)
        split = read_parquet_columns(config.split_uri, ("user_id", "item_id", "split"), "split")
        rows = train_rows(frame, split)
        items = latest_rows(
            read_parquet_columns(config.items_uri, ITEM_COLUMNS, "items"), "item_id"
        )
        logq = (
            item_log_probabilities(rows["item_id"].to_numpy())
            if train_config.get("logq_correction")
            else None
        )
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        ctx = _Context(
            config=config,
            train_dir=train_dir,
            rows=rows,
            items={c: items[c].to_numpy() for c in ("item_id", "genre_mask", "release_year")},
            logq=logq,
            staging=staging,
        )
        built = build(ctx)
        result = _measure_built(config, built, staging, train_dir, serves, started)
    except Exception as exc:  # noqa: BLE001 - a failed variant is a result, not a crash
        log.warning("variant %s failed: %s", config.variant, exc, exc_info=True)
        shutil.rmtree(staging, ignore_errors=True)
        result = VariantResult(
            variant=config.variant,
            status="failed",
            reason=f"{type(exc).__name__}: {exc}"[:2000],
            serves=serves,
            seconds=time.perf_counter() - started,
        )
        # No _SUCCESS: a retry tries again; select_variant still reads the reason.
        write_atomic(output_dir / RESULT_FILE, json.dumps(result.to_dict(), indent=2))
        return result
    names = [n for n in ("model", TFLITE_FILE, "spec.json") if (staging / n).exists()]
    publish(staging, output_dir, names, result.to_dict())
    log.info("variant %s", result.to_dict())
    return result


def _measure_built(
    config: VariantConfig,
    built: _Built,
    staging: Path,
    train_dir: Path,
    serves: str,
    started: float,
) -> VariantResult:
    """Sizes, parameters and quality of a built variant (paths as they will be published)."""
    from recops.evaluation import EvalConfig, evaluate

    output_dir = Path(config.output_dir)
    model_path = staging / "model" if built.saved_model else train_dir / "model"
    model_dir = str(output_dir / "model") if built.saved_model else str(train_dir / "model")
    if built.quality is not None:
        recall, ndcg, quality_from = built.quality[0], built.quality[1], "tflite"
    else:
        scored = evaluate(
            EvalConfig(
                model_dir=str(model_path),
                split_uri=config.split_uri,
                users_uri=config.users_uri,
                k=QUALITY_K,
                split="test",
            )
        )
        recall, ndcg, quality_from = scored.recall_at_k, scored.ndcg_at_k, "saved_model"
    params, nonzero = saved_model_params(model_path)
    return VariantResult(
        variant=config.variant,
        status="ok",
        serves=serves,
        model_dir=model_dir,
        tflite_uri=str(output_dir / TFLITE_FILE) if built.tflite is not None else None,
        saved_model_bytes=directory_bytes(model_path),
        gzip_bytes=gzip_bytes(model_path),
        tflite_bytes=len(built.tflite) if built.tflite is not None else None,
        params=params,
        nonzero_params=nonzero,
        sparsity=1.0 - nonzero / params if params else 0.0,
        recall_at_10=float(recall),
        ndcg_at_10=float(ndcg),
        quality_from=quality_from,
        fine_tune_loss=built.loss,
        seconds=time.perf_counter() - started,
    )


# --------------------------------------------------------------------------- selection

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
BASELINE = "float"
LATENCY_BATCHES = (1, 64)


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
    quality_budget: float = 0.01
    objective: tuple[str, ...] = ("p99_ms_b1", "gzip_bytes")
    objective_tolerance: float = 0.15
    latency_calls: int = 200
    warmup_calls: int = 20
    measure_memory: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.quality_budget < 1.0:
            raise ValueError(f"SelectConfig.quality_budget={self.quality_budget!r} not in [0, 1)")
        bad = [key for key in self.objective if key not in OBJECTIVE_KEYS]
        if bad or not self.objective:
            raise ValueError(f"SelectConfig.objective has unknown keys {bad}; use {OBJECTIVE_KEYS}")
        if self.objective_tolerance < 0:
            raise ValueError(
                f"SelectConfig.objective_tolerance={self.objective_tolerance!r} must be >= 0"
            )
        if self.latency_calls < 2 or self.warmup_calls < 0:
            raise ValueError("SelectConfig.latency_calls must be >= 2 and warmup_calls >= 0")


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


def _read_variant(path: str) -> VariantResult:
    result_path = Path(path) / RESULT_FILE
    if not result_path.is_file():
        return VariantResult(
            variant=Path(path).name, status="failed", reason=f"no {RESULT_FILE} in {path}"
        )
    return VariantResult.from_dict(json.loads(result_path.read_text()))


def _latency_inputs(users_uri: str, batch: int) -> dict[str, np.ndarray]:
    users = latest_rows(read_parquet_columns(users_uri, USER_COLUMNS, "users"), "user_id")
    rows = users.iloc[np.arange(batch) % len(users)]
    return {
        "user_id": rows["user_id"].to_numpy().astype(np.int64),
        "age": rows["age"].to_numpy().astype(np.int64),
        "gender": rows["gender"].to_numpy().astype(str),
        "occupation": rows["occupation"].to_numpy().astype(str),
    }


def _measure_latency(
    runners: Mapping[str, Mapping[int, Callable[[], Any]]], calls: int, warmup: int
) -> dict[str, dict[str, float]]:
    """p50/p99 wall ms, rows/s and median CPU ms per runner and batch size, interleaved.

    Each round calls every runner once, in a fresh random order, so drift in machine
    load hits all models alike and no model always follows the same neighbour (a
    runtime whose threads linger after a call slows whoever comes next).
    """
    names = list(runners)
    out: dict[str, dict[str, float]] = {name: {} for name in names}
    rng = np.random.default_rng(0)
    for batch in LATENCY_BATCHES:
        for name in names:
            for _ in range(warmup):
                runners[name][batch]()
        timings: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(calls):
            for index in rng.permutation(len(names)):
                name = names[index]
                start, start_cpu = time.perf_counter(), time.process_time()
                runners[name][batch]()
                timings[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        for name in names:
            seconds = np.asarray(timings[name])
            out[name][f"p50_ms_b{batch}"] = float(np.percentile(seconds, 50) * 1e3)
            out[name][f"p99_ms_b{batch}"] = float(np.percentile(seconds, 99) * 1e3)
            out[name][f"rows_per_s_b{batch}"] = float(batch / seconds.mean())
            # CPU time of the whole process per call: the model's cost without the
            # wall-clock stalls other processes cause on a shared machine.
            out[name][f"cpu_p50_ms_b{batch}"] = float(np.percentile(cpu[name], 50) * 1e3)
    return out


_MEMORY_PROBE = """
import json, os, resource, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import psutil
import tensorflow as tf
tf.constant(1.0) + 1.0
proc = psutil.Process()
before = proc.memory_info().rss
model = tf.saved_model.load(sys.argv[1])
model.signatures["serving_default"](
    user_id=tf.constant([1], tf.int64), age=tf.constant([30], tf.int64),
    gender=tf.constant(["M"]), occupation=tf.constant(["other"]))
after = proc.memory_info().rss
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "after": after, "peak": peak}))
"""


def _load_memory(model_dir: str) -> int | None:
    """RSS growth from loading a SavedModel and serving one request, in a fresh process.

    ``max(after, peak) - before``, where ``before`` is the RSS with the TF runtime up. A
    probe that fails yields None (logged), not a failed selection.
    """
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, model_dir],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        log.warning("memory probe of %s failed: %s", model_dir, proc.stderr[-500:])
        return None
    probe = json.loads(lines[-1])
    return int(max(probe["after"], probe["peak"]) - probe["before"])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point dominates, for (quality up, cost down).

    A point dominates another when its quality is >= and its cost <=, one strictly.
    """
    front = []
    for i, (quality, cost) in enumerate(points):
        dominated = any(
            q >= quality and c <= cost and (q > quality or c < cost)
            for j, (q, c) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _plot_pareto(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Two panels, NDCG@10 vs p99 at batch 1 and vs size; front over SavedModel rows.

    TFLite rows are drawn apart (grey triangles, their interpreter latency and
    flatbuffer size): they are edge artifacts, not candidates for TF Serving.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for axis, key, edge_key, label in (
        (axes[0], "p99_ms_b1", "p99_ms_b1", "p99 latency, batch 1 (ms)"),
        (axes[1], "gzip_bytes", "tflite_bytes", "gzip SavedModel / TFLite size"),
    ):
        serving = [
            r
            for r in rows
            if r["serves"] == "saved_model" and r.get(key) is not None and r["ndcg_at_10"]
        ]
        points = [(float(r["ndcg_at_10"]), float(r[key])) for r in serving]
        front = set(pareto_front(points))
        for i, (row, (ndcg, cost)) in enumerate(zip(serving, points, strict=True)):
            colour = "tab:red" if i in front else "tab:blue"
            marker = "s" if row["name"] == BASELINE else "o"
            axis.scatter(cost, ndcg, c=colour, marker=marker, zorder=3)
            axis.annotate(row["name"], (cost, ndcg), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")  # fmt: skip
        ordered = sorted((points[i] for i in front), key=lambda p: p[1])
        if ordered:
            axis.plot([p[1] for p in ordered], [p[0] for p in ordered], "r--", lw=1, zorder=2)
        for row in rows:
            if row["serves"] == "tflite" and row.get(edge_key) and row["ndcg_at_10"]:
                cost, ndcg = float(row[edge_key]), float(row["ndcg_at_10"])
                axis.scatter(cost, ndcg, c="tab:gray", marker="^", zorder=3)
                axis.annotate(f"{row['name']} (tflite)", (cost, ndcg), fontsize=7,
                              color="tab:gray", xytext=(3, -9), textcoords="offset points")  # fmt: skip
        if key == "gzip_bytes":
            # Sizes span well under a decade: a linear axis in kB reads better than log.
            axis.xaxis.set_major_formatter(
                matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1e3:.0f} kB")
            )
        else:
            axis.set_xscale("log")
            # Minor-tick labels on a narrow log range overprint each other; majors suffice.
            axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel(label)
        axis.set_ylabel("NDCG@10 (test)")
        axis.grid(alpha=0.3)
    axes[0].set_title("quality vs latency (red: SavedModel Pareto front)")
    axes[1].set_title("quality vs size (red: SavedModel Pareto front)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


_TABLE_COLUMNS = (
    "name", "status", "serves", "ndcg_at_10", "ndcg_rel_loss", "recall_at_10", "gzip_bytes",
    "saved_model_bytes", "tflite_bytes", "params", "sparsity", "p50_ms_b1", "p99_ms_b1",
    "rows_per_s_b1", "cpu_p50_ms_b1", "p99_ms_b64", "rows_per_s_b64", "load_rss_bytes",
    "within_budget",
)  # fmt: skip


def _markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = [
        "| " + " | ".join(_TABLE_COLUMNS) + " |",
        "|" + "---|" * len(_TABLE_COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in _TABLE_COLUMNS) + " |" for r in rows]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "Failed variants:", ""]
        lines += [f"- {r['name']}: {r['reason']}" for r in failed]
    return "\n".join(lines) + "\n"


def select_variant(config: SelectConfig) -> SelectResult:
    """Measure every ok variant beside the float model and choose what to serve.

    Among SavedModel variants (and the float model) whose relative NDCG@10 loss is within
    ``quality_budget``, the lexicographic minimum of ``objective`` wins. TFLite variants
    are measured and tabled (their latency is the TFLite interpreter's) but never served:
    TF Serving runs SavedModels.

    Args:
        config: Variants, baseline, budget and objective.

    Returns:
        The selection; the stored one when ``output_dir`` is already complete.

    Raises:
        FileNotFoundError: If the float model is missing.
        ValueError: If ``output_dir`` holds a completed run of another config.
    """
    output_dir = Path(config.output_dir)
    config_dict = _canonical(config)
    done = load_completed(output_dir, config_dict)
    if done is not None:
        return SelectResult.from_dict(done)
    train_dir = Path(config.train_dir)
    baseline_dir = train_dir / "model"
    if not baseline_dir.is_dir():
        raise FileNotFoundError(f"float model not found: {baseline_dir}")
    staging = prepare_output_dir(output_dir, config_dict, backup=None)

    from recops.evaluation import EvalConfig, evaluate

    base_eval = evaluate(
        EvalConfig(model_dir=str(baseline_dir), split_uri=config.split_uri,
                   users_uri=config.users_uri, k=QUALITY_K, split="test")
    )  # fmt: skip
    base_params, base_nonzero = saved_model_params(baseline_dir)
    rows: list[dict[str, Any]] = [
        {
            "name": BASELINE, "status": "ok", "reason": "", "serves": "saved_model",
            "model_dir": str(baseline_dir), "tflite_uri": None,
            "ndcg_at_10": base_eval.ndcg_at_k, "recall_at_10": base_eval.recall_at_k,
            "saved_model_bytes": directory_bytes(baseline_dir),
            "gzip_bytes": gzip_bytes(baseline_dir), "tflite_bytes": None,
            "params": base_params, "nonzero_params": base_nonzero,
            "sparsity": 1.0 - base_nonzero / base_params if base_params else 0.0,
        }
    ]  # fmt: skip
    variants = [_read_variant(path) for path in config.variant_dirs]
    for v in variants:
        rows.append(
            {
                "name": v.variant, "status": v.status, "reason": v.reason, "serves": v.serves,
                "model_dir": v.model_dir, "tflite_uri": v.tflite_uri,
                "ndcg_at_10": v.ndcg_at_10, "recall_at_10": v.recall_at_10,
                "saved_model_bytes": v.saved_model_bytes or None,
                "gzip_bytes": v.gzip_bytes or None, "tflite_bytes": v.tflite_bytes,
                "params": v.params or None, "nonzero_params": v.nonzero_params or None,
                "sparsity": v.sparsity if v.status == "ok" else None,
            }
        )  # fmt: skip
    base_ndcg = base_eval.ndcg_at_k
    for row in rows:
        ndcg = row["ndcg_at_10"]
        row["ndcg_rel_loss"] = (
            (base_ndcg - ndcg) / base_ndcg if ndcg is not None and base_ndcg > 0 else None
        )
        row["within_budget"] = bool(
            row["status"] == "ok"
            and row["ndcg_rel_loss"] is not None
            and row["ndcg_rel_loss"] <= config.quality_budget + 1e-12
        )

    runners = _runners(rows, train_dir, config.users_uri)
    serving = {r["name"] for r in rows if r["serves"] == "saved_model"}
    # TFLite's interpreter threads would disturb the SavedModel timings: time apart.
    latency = {
        **_measure_latency(
            {n: r for n, r in runners.items() if n in serving},
            config.latency_calls,
            config.warmup_calls,
        ),
        **_measure_latency(
            {n: r for n, r in runners.items() if n not in serving},
            config.latency_calls,
            config.warmup_calls,
        ),
    }
    for row in rows:
        row.update(latency.get(row["name"], {}))
    for row in rows:
        row["load_rss_bytes"] = (
            _load_memory(row["model_dir"])
            if config.measure_memory and row["status"] == "ok" and row["serves"] == "saved_model"
            else None
        )

    selected, reason = _choose(rows, config)
    (staging / "variants.json").write_text(json.dumps(rows, indent=2))
    (staging / "variants.md").write_text(_markdown(rows))
    _plot_pareto([r for r in rows if r["status"] == "ok"], staging / "pareto.png")

    chosen = next(r for r in rows if r["name"] == selected)
    result = SelectResult(
        selected=selected,
        selection_reason=reason,
        model_dir=chosen["model_dir"],
        table_uri=str(output_dir / "variants.json"),
        table_md_uri=str(output_dir / "variants.md"),
        pareto_png_uri=str(output_dir / "pareto.png"),
        selected_metrics=_figures(chosen),
        baseline_metrics=_figures(rows[0]),
        n_variants=len(variants),
        n_failed=sum(v.status != "ok" for v in variants),
    )
    publish(staging, output_dir, ("variants.json", "variants.md", "pareto.png"), result.to_dict())
    log.info("selected %s: %s", selected, reason)
    return result


def _figures(row: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("ndcg_at_10", "recall_at_10", "ndcg_rel_loss", "gzip_bytes",
            "saved_model_bytes", "tflite_bytes", "params", "sparsity", "p50_ms_b1",
            "p99_ms_b1", "rows_per_s_b1", "cpu_p50_ms_b1", "p50_ms_b64", "p99_ms_b64",
            "rows_per_s_b64", "cpu_p50_ms_b64", "load_rss_bytes")  # fmt: skip
    return {key: row.get(key) for key in keep}


def _runners(
    rows: Sequence[Mapping[str, Any]], train_dir: Path, users_uri: str
) -> dict[str, dict[int, Callable[[], Any]]]:
    """Zero-argument callables per ok row and batch size: SavedModel ``serving_default``
    for SavedModel rows, the TFLite interpreter for TFLite rows."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    raw = {b: _latency_inputs(users_uri, b) for b in LATENCY_BATCHES}
    tensors = {
        b: {
            "user_id": tf.constant(raw[b]["user_id"], tf.int64),
            "age": tf.constant(raw[b]["age"], tf.int64),
            "gender": tf.constant(raw[b]["gender"]),
            "occupation": tf.constant(raw[b]["occupation"]),
        }
        for b in LATENCY_BATCHES
    }
    runners: dict[str, dict[int, Callable[[], Any]]] = {}
    spec = None
    for row in rows:
        if row["status"] != "ok":
            continue
        if row["serves"] == "saved_model":
            signature = tf.saved_model.load(row["model_dir"]).signatures["serving_default"]
            runners[row["name"]] = {
                b: functools.partial(_call_signature, signature, tensors[b])
                for b in LATENCY_BATCHES
            }
        elif row.get("tflite_uri"):
            from recops_models.edge import TFLiteScorer
            from recops_models.two_tower import TwoTowerSpec

            if spec is None:
                spec = TwoTowerSpec.from_json((train_dir / "weights" / "spec.json").read_text())
            scorer = TFLiteScorer(Path(row["tflite_uri"]).read_bytes())
            indexed = {
                b: {
                    "user_idx": spec.user_index(raw[b]["user_id"]),
                    "gender_idx": spec.gender_index(raw[b]["gender"]),
                    "occupation_idx": spec.occupation_index(raw[b]["occupation"]),
                    "age": raw[b]["age"],
                }
                for b in LATENCY_BATCHES
            }
            runners[row["name"]] = {
                b: functools.partial(scorer, indexed[b]) for b in LATENCY_BATCHES
            }
    return runners


def _call_signature(signature: Any, inputs: Mapping[str, Any]) -> Any:
    # .numpy() so the timing covers the whole request, output copied out included.
    return signature(**inputs)["scores"].numpy()


def _minimise(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str], tolerance: float
) -> Mapping[str, Any]:
    """Lexicographic minimum where values within ``tolerance`` of the best tie.

    Each key keeps the rows within ``(1 + tolerance)`` of its best value; the last key
    (then the row order) breaks what ties remain.
    """
    remaining = list(rows)
    for key in keys:
        best = min(float(r[key]) for r in remaining)
        remaining = [r for r in remaining if float(r[key]) <= best * (1 + tolerance) + 1e-12]
    return min(remaining, key=lambda r: tuple(float(r[key]) for key in keys[::-1]))


def _choose(rows: Sequence[Mapping[str, Any]], config: SelectConfig) -> tuple[str, str]:
    """Pick the row to serve and say why."""
    budget = f"{config.quality_budget:.2%}"
    candidates = [
        r for r in rows
        if r["within_budget"] and r["serves"] == "saved_model"
        and all(r.get(key) is not None for key in config.objective)
    ]  # fmt: skip
    variants = [r for r in candidates if r["name"] != BASELINE]
    if not variants:
        over = [
            f"{r['name']} ({r['ndcg_rel_loss']:+.2%})"
            for r in rows
            if r["name"] != BASELINE and r["ndcg_rel_loss"] is not None
            and r["serves"] == "saved_model"
        ]  # fmt: skip
        return BASELINE, (
            f"no SavedModel variant within the {budget} NDCG@10 budget "
            f"(relative losses: {', '.join(over) or 'none measured'}); serving the float model"
        )
    best = _minimise(candidates, config.objective, config.objective_tolerance)
    summary = ", ".join(f"{key}={best[key]:.4g}" for key in config.objective)
    ties = f", values within {config.objective_tolerance:.0%} tied"
    if best["name"] == BASELINE:
        return BASELINE, (
            f"{len(variants)} variant(s) within the {budget} budget, but none beats the "
            f"float model on {'/'.join(config.objective)}{ties} ({summary}); "
            "serving the float model"
        )
    return best["name"], (
        f"{best['name']}: NDCG@10 loss {best['ndcg_rel_loss']:+.2%} within the {budget} "
        f"budget; best of {len(candidates)} within budget (float model included) on "
        f"{'/'.join(config.objective)}{ties} ({summary})"
    )
