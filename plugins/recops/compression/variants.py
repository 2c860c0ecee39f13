"""The variant registry and ``compress_variant``: build, export and score one variant.

``compress_variant(VariantConfig(variant=...)) -> VariantResult`` builds one variant from
``<train_dir>/weights``, exports it, scores it on the test split and writes into
``output_dir``::

    model/        SavedModel with the serving contract (SavedModel variants)
    model.tflite  edge artifact (TFLite variants)
    spec.json     vocabularies that index the TFLite inputs (TFLite variants)
    config.json   the config this folder belongs to
    result.json   VariantResult
    _SUCCESS      written last, only when the variant succeeded

A variant that fails (unsupported layer, conversion error, unknown name) is *recorded*:
``status="failed"`` with the exception text in ``reason``, ``result.json`` written and no
``_SUCCESS``, so a retry tries again. It never raises, except on a completed folder of
another config or a training folder that is not complete.

``VARIANTS`` (declared once, in ``recops.params``, with what each does) names every
variant; ``_builder`` maps each to its builder in ``recops.compression.builders`` or
``recops.compression.tflite``:

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
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from recops_models.tf_env import use_legacy_keras

from recops.compression.builders import (
    BuildContext,
    Built,
    build_cluster,
    build_distill,
    build_prune,
    build_tables,
    training_layout,
)
from recops.compression.footprint import directory_bytes, gzip_bytes, saved_model_params
from recops.compression.records import (
    QUALITY_K,
    TFLITE_FILE,
    MissingInputError,
    VariantConfig,
    VariantResult,
    canonical,
)
from recops.compression.tflite import build_tflite
from recops.errors import ParamError
from recops.io import SUCCESS_MARKER, atomic_write_text
from recops.layout import protocol_of
from recops.params import VARIANTS
from recops.training import (
    CONFIG_FILE,
    RESULT_FILE,
    item_log_probabilities,
    load_completed,
    prepare_output_dir,
    publish,
    read_items,
    read_parquet_columns,
    read_training_set,
    train_rows,
)

__all__ = ["TFLITE_VARIANTS", "VARIANTS", "compress_variant"]

log = logging.getLogger(__name__)

#: Variants whose artifact is TFLite; TF Serving would keep running the float SavedModel.
TFLITE_VARIANTS = frozenset({"ptq_dynamic", "ptq_float16", "ptq_int8", "qat_int8"})
_PRUNE = {"prune_50": 0.5, "prune_80": 0.8, "prune_90": 0.9}
_TABLES = {"int8_tables": "int8", "fp16_tables": "float16", "folded_fp32": "float32"}
_DISTILL = {"distill_d32": "float32", "distill_d32_int8": "int8"}
_PTQ = {"ptq_dynamic": "dynamic", "ptq_float16": "float16", "ptq_int8": "int8"}


def _builder(variant: str) -> Callable[[BuildContext], Built]:
    """The build function of ``variant``.

    Raises:
        ParamError: On an unknown variant.
    """
    if variant in _PRUNE:
        return lambda ctx: build_prune(ctx, _PRUNE[variant])
    if variant == "cluster_16":
        return lambda ctx: build_cluster(ctx, 16)
    if variant in _TABLES:
        return lambda ctx: build_tables(ctx, _TABLES[variant])
    if variant in _DISTILL:
        return lambda ctx: build_distill(ctx, _DISTILL[variant])
    if variant in _PTQ:
        return lambda ctx: build_tflite(ctx, _PTQ[variant])
    if variant == "qat_int8":
        return lambda ctx: build_tflite(ctx, "qat")
    raise ParamError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")


def compress_variant(config: VariantConfig) -> VariantResult:
    """Build, export and score one compression variant; never raise for the variant.

    Args:
        config: The variant, the trained model and data, and the knobs.

    Returns:
        The result: the stored one when ``output_dir`` is already complete;
        ``status="failed"`` with the reason when the variant could not be built.

    Raises:
        MissingInputError: If ``train_dir`` is not a completed training folder (a
            ``FileNotFoundError``).
        ValueError: If ``output_dir`` holds a completed run of another config.
    """
    output_dir = Path(config.output_dir)
    config_dict = canonical(config)
    done = load_completed(output_dir, config_dict)
    if done is not None:
        log.info("%s is complete; returning its result", output_dir)
        return VariantResult.from_dict(done)
    train_dir = Path(config.train_dir)
    if not (train_dir / SUCCESS_MARKER).is_file():
        raise MissingInputError(f"train_dir {train_dir} is not a completed training run")
    staging = prepare_output_dir(output_dir, config_dict, backup=None)
    started = time.perf_counter()
    serves = "tflite" if config.variant in TFLITE_VARIANTS else "saved_model"
    try:
        build = _builder(config.variant)
        train_config = json.loads((train_dir / CONFIG_FILE).read_text())
        layout = training_layout(train_dir, train_config)
        frame = read_training_set(config.training_set_uri, layout)
        split = read_parquet_columns(config.split_uri, ("user_id", "item_id", "split"), "split")
        rows = train_rows(frame, split)
        items = read_items(config.items_uri, layout)
        logq = (
            item_log_probabilities(rows["item_id"].to_numpy())
            if train_config.get("logq_correction")
            else None
        )
        use_legacy_keras()
        ctx = BuildContext(
            config=config,
            train_dir=train_dir,
            rows=rows,
            items={
                name: items[name].to_numpy()
                for name in ("item_id", *(f.name for f in layout.item_features))
            },
            logq=logq,
            layout=layout,
            staging=staging,
            protocol=protocol_of(train_config.get("protocol"), str(train_config["spec_uri"])),
        )
        built = build(ctx)
        result = _measure_built(
            config, built, staging, train_dir, serves, started, str(train_config["spec_uri"])
        )
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
        atomic_write_text(output_dir / RESULT_FILE, json.dumps(result.to_dict(), indent=2))
        return result
    names = [n for n in ("model", TFLITE_FILE, "spec.json") if (staging / n).exists()]
    publish(staging, output_dir, names, result.to_dict())
    log.info("variant %s", result.to_dict())
    return result


def _measure_built(
    config: VariantConfig,
    built: Built,
    staging: Path,
    train_dir: Path,
    serves: str,
    started: float,
    spec_uri: str,
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
                spec_uri=spec_uri,
                training_set_uri=config.training_set_uri,
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
