"""Offline evaluation: full-ranking metrics, segments, the temporal split, rating RMSE and
re-ranking.

Retrieval models are loaded with ``tf.saved_model.load`` and used only through their
``user_embedding`` and ``item_embeddings`` signatures, so one code path scores the float
model, the compressed one and whatever is served. Every user with ground truth in the
chosen split is scored against every candidate item; the user's train items are masked,
and valid items too when scoring test (RecBole accumulates seen items across phases).

Besides the user-averaged metrics, each result carries two segments:

- ``cold_users``: users with fewer than ``cold_user_threshold`` train interactions;
- ``long_tail``: ground truth restricted to items outside the most popular
  ``head_share`` of the catalogue (by train count), over users that have such items.

Baselines that are not SavedModels (popularity, EASE, BPR-MF) go through the same code
with ``evaluate_scores``; ranker-based re-ranking goes through ``evaluate_rerank``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recops.records import Record
from recops.training import (
    SPLITS,
    USER_COLUMNS,
    _split_counts,
    latest_rows,
    read_parquet_columns,
)

__all__ = [
    "EvalConfig",
    "EvalResult",
    "RerankConfig",
    "evaluate",
    "evaluate_rerank",
    "evaluate_scores",
    "long_tail_items",
    "rating_rmse",
    "read_split",
    "temporal_split",
]

#: Users embedded and ranked per block, to bound memory on large catalogues.
_USER_BLOCK = 1024
#: Inputs of the ranker's ``rank`` signature that are not numeric user features.
_RANK_BASE_INPUTS = ("user_id", "age", "gender", "occupation", "item_ids")

#: The usual damping constant of reciprocal-rank fusion (Cormack et al., 2009).
_RRF_K = 60

#: Scores a block of users (raw ids) against the catalogue: ``[len(users), n_items]``.
Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Record):
    """What to evaluate.

    Attributes:
        model_dir: Retrieval SavedModel (the serving contract).
        split_uri: Split parquet ``user_id, item_id, split`` written by training.
        users_uri: users.parquet, for the user features the model takes.
        k: Cut-off.
        split: ``test`` (train and valid masked) or ``valid`` (train masked).
        cold_user_threshold: Users with fewer train interactions are "cold".
        head_share: Share of the catalogue (most popular in train) that is the head; the
            rest is the long tail.
    """

    model_dir: str
    split_uri: str
    users_uri: str
    k: int = 10
    split: str = "test"
    cold_user_threshold: int = 20
    head_share: float = 0.2

    def __post_init__(self) -> None:
        _check_common(type(self).__name__, self.split, self.k, self.head_share)


@dataclass(frozen=True, kw_only=True)
class EvalResult(Record):
    """User-averaged full-ranking metrics @k.

    Attributes:
        segments: ``{"cold_users": {...}, "long_tail": {...}}``, each holding
            ``recall_at_k``, ``ndcg_at_k`` and ``n_users`` (NaN metrics when the segment
            is empty).
    """

    recall_at_k: float
    ndcg_at_k: float
    hit_at_k: float
    mrr_at_k: float
    precision_at_k: float
    k: int
    n_users: int
    split: str
    model_dir: str
    segments: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RerankConfig(Record):
    """Retrieve with a two-tower model, re-rank with the ranker, score the top ``k``.

    Attributes:
        retrieval_model_dir: Retrieval SavedModel (``user_embedding``, ``item_embeddings``).
        ranker_model_dir: Ranker SavedModel with the ``rank`` signature.
        split_uri: Split parquet ``user_id, item_id, split``.
        users_uri: users.parquet (age, gender, occupation).
        user_features_uri: Parquet with ``user_id, event_timestamp`` and the ranker's
            numeric user features (the newest row per user is used); needed only when
            the ranker takes numeric user features.
        k: Cut-off of the final list.
        candidates: Items retrieved per user and handed to the ranker.
        rerank_by: ``click`` (the ranker's interaction probability), ``rating``, or
            ``fusion``: reciprocal-rank fusion of the retrieval order and the click
            order, ``1 / (60 + r_retrieval) + 1 / (60 + r_click)`` with 1-based ranks.
        split: ``test`` or ``valid``.
        cold_user_threshold: As in ``EvalConfig``.
        head_share: As in ``EvalConfig``.
    """

    retrieval_model_dir: str
    ranker_model_dir: str
    split_uri: str
    users_uri: str
    user_features_uri: str | None = None
    k: int = 10
    candidates: int = 100
    rerank_by: str = "click"
    split: str = "test"
    cold_user_threshold: int = 20
    head_share: float = 0.2

    def __post_init__(self) -> None:
        _check_common(type(self).__name__, self.split, self.k, self.head_share)
        if self.candidates < self.k:
            raise ValueError(f"RerankConfig.candidates={self.candidates} must be >= k={self.k}")
        if self.rerank_by not in ("click", "rating", "fusion"):
            raise ValueError(
                f"RerankConfig.rerank_by={self.rerank_by!r}: expected 'click', 'rating' or 'fusion'"
            )


def _check_common(name: str, split: str, k: int, head_share: float) -> None:
    if split not in ("valid", "test"):
        raise ValueError(f"{name}.split={split!r}: expected 'valid' or 'test'")
    if k < 1:
        raise ValueError(f"{name}.k={k!r} must be >= 1")
    if not 0.0 <= head_share < 1.0:
        raise ValueError(f"{name}.head_share={head_share!r} must be in [0, 1)")


# --------------------------------------------------------------------------- splits


def temporal_split(
    user_id: np.ndarray,
    item_id: np.ndarray,
    timestamp: np.ndarray,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> pd.DataFrame:
    """Split each user's interactions by time: oldest to train, newest to test.

    RecBole's "TO" ordering: each user's rows are sorted by ``timestamp`` (ties keep the
    input order) and cut with the same per-user counts as the random split
    (``training._split_counts``), so only which rows land where differs.

    Args:
        user_id: User of each interaction.
        item_id: Item of each interaction.
        timestamp: Time of each interaction (numbers or datetimes; only order matters).
        ratios: Shares of train, valid and test.

    Returns:
        A frame ``user_id, item_id, split`` in the input row order.

    Raises:
        ValueError: If the arrays differ in length or the ratios are not three
            non-negative shares summing to 1.
    """
    user_id = np.asarray(user_id, dtype=np.int64)
    item_id = np.asarray(item_id, dtype=np.int64)
    times = pd.Series(np.asarray(timestamp))
    if not user_id.size == item_id.size == times.size:
        raise ValueError(
            f"temporal_split: user_id ({user_id.size}), item_id ({item_id.size}) and "
            f"timestamp ({times.size}) differ in length"
        )
    if len(ratios) != 3 or min(ratios) < 0 or not math.isclose(sum(ratios), 1.0):
        raise ValueError(f"temporal_split: ratios={ratios!r} must be 3 shares summing to 1")
    if times.isna().any():
        raise ValueError("temporal_split: timestamp has missing values")
    # Dense ranks of the times give one integer order for any comparable dtype.
    time_rank = times.rank(method="dense").to_numpy()
    order = np.lexsort((np.arange(user_id.size), time_rank, user_id))
    _, starts, counts = np.unique(user_id[order], return_index=True, return_counts=True)
    labels = np.empty(user_id.size, dtype=object)
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        n_train, n_valid, _ = _split_counts(count, tuple(ratios))
        rows = order[start : start + count]
        labels[rows[:n_train]] = "train"
        labels[rows[n_train : n_train + n_valid]] = "valid"
        labels[rows[n_train + n_valid :]] = "test"
    return pd.DataFrame(
        {"user_id": user_id, "item_id": item_id, "split": pd.array(labels, dtype="string")}
    )


def read_split(uri: str) -> pd.DataFrame:
    """Read a split parquet, checking its columns and split values.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If columns are missing or a split value is unknown.
    """
    split = read_parquet_columns(uri, ("user_id", "item_id", "split"), "split")
    unknown = set(split["split"].unique()) - set(SPLITS)
    if unknown:
        raise ValueError(f"split {uri} has unknown split values {sorted(unknown)}")
    return split


def long_tail_items(
    train_items: np.ndarray, catalogue: np.ndarray, head_share: float = 0.2
) -> np.ndarray:
    """Catalogue items in the long tail: all but the ``head_share`` most popular.

    Items are ordered by train count, most first, ties by lower item id; the first
    ``ceil(head_share * len(catalogue))`` are the head. Items never seen in train are
    always in the tail.

    Args:
        train_items: Item id of each train interaction.
        catalogue: The candidate item ids.
        head_share: Share of the catalogue that is the head.

    Returns:
        Sorted item ids of the tail.
    """
    catalogue = np.unique(np.asarray(catalogue, dtype=np.int64))
    counts = pd.Series(np.asarray(train_items, dtype=np.int64)).value_counts()
    popularity = counts.reindex(catalogue, fill_value=0).to_numpy()
    order = np.lexsort((catalogue, -popularity))
    n_head = math.ceil(head_share * catalogue.size)
    return np.sort(catalogue[order[n_head:]])


# --------------------------------------------------------------------------- ranking


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


@dataclass(frozen=True)
class _Task:
    """One evaluation problem: who is scored, what counts, what is masked."""

    eval_users: np.ndarray
    item_ids: np.ndarray
    ground_truth: list[np.ndarray]
    exclude: list[np.ndarray]
    train_counts: np.ndarray
    tail_columns: np.ndarray


def _task(split: pd.DataFrame, item_ids: np.ndarray, name: str, head_share: float) -> _Task:
    target = split[split["split"] == name]
    if target.empty:
        raise ValueError(f"split has no {name!r} rows")
    seen = split[split["split"].isin(("train",) if name == "valid" else ("train", "valid"))]
    train = split[split["split"] == "train"]
    eval_users = np.sort(target["user_id"].unique()).astype(np.int64)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    column_of = {int(item): col for col, item in enumerate(item_ids.tolist())}
    counts = train.groupby("user_id").size().reindex(eval_users, fill_value=0).to_numpy()
    tail = long_tail_items(train["item_id"].to_numpy(), item_ids, head_share)
    return _Task(
        eval_users=eval_users,
        item_ids=item_ids,
        ground_truth=_columns_for(target, eval_users, column_of),
        exclude=[cols[cols >= 0] for cols in _columns_for(seen, eval_users, column_of)],
        train_counts=counts,
        tail_columns=np.flatnonzero(np.isin(item_ids, tail)),
    )


def _segment(ranked: np.ndarray, truth: Sequence[np.ndarray], k: int) -> dict[str, float]:
    from recops_models.metrics import ranking_metrics

    if not len(truth):
        return {"recall_at_k": math.nan, "ndcg_at_k": math.nan, "n_users": 0.0}
    got = ranking_metrics(ranked, list(truth), k)
    return {"recall_at_k": got.recall, "ndcg_at_k": got.ndcg, "n_users": float(got.n_users)}


def _result(
    task: _Task, ranked: np.ndarray, k: int, split: str, model_dir: str, cold_threshold: int
) -> EvalResult:
    """Metrics over all users plus the cold-user and long-tail segments."""
    from recops_models.metrics import ranking_metrics

    metrics = ranking_metrics(ranked, task.ground_truth, k)
    cold = np.flatnonzero(task.train_counts < cold_threshold)
    tail_truth = [truth[np.isin(truth, task.tail_columns)] for truth in task.ground_truth]
    has_tail = np.flatnonzero([t.size > 0 for t in tail_truth])
    return EvalResult(
        recall_at_k=metrics.recall,
        ndcg_at_k=metrics.ndcg,
        hit_at_k=metrics.hit,
        mrr_at_k=metrics.mrr,
        precision_at_k=metrics.precision,
        k=k,
        n_users=metrics.n_users,
        split=split,
        model_dir=model_dir,
        segments={
            "cold_users": _segment(ranked[cold], [task.ground_truth[i] for i in cold], k),
            "long_tail": _segment(ranked[has_tail], [tail_truth[i] for i in has_tail], k),
        },
    )


def _rank_blocks(task: _Task, scorer: Scorer, k: int) -> np.ndarray:
    from recops_models.metrics import top_k_items

    if k > task.item_ids.size:
        raise ValueError(f"k={k} exceeds the {task.item_ids.size} candidate items")
    ranked = []
    for start in range(0, task.eval_users.size, _USER_BLOCK):
        block = slice(start, start + _USER_BLOCK)
        scores = np.asarray(scorer(task.eval_users[block]))
        expected = (task.eval_users[block].size, task.item_ids.size)
        if scores.shape != expected:
            raise ValueError(f"scorer returned shape {scores.shape}, expected {expected}")
        ranked.append(top_k_items(scores, k, task.exclude[block]))
    return np.concatenate(ranked)


def evaluate_scores(
    scorer: Scorer,
    *,
    split: pd.DataFrame,
    item_ids: np.ndarray,
    k: int = 10,
    split_name: str = "test",
    name: str = "",
    cold_user_threshold: int = 20,
    head_share: float = 0.2,
) -> EvalResult:
    """Full-ranking evaluation of any scorer (popularity, EASE, BPR-MF, ...).

    Args:
        scorer: Maps a block of raw user ids to scores ``[users, len(item_ids)]``.
        split: Frame ``user_id, item_id, split``.
        item_ids: The catalogue, in the scorer's column order.
        k: Cut-off.
        split_name: ``test`` (train and valid masked) or ``valid`` (train masked).
        name: Recorded as ``model_dir`` in the result.
        cold_user_threshold: Users with fewer train interactions are "cold".
        head_share: Head share of the catalogue for the long-tail segment.

    Returns:
        The metrics and segments.
    """
    _check_common("evaluate_scores", split_name, k, head_share)
    task = _task(split, item_ids, split_name, head_share)
    ranked = _rank_blocks(task, scorer, k)
    return _result(task, ranked, k, split_name, name, cold_user_threshold)


def _user_profiles(users_uri: str, eval_users: np.ndarray) -> pd.DataFrame:
    users = latest_rows(read_parquet_columns(users_uri, USER_COLUMNS, "users"), "user_id")
    profiles = users.set_index("user_id").reindex(eval_users)
    if profiles["age"].isna().any():
        lacking = eval_users[profiles["age"].isna().to_numpy()][:10].tolist()
        raise ValueError(f"users {users_uri} lacks rows for user_id {lacking}")
    return profiles


def _load_signatures(model_dir: str, names: Sequence[str]) -> Any:
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"model_dir not found: {model_dir}")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)
    for name in names:
        if name not in loaded.signatures:
            raise ValueError(f"SavedModel {model_dir} lacks signature {name!r}")
    return loaded


def _retrieval_scorer(loaded: Any, profiles: pd.DataFrame) -> tuple[Scorer, np.ndarray]:
    """A scorer over the retrieval model's catalogue, and the catalogue's item ids."""
    import tensorflow as tf

    catalogue = loaded.signatures["item_embeddings"]()
    item_ids = catalogue["item_ids"].numpy().astype(np.int64)
    item_vectors = catalogue["embeddings"].numpy()
    embed = loaded.signatures["user_embedding"]

    def scorer(block_users: np.ndarray) -> np.ndarray:
        rows = profiles.loc[block_users]
        vectors = embed(
            user_id=tf.constant(block_users, tf.int64),
            age=tf.constant(rows["age"].to_numpy().astype(np.int64)),
            gender=tf.constant(rows["gender"].to_numpy().astype(str)),
            occupation=tf.constant(rows["occupation"].to_numpy().astype(str)),
        )["embedding"].numpy()
        return np.asarray(vectors @ item_vectors.T)

    return scorer, item_ids


def evaluate(config: EvalConfig) -> EvalResult:
    """Score a retrieval SavedModel on one split with full ranking.

    Args:
        config: Model, split and cut-off.

    Returns:
        Recall, NDCG, Hit, MRR and Precision @k averaged over users with ground truth,
        and the cold-user and long-tail segments.

    Raises:
        ValueError: If the split or users table is malformed, users lack features, or
            ``k`` exceeds the catalogue.
        FileNotFoundError: If an input is missing.
    """
    split = read_split(config.split_uri)
    if split[split["split"] == config.split].empty:
        raise ValueError(f"split {config.split_uri} has no {config.split!r} rows")
    eval_users = np.sort(split.loc[split["split"] == config.split, "user_id"].unique())
    profiles = _user_profiles(config.users_uri, eval_users.astype(np.int64))
    loaded = _load_signatures(config.model_dir, ("user_embedding", "item_embeddings"))
    scorer, item_ids = _retrieval_scorer(loaded, profiles)
    if config.k > item_ids.size:
        raise ValueError(f"EvalConfig.k={config.k} exceeds the {item_ids.size} candidate items")
    return evaluate_scores(
        scorer,
        split=split,
        item_ids=item_ids,
        k=config.k,
        split_name=config.split,
        name=config.model_dir,
        cold_user_threshold=config.cold_user_threshold,
        head_share=config.head_share,
    )


# --------------------------------------------------------------------------- ranker


def _rank_inputs(loaded: Any, model_dir: str) -> tuple[str, ...]:
    """Names of the numeric user features the ranker's ``rank`` signature takes."""
    if "rank" not in loaded.signatures:
        raise ValueError(f"SavedModel {model_dir} lacks signature 'rank'")
    _, inputs = loaded.signatures["rank"].structured_input_signature
    return tuple(sorted(name for name in inputs if name not in _RANK_BASE_INPUTS))


def _user_numeric(
    uri: str | None, names: Sequence[str], users: np.ndarray, model_dir: str
) -> pd.DataFrame:
    """The newest value of each numeric user feature per user (empty frame if none)."""
    if not names:
        return pd.DataFrame(index=pd.Index(users, name="user_id"))
    if uri is None:
        raise ValueError(
            f"ranker {model_dir} takes numeric user features {list(names)}; set user_features_uri"
        )
    frame = read_parquet_columns(uri, ("user_id", "event_timestamp", *names), "user features")
    latest = latest_rows(frame, "user_id").set_index("user_id")[list(names)]
    values = latest.reindex(users)
    if values.isna().any().any():
        lacking = users[values.isna().any(axis=1).to_numpy()][:10].tolist()
        raise ValueError(f"user features {uri} lacks values for user_id {lacking}")
    return values


def rating_rmse(
    model_dir: str,
    rows: pd.DataFrame,
    *,
    batch_size: int = 8192,
) -> float:
    """RMSE of the ranker's rating head on labelled rows, through its ``rank`` signature.

    Args:
        model_dir: Ranker SavedModel.
        rows: One row per (user, item) with ``user_id, item_id, rating, age, gender,
            occupation`` and the ranker's numeric user features (for example the test
            rows of the ranking training set).
        batch_size: Rows scored per call.

    Returns:
        The root mean squared error.

    Raises:
        ValueError: If ``rows`` is empty or lacks a column the ranker needs.
    """
    loaded = _load_signatures(model_dir, ("rank",))
    numeric = _rank_inputs(loaded, model_dir)
    needed = ("user_id", "item_id", "rating", "age", "gender", "occupation", *numeric)
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise ValueError(f"rating_rmse: rows lack columns {missing}")
    if rows.empty:
        raise ValueError("rating_rmse: no rows to score")
    rank = loaded.signatures["rank"]
    errors = []
    for start in range(0, len(rows), batch_size):
        part = rows.iloc[start : start + batch_size]
        inputs = _rank_request(part, part["item_id"].to_numpy().reshape(-1, 1), numeric)
        predicted = rank(**inputs)["ratings"].numpy()[:, 0]
        errors.append(predicted - part["rating"].to_numpy(np.float64))
    return float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))


