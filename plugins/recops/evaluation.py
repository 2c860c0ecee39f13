"""Offline evaluation of a retrieval SavedModel with RecBole's full-ranking protocol.

The model is loaded with ``tf.saved_model.load`` and used only through its
``user_embedding`` and ``item_embeddings`` signatures, so one code path scores the float
model, the compressed one and whatever is served. Every user with ground truth in the
chosen split is scored against every candidate item; the user's train items are masked,
and valid items too when scoring test (RecBole accumulates seen items across phases).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recops.records import Record
from recops.training import SPLITS, USER_COLUMNS, latest_rows, read_parquet_columns

__all__ = ["EvalConfig", "EvalResult", "evaluate"]

#: Users embedded and ranked per block, to bound memory on large catalogues.
_USER_BLOCK = 1024


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Record):
    """What to evaluate.

    Attributes:
        model_dir: Retrieval SavedModel (the serving contract).
        split_uri: Split parquet ``user_id, item_id, split`` written by training.
        users_uri: users.parquet, for the user features the model takes.
        k: Cut-off.
        split: ``test`` (train and valid masked) or ``valid`` (train masked).
    """

    model_dir: str
    split_uri: str
    users_uri: str
    k: int = 10
    split: str = "test"

    def __post_init__(self) -> None:
        if self.split not in ("valid", "test"):
            raise ValueError(f"EvalConfig.split={self.split!r}: expected 'valid' or 'test'")
        if self.k < 1:
            raise ValueError(f"EvalConfig.k={self.k!r} must be >= 1")


@dataclass(frozen=True, kw_only=True)
class EvalResult(Record):
    """User-averaged full-ranking metrics @k."""

    recall_at_k: float
    ndcg_at_k: float
    hit_at_k: float
    mrr_at_k: float
    precision_at_k: float
    k: int
    n_users: int
    split: str
    model_dir: str


def _columns_for(
    frame: pd.DataFrame, users: np.ndarray, column_of: dict[int, int]
) -> list[np.ndarray]:
    """Per user in ``users``: candidate columns of the user's items in ``frame``.

    Items missing from the catalogue get distinct negative columns, which never match a
    ranked column: they count as relevant but unreachable.
    """
    grouped = frame.groupby("user_id")["item_id"].agg(list).to_dict()
    out = []
    missing = -1
    for user in users.tolist():
        cols = []
        for item in grouped.get(user, []):
            col = column_of.get(int(item))
            if col is None:
                col, missing = missing, missing - 1
            cols.append(col)
        out.append(np.asarray(cols, dtype=np.int64))
    return out


def evaluate(config: EvalConfig) -> EvalResult:
    """Score a retrieval SavedModel on one split with full ranking.

    Args:
        config: Model, split and cut-off.

    Returns:
        Recall, NDCG, Hit, MRR and Precision @k averaged over users with ground truth.

    Raises:
        ValueError: If the split or users table is malformed, users lack features, or
            ``k`` exceeds the catalogue.
        FileNotFoundError: If an input is missing.
    """
    from recops_models.metrics import ranking_metrics, top_k_items

    split = read_parquet_columns(config.split_uri, ("user_id", "item_id", "split"), "split")
    unknown = set(split["split"].unique()) - set(SPLITS)
    if unknown:
        raise ValueError(f"split {config.split_uri} has unknown split values {sorted(unknown)}")
    target = split[split["split"] == config.split]
    if target.empty:
        raise ValueError(f"split {config.split_uri} has no {config.split!r} rows")
    seen_splits = ("train",) if config.split == "valid" else ("train", "valid")
    seen = split[split["split"].isin(seen_splits)]

    users = latest_rows(read_parquet_columns(config.users_uri, USER_COLUMNS, "users"), "user_id")
    eval_users = np.sort(target["user_id"].unique()).astype(np.int64)
    profiles = users.set_index("user_id").reindex(eval_users)
    if profiles["age"].isna().any():
        lacking = eval_users[profiles["age"].isna().to_numpy()][:10].tolist()
        raise ValueError(f"users {config.users_uri} lacks rows for user_id {lacking}")

    if not Path(config.model_dir).is_dir():
        raise FileNotFoundError(f"model_dir not found: {config.model_dir}")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    loaded = tf.saved_model.load(config.model_dir)
    for name in ("user_embedding", "item_embeddings"):
        if name not in loaded.signatures:
            raise ValueError(f"SavedModel {config.model_dir} lacks signature {name!r}")
    catalogue = loaded.signatures["item_embeddings"]()
    item_ids = catalogue["item_ids"].numpy()
    item_vectors = catalogue["embeddings"].numpy()
    if config.k > item_ids.size:
        raise ValueError(f"EvalConfig.k={config.k} exceeds the {item_ids.size} candidate items")
    column_of = {int(item): col for col, item in enumerate(item_ids.tolist())}
    ground_truth = _columns_for(target, eval_users, column_of)
    exclude = [cols[cols >= 0] for cols in _columns_for(seen, eval_users, column_of)]

    embed = loaded.signatures["user_embedding"]
    ranked = []
    for start in range(0, eval_users.size, _USER_BLOCK):
        block = slice(start, start + _USER_BLOCK)
        vectors = embed(
            user_id=tf.constant(eval_users[block], tf.int64),
            age=tf.constant(profiles["age"].to_numpy()[block].astype(np.int64)),
            gender=tf.constant(profiles["gender"].to_numpy()[block].astype(str)),
            occupation=tf.constant(profiles["occupation"].to_numpy()[block].astype(str)),
        )["embedding"].numpy()
        ranked.append(top_k_items(vectors @ item_vectors.T, config.k, exclude[block]))
    metrics = ranking_metrics(np.concatenate(ranked), ground_truth, config.k)
    return EvalResult(
        recall_at_k=metrics.recall,
        ndcg_at_k=metrics.ndcg,
        hit_at_k=metrics.hit,
        mrr_at_k=metrics.mrr,
        precision_at_k=metrics.precision,
        k=config.k,
        n_users=metrics.n_users,
        split=config.split,
        model_dir=config.model_dir,
    )
