"""The TFLite edge variants (PTQ dynamic/float16/int8 and QAT int8) and their scoring.

TFLite variants keep ``model_dir`` pointing at the float SavedModel (what TF Serving would
run) and put the edge artifact in ``model.tflite``; their quality is measured through the
TFLite interpreter with the same metrics code and protocol as
``recops.evaluation.evaluate``. The TFLite function takes indexed ids (see
``recops_models.edge``): hash tables do not convert.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

from recops.compression.builders import BuildContext, Built, training_dataset, training_features
from recops.compression.records import QUALITY_K, TFLITE_FILE, VariantConfig
from recops.config import RETRIEVAL_K
from recops.errors import DataError
from recops.training import (
    SPLITS,
    USER_COLUMNS,
    latest_rows,
    read_parquet_columns,
    seed_everything,
)

__all__ = ["build_tflite"]


def _calibration_features(ctx: BuildContext, spec: Any) -> dict[str, np.ndarray]:
    """Indexed user features of training rows sampled for int8 calibration."""
    features = training_features(ctx, spec)
    n = len(features["user_idx"])
    rng = np.random.default_rng(ctx.config.seed)
    pick = np.sort(rng.choice(n, min(n, ctx.config.calibration_rows), replace=False))
    return {
        name: features[name][pick] for name in ("user_idx", "gender_idx", "occupation_idx", "age")
    }


def build_tflite(ctx: BuildContext, mode: str) -> Built:
    """Convert the user tower and catalogue to TFLite (``mode``: a PTQ mode or ``qat``).

    ``qat`` fine-tunes the user tower's dense layers with quantization-aware training
    first, then converts to int8.
    """
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
            training_dataset(ctx, spec),
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
        blob: bytes = convert_retrieval_tflite(
            user_tower=user_tower,
            candidate_ids=item_ids,
            candidates=vectors,
            k=k,
            mode=mode,
            representative=calibration,
        )
        return blob

    blob = convert(RETRIEVAL_K)
    (ctx.staging / TFLITE_FILE).write_bytes(blob)
    shutil.copyfile(ctx.train_dir / "weights" / "spec.json", ctx.staging / "spec.json")
    # Full ranking needs every candidate's score: the same conversion with k = catalogue
    # (same weights, same calibration data, so the same quantization) is scored instead.
    quality = _tflite_quality(convert(len(item_ids)), spec, item_ids, ctx.config)
    return Built(tflite=blob, quality=quality, loss=loss)


def _eval_ground_truth(
    split_uri: str, users_uri: str, item_ids: np.ndarray
) -> tuple[np.ndarray, Any, list[np.ndarray], list[np.ndarray]]:
    """Test users, their profiles, ground-truth and seen candidate columns.

    The same protocol as ``recops.evaluation.evaluate`` (test split; train and valid
    items masked; relevant items missing from the catalogue count but are unreachable).

    Raises:
        DataError: On unknown split values or test users without a profile.
    """
    split = read_parquet_columns(split_uri, ("user_id", "item_id", "split"), "split")
    unknown = set(split["split"].unique()) - set(SPLITS)
    if unknown:
        raise DataError(f"split {split_uri} has unknown split values {sorted(unknown)}")
    target = split[split["split"] == "test"]
    seen = split[split["split"].isin(("train", "valid"))]
    users = latest_rows(read_parquet_columns(users_uri, USER_COLUMNS, "users"), "user_id")
    eval_users = np.sort(target["user_id"].unique()).astype(np.int64)
    profiles = users.set_index("user_id").reindex(eval_users)
    if profiles["age"].isna().any():
        raise DataError(f"users {users_uri} lacks rows for some test users")
    column_of = {int(item): col for col, item in enumerate(item_ids.tolist())}

    from recops.evaluation import columns_for

    exclude = [cols[cols >= 0] for cols in columns_for(seen, eval_users, column_of)]
    return eval_users, profiles, columns_for(target, eval_users, column_of), exclude


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
