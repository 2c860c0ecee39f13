"""The TFLite edge variants (PTQ dynamic/float16/int8 and QAT int8) and their scoring.

TFLite variants keep ``model_dir`` pointing at the float SavedModel (what TF Serving would
run) and put the edge artifact in ``model.tflite``; their quality is measured through the
TFLite interpreter with the same metrics code and protocol as
``recops.evaluation.evaluate``. The TFLite function takes indexed features (see
``recops_models.edge``): string lookups do not convert, so the users' raw columns are
indexed in Python first (``edge_features``), with the model's own vocabularies.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pandas as pd

from recops.compression.builders import BuildContext, Built, training_dataset
from recops.compression.records import QUALITY_K, TFLITE_FILE
from recops.config import RETRIEVAL_K
from recops.splits import known_histories, of_types, pad_histories, read_typed_split, with_times
from recops.tables import read_entities
from recops.training import seed_everything
from recops.training.inputs import item_tower_inputs

__all__ = ["build_tflite", "edge_features"]


def edge_features(
    spec: Any, users: pd.DataFrame, histories: list[np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """The TFLite function's inputs for ``users`` (``user_id`` and the user features).

    Args:
        spec: The model's ``TwoTowerSpec`` (vocabularies and statistics).
        users: One row per request: ``user_id`` and the spec's user feature columns.
        histories: Each user's seen items, newest first, for a model with a history
            encoding (None: empty histories).

    Returns:
        Indexed arrays keyed by the TFLite signature's input names. The masking input
        is an empty history (one ``HISTORY_PAD`` column: nothing masked; the caller's
        metrics mask), whatever ``histories`` feeds the tower.
    """
    from recops_models.edge import edge_inputs
    from recops_models.two_tower import HISTORY_INPUT, HISTORY_PAD

    history = (
        None
        if histories is None
        else pad_histories([h[: max(spec.history_length, 1)] for h in histories])
    )
    columns = {str(c): users[c].to_numpy() for c in users.columns}
    features = dict(edge_inputs(spec, columns, history))
    features[HISTORY_INPUT] = np.full((len(users), 1), HISTORY_PAD, np.int64)
    return features


def _calibration_features(ctx: BuildContext, spec: Any) -> dict[str, np.ndarray]:
    """Indexed user features of training rows sampled for int8 calibration."""
    n = len(ctx.rows)
    rng = np.random.default_rng(ctx.config.seed)
    pick = np.sort(rng.choice(n, min(n, ctx.config.calibration_rows), replace=False))
    return edge_features(spec, ctx.rows.iloc[pick].reset_index(drop=True))


def build_tflite(ctx: BuildContext, mode: str) -> Built:
    """Convert the user tower and catalogue to TFLite (``mode``: a PTQ mode or ``qat``).

    The converted tower takes indexed inputs (``recops_models.edge.edge_user_tower``):
    string lookups do not convert. ``qat`` fine-tunes the user tower's dense layers with
    quantization-aware training first, then converts to int8.
    """
    from recops_models.edge import convert_retrieval_tflite, edge_user_tower
    from recops_models.two_tower import (
        candidate_embeddings,
        embed_in_batches,
        load_trained_model,
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
        vectors = embed_in_batches(item_tower, item_tower_inputs(spec, ctx.items))
    else:
        user_tower = edge_user_tower(model, spec)
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
    quality = _tflite_quality(convert(len(item_ids)), spec, item_ids, ctx)
    return Built(tflite=blob, quality=quality, loss=loss)


def _tflite_quality(
    blob: bytes, spec: Any, item_ids: np.ndarray, ctx: BuildContext
) -> tuple[float, float]:
    """Recall@10 and NDCG@10 of a TFLite retrieval model that returns every candidate.

    Scored by ``recops.evaluation.evaluate_scores``: the protocol of ``evaluate`` (test
    split, train and valid items of the seen types masked, hits of the positive types). A
    test user without a row in the users table is scored with its attributes missing.
    """
    from recops_models.edge import TFLiteScorer

    from recops.evaluation import evaluate_scores

    config = ctx.config
    names = [f.name for f in spec.user_features]
    users = read_entities(config.users_uri, "user_id", names, "users").set_index("user_id")
    scorer = TFLiteScorer(blob)
    column_of = pd.Series(np.arange(item_ids.size), index=item_ids)
    split = read_typed_split(config.split_uri)
    # The history serving would hand the tower at the test cut: train and valid items.
    known = of_types(with_times(split, config.training_set_uri), ctx.layout.seen_types)
    known = known[known["split"].isin(("train", "valid"))]
    history_of: dict[int, np.ndarray] = {}
    if spec.history_length:
        with_history = np.unique(known["user_id"].to_numpy(np.int64))
        found = known_histories(known, with_history, spec.history_length)
        history_of = dict(zip(with_history.tolist(), found, strict=True))
    empty = np.zeros(0, np.int64)

    def score(block: np.ndarray) -> np.ndarray:
        # A user without a row (new since the users file) has its attributes missing.
        profiles = users.reindex(block).rename_axis("user_id").reset_index()
        histories = [history_of.get(int(u), empty) for u in block] if history_of else None
        out = scorer(edge_features(spec, profiles, histories))
        columns = column_of.reindex(np.asarray(out["item_ids"]).ravel()).to_numpy(np.int64)
        scores = np.full((len(block), item_ids.size), -np.inf)
        np.put_along_axis(
            scores,
            columns.reshape(np.shape(out["item_ids"])),
            np.asarray(out["scores"], np.float64),
            axis=1,
        )
        return scores

    result = evaluate_scores(
        score,
        split=split,
        item_ids=item_ids,
        k=QUALITY_K,
        split_name="test",
        name="tflite",
        positive_types=ctx.layout.positive_types,
        seen_types=ctx.layout.seen_types,
    )
    return result.recall_at_k, result.ndcg_at_k