def _rank_request(profiles: pd.DataFrame, item_ids: np.ndarray, numeric: Sequence[str]) -> Any:
    """Keyword arguments of one ``rank`` call: user columns of ``profiles`` and items."""
    import tensorflow as tf

    inputs = {
        "age": tf.constant(profiles["age"].to_numpy().astype(np.int64)),
        "gender": tf.constant(profiles["gender"].to_numpy().astype(str)),
        "occupation": tf.constant(profiles["occupation"].to_numpy().astype(str)),
        "item_ids": tf.constant(np.asarray(item_ids, dtype=np.int64)),
    }
    if "user_id" in profiles.columns:
        inputs["user_id"] = tf.constant(profiles["user_id"].to_numpy().astype(np.int64))
    else:
        inputs["user_id"] = tf.constant(profiles.index.to_numpy().astype(np.int64))
    for name in numeric:
        inputs[name] = tf.constant(profiles[name].to_numpy().astype(np.float32))
    return inputs


def _fuse(ranker_scores: np.ndarray) -> np.ndarray:
    """Reciprocal-rank fusion of the retrieval order (the columns' order) and the ranker's."""
    n = ranker_scores.shape[1]
    by_ranker = np.argsort(-ranker_scores, axis=1, kind="stable")
    ranker_rank = np.empty_like(by_ranker)
    np.put_along_axis(ranker_rank, by_ranker, np.arange(1, n + 1)[None, :], axis=1)
    retrieval_rank = np.arange(1, n + 1)[None, :]
    return np.asarray(1.0 / (_RRF_K + retrieval_rank) + 1.0 / (_RRF_K + ranker_rank))


def evaluate_rerank(config: RerankConfig) -> EvalResult:
    """Retrieve ``candidates`` per user, re-rank them with the ranker, score the top ``k``.

    Retrieval masks seen items exactly as ``evaluate`` does, so the ranker only reorders
    unseen candidates; relevant items outside the retrieved set count as misses.

    Args:
        config: The two models, the split and the cut-offs.

    Returns:
        The metrics and segments of the re-ranked lists (``model_dir`` names the ranker).

    Raises:
        ValueError: On malformed inputs or a missing signature.
        FileNotFoundError: If an input is missing.
    """
    split = read_split(config.split_uri)
    if split[split["split"] == config.split].empty:
        raise ValueError(f"split {config.split_uri} has no {config.split!r} rows")
    eval_users = np.sort(split.loc[split["split"] == config.split, "user_id"].unique())
    eval_users = eval_users.astype(np.int64)
    profiles = _user_profiles(config.users_uri, eval_users)
    retrieval = _load_signatures(config.retrieval_model_dir, ("user_embedding", "item_embeddings"))
    ranker = _load_signatures(config.ranker_model_dir, ("rank",))
    numeric = _rank_inputs(ranker, config.ranker_model_dir)
    profiles = profiles.join(
        _user_numeric(config.user_features_uri, numeric, eval_users, config.ranker_model_dir)
    )
    scorer, item_ids = _retrieval_scorer(retrieval, profiles)
    if config.candidates > item_ids.size:
        raise ValueError(
            f"RerankConfig.candidates={config.candidates} exceeds the {item_ids.size} "
            "candidate items"
        )
    task = _task(split, item_ids, config.split, config.head_share)
    retrieved = _rank_blocks(task, scorer, config.candidates)
    rank = ranker.signatures["rank"]
    output = "ratings" if config.rerank_by == "rating" else "scores"
    reranked = []
    for start in range(0, eval_users.size, _USER_BLOCK):
        block = slice(start, start + _USER_BLOCK)
        columns = retrieved[block]
        rows = profiles.loc[eval_users[block]]
        scores = rank(**_rank_request(rows, item_ids[columns], numeric))[output].numpy()
        if config.rerank_by == "fusion":
            scores = _fuse(scores)
        # Stable sort: equal ranker scores keep the retrieval order.
        order = np.argsort(-scores, axis=1, kind="stable")[:, : config.k]
        reranked.append(np.take_along_axis(columns, order, axis=1))
    return _result(
        task,
        np.concatenate(reranked),
        config.k,
        config.split,
        config.ranker_model_dir,
        config.cold_user_threshold,
    )
