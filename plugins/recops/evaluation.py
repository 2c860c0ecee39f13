"""Offline evaluation: full-ranking metrics, segments, and ranker re-ranking.

Retrieval models are loaded with ``tf.saved_model.load`` and used only through their
``user_embedding`` and ``item_embeddings`` signatures, so one code path scores the float
model, the compressed one and whatever is served. Every user with ground truth in the
chosen split is scored against every candidate item; the user's train items are masked,
and valid items too when scoring test (RecBole accumulates seen items across phases).

The model's user inputs are read from its signature: ``user_id`` plus whatever attribute
columns the model was trained with, taken from the users table by name
(``recops.rank_signature.signature_request``), so nothing here knows a dataset's columns.

When the split carries an ``event_type`` column and the config names the dataset's spec,
only events of the spec's ``positive_types`` count as hits, and only events of its
``seen_types`` are masked as seen. Without them (MovieLens: every rating is an
``interaction``) every row is both, which is RecBole's random protocol.

Besides the user-averaged metrics, each result carries two segments:

- ``cold_users``: users with fewer than ``cold_user_threshold`` train interactions;
- ``long_tail``: ground truth restricted to items outside the most popular
  ``head_share`` of the catalogue (by train count), over users that have such items.

Baselines that are not SavedModels (popularity, EASE, BPR-MF) go through the same code
with ``evaluate_scores``; ranker-based re-ranking goes through ``evaluate_rerank``.

The splits (``temporal_split``, ``read_split``) live in the leaf ``recops.splits`` and
the signature client (``weight_rmse``, ``signature_request``) in ``recops.rank_signature``;
both are re-exported here, where callers have always found them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from recops_models.contract import HISTORY_INPUT

from recops.errors import DataError, ParamError
from recops.rank_signature import (
    load_signatures,
    rank_inputs,
    signature_inputs,
    signature_request,
    weight_rmse,
)
from recops.records import Record
from recops.splits import (
    known_histories,
    of_types,
    pad_histories,
    read_split,
    read_typed_split,
    temporal_split,
    with_times,
)
from recops.tables import latest_rows, read_parquet_columns

__all__ = [
    "EvalConfig",
    "EvalResult",
    "RerankConfig",
    "columns_for",
    "evaluate",
    "evaluate_rerank",
    "evaluate_scores",
    "event_roles_of",
    "event_types_of",
    "long_tail_items",
    "read_split",
    "temporal_split",
    "weight_rmse",
]

#: Users embedded and ranked per block, to bound memory on large catalogues.
_USER_BLOCK = 1024

#: The usual damping constant of reciprocal-rank fusion (Cormack et al., 2009).
_RRF_K = 60

#: Scores a block of users (raw ids) against the catalogue: ``[len(users), n_items]``.
Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Record):
    """What to evaluate.

    Attributes:
        model_dir: Retrieval SavedModel (the serving contract).
        split_uri: Split parquet ``user_id, item_id, split`` written by training
            (optionally ``event_type`` too).
        users_uri: users.parquet, for the user features the model's signature takes
            (read only when it takes any besides ``user_id``).
        spec_uri: The dataset's spec: its positive and seen event types apply when the
            split has ``event_type``. Empty: every row is a positive and seen.
        k: Cut-off.
        split: ``test`` (train and valid masked) or ``valid`` (train masked).
        cold_user_threshold: Users with fewer train interactions are "cold".
        head_share: Share of the catalogue (most popular in train) that is the head; the
            rest is the long tail.
        training_set_uri: The training set the split was cut from; its times order the
            history a model's ``user_embedding`` takes (``history_item_ids``). Empty:
            the split's row order stands in for time.
    """

    model_dir: str
    split_uri: str
    users_uri: str
    spec_uri: str = ""
    training_set_uri: str = ""
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
        split_uri: Split parquet ``user_id, item_id, split`` (optionally ``event_type``).
        users_uri: users.parquet: the user attributes either model takes.
        spec_uri: As in ``EvalConfig``.
        user_features_uri: Parquet with ``user_id, event_timestamp`` and the ranker's
            numeric context features (the newest row per user is used); needed only when
            the ranker takes context features.
        k: Cut-off of the final list.
        candidates: Items retrieved per user and handed to the ranker.
        rerank_by: ``click`` (the ranker's interaction probability), ``weight`` (its
            predicted interaction weight, the ``ratings`` output; ``rating`` is the same),
            or ``fusion``: reciprocal-rank fusion of the retrieval order and the click
            order, ``1 / (60 + r_retrieval) + 1 / (60 + r_click)`` with 1-based ranks.
        split: ``test`` or ``valid``.
        cold_user_threshold: As in ``EvalConfig``.
        head_share: As in ``EvalConfig``.
        training_set_uri: As in ``EvalConfig``.
    """

    retrieval_model_dir: str
    ranker_model_dir: str
    split_uri: str
    users_uri: str
    spec_uri: str = ""
    training_set_uri: str = ""
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
            raise ParamError(f"RerankConfig.candidates={self.candidates} must be >= k={self.k}")
        if self.rerank_by not in _RERANK_OUTPUTS:
            raise ParamError(
                f"RerankConfig.rerank_by={self.rerank_by!r}: expected one of "
                f"{sorted(_RERANK_OUTPUTS)}"
            )


#: The ``rank`` output each ``rerank_by`` orders by (fusion fuses the click order).
_RERANK_OUTPUTS = {"click": "scores", "fusion": "scores", "weight": "ratings", "rating": "ratings"}


def _check_common(name: str, split: str, k: int, head_share: float) -> None:
    if split not in ("valid", "test"):
        raise ParamError(f"{name}.split={split!r}: expected 'valid' or 'test'")
    if k < 1:
        raise ParamError(f"{name}.k={k!r} must be >= 1")
    if not 0.0 <= head_share < 1.0:
        raise ParamError(f"{name}.head_share={head_share!r} must be in [0, 1)")


# --------------------------------------------------------------------------- event types


def event_types_of(spec_uri: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(positive_types, seen_types)`` of the dataset a spec declares; ``((), ())`` if none.

    Args:
        spec_uri: The spec YAML, or "" for "every event is a positive and seen".
    """
    positives, seen, _ = event_roles_of(spec_uri)
    return positives, seen


def event_roles_of(spec_uri: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``(positive_types, seen_types, negative_types)`` of a spec, read once; all ``()``
    without one (every event a positive and seen, none negative)."""
    if not spec_uri:
        return (), (), ()
    from recops.dataset_spec import load_spec
    from recops.layout import layout_from_spec

    layout = layout_from_spec(load_spec(spec_uri))
    return layout.positive_types, layout.seen_types, layout.negative_types


# --------------------------------------------------------------------------- segments


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


def columns_for(
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


def _target(split: pd.DataFrame, name: str, positive_types: Sequence[str]) -> pd.DataFrame:
    """The positives of split ``name``: its rows of a positive event type."""
    target = of_types(split[split["split"] == name], positive_types)
    if target.empty:
        raise DataError(f"split has no {name!r} rows of a positive event type")
    return target


def _eval_users(split: pd.DataFrame, name: str, positive_types: Sequence[str]) -> np.ndarray:
    """Users with ground truth in split ``name``, sorted."""
    target = _target(split, name, positive_types)
    return np.sort(target["user_id"].unique()).astype(np.int64)


def _task(
    split: pd.DataFrame,
    item_ids: np.ndarray,
    name: str,
    head_share: float,
    positive_types: Sequence[str] = (),
    seen_types: Sequence[str] = (),
) -> _Task:
    target = _target(split, name, positive_types)
    earlier = ("train",) if name == "valid" else ("train", "valid")
    seen = of_types(split[split["split"].isin(earlier)], seen_types)
    train = split[split["split"] == "train"]
    eval_users = np.sort(target["user_id"].unique()).astype(np.int64)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    column_of = {int(item): col for col, item in enumerate(item_ids.tolist())}
    counts = train.groupby("user_id").size().reindex(eval_users, fill_value=0).to_numpy()
    tail = long_tail_items(train["item_id"].to_numpy(), item_ids, head_share)
    return _Task(
        eval_users=eval_users,
        item_ids=item_ids,
        ground_truth=columns_for(target, eval_users, column_of),
        exclude=[cols[cols >= 0] for cols in columns_for(seen, eval_users, column_of)],
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
        raise ParamError(f"k={k} exceeds the {task.item_ids.size} candidate items")
    ranked = []
    for start in range(0, task.eval_users.size, _USER_BLOCK):
        block = slice(start, start + _USER_BLOCK)
        scores = np.asarray(scorer(task.eval_users[block]))
        expected = (task.eval_users[block].size, task.item_ids.size)
        if scores.shape != expected:
            raise DataError(f"scorer returned shape {scores.shape}, expected {expected}")
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
    positive_types: Sequence[str] = (),
    seen_types: Sequence[str] = (),
) -> EvalResult:
    """Full-ranking evaluation of any scorer (popularity, EASE, BPR-MF, ...).

    Args:
        scorer: Maps a block of raw user ids to scores ``[users, len(item_ids)]``.
        split: Frame ``user_id, item_id, split`` (and optionally ``event_type``).
        item_ids: The catalogue, in the scorer's column order.
        k: Cut-off.
        split_name: ``test`` (train and valid masked) or ``valid`` (train masked).
        name: Recorded as ``model_dir`` in the result.
        cold_user_threshold: Users with fewer train interactions are "cold".
        head_share: Head share of the catalogue for the long-tail segment.
        positive_types: Event types that count as hits (all when empty or when the split
            has no ``event_type``).
        seen_types: Event types masked as seen (all when empty or without ``event_type``).

    Returns:
        The metrics and segments.
    """
    _check_common("evaluate_scores", split_name, k, head_share)
    task = _task(split, item_ids, split_name, head_share, positive_types, seen_types)
    ranked = _rank_blocks(task, scorer, k)
    return _result(task, ranked, k, split_name, name, cold_user_threshold)


# --------------------------------------------------------------------------- model inputs


def _user_rows(
    users_uri: str, names: Sequence[str], eval_users: np.ndarray, model_dir: str
) -> pd.DataFrame:
    """The newest users-table row of each user, with the attribute columns ``names``.

    The frame is indexed by ``user_id`` in ``eval_users`` order. Without ``names`` (a model
    that takes only ``user_id``) the users table is not read. A user without a row (new
    since the users file, or first seen by ``POST /v1/events``) gets its attributes
    missing, as serving sends them.

    Raises:
        DataError: If the table lacks a column the model takes.
    """
    index = pd.Index(eval_users, name="user_id")
    if not names:
        return pd.DataFrame(index=index)
    try:
        frame = read_parquet_columns(users_uri, ("user_id", "event_timestamp", *names), "users")
    except DataError as exc:
        raise DataError(f"{exc} (model {model_dir} takes user inputs {list(names)})") from exc
    latest = latest_rows(frame, "user_id").set_index("user_id")[list(names)]
    return latest.reindex(index)


def _user_inputs(signature: Any, *, besides: Sequence[str] = ()) -> tuple[str, ...]:
    """A signature's inputs other than ``user_id``, ``item_ids`` and ``besides``."""
    skip = {"user_id", "item_ids", *besides}
    return tuple(name for name in signature_inputs(signature) if name not in skip)


def _histories(
    split: pd.DataFrame,
    name: str,
    users: np.ndarray,
    seen_types: Sequence[str],
    training_set_uri: str,
) -> dict[int, np.ndarray]:
    """Each user's seen items known before split ``name``, most recent first.

    This is the history a served request carries (``recops.served_eval``); a model whose
    user tower reads it is embedded with it here too.
    """
    earlier = ("train",) if name == "valid" else ("train", "valid")
    known = of_types(with_times(split, training_set_uri), seen_types)
    known = known[known["split"].isin(earlier)]
    return dict(zip(users.tolist(), known_histories(known, users), strict=True))


def _retrieval_scorer(
    loaded: Any, profiles: pd.DataFrame, histories: dict[int, np.ndarray] | None = None
) -> tuple[Scorer, np.ndarray]:
    """A scorer over the retrieval model's catalogue, and the catalogue's item ids.

    ``profiles`` is indexed by ``user_id`` and holds every user input the model takes;
    ``histories`` feeds ``history_item_ids`` when the model takes it (empty otherwise).
    """
    catalogue = loaded.signatures["item_embeddings"]()
    item_ids = catalogue["item_ids"].numpy().astype(np.int64)
    item_vectors = catalogue["embeddings"].numpy()
    embed = loaded.signatures["user_embedding"]
    takes_history = HISTORY_INPUT in signature_inputs(embed)

    def scorer(block_users: np.ndarray) -> np.ndarray:
        rows = profiles.loc[block_users]
        fixed: dict[str, Any] = {"user_id": np.asarray(block_users, np.int64)}
        if takes_history and histories is not None:
            empty = np.zeros(0, np.int64)
            fixed[HISTORY_INPUT] = pad_histories(
                [histories.get(int(u), empty) for u in block_users]
            )
        vectors = embed(**signature_request(embed, rows, **fixed))["embedding"].numpy()
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
        DataError: If the split or users table is malformed.
        ParamError: If ``k`` exceeds the catalogue.
        InputMissingError: If an input is missing (a ``FileNotFoundError``).
    """
    positives, seen = event_types_of(config.spec_uri)
    split = read_typed_split(config.split_uri)
    eval_users = _eval_users(split, config.split, positives)
    loaded = load_signatures(config.model_dir, ("user_embedding", "item_embeddings"))
    names = _user_inputs(loaded.signatures["user_embedding"], besides=(HISTORY_INPUT,))
    profiles = _user_rows(config.users_uri, names, eval_users, config.model_dir)
    histories = _histories(split, config.split, eval_users, seen, config.training_set_uri)
    scorer, item_ids = _retrieval_scorer(loaded, profiles, histories)
    if config.k > item_ids.size:
        raise ParamError(f"EvalConfig.k={config.k} exceeds the {item_ids.size} candidate items")
    return evaluate_scores(
        scorer,
        split=split,
        item_ids=item_ids,
        k=config.k,
        split_name=config.split,
        name=config.model_dir,
        cold_user_threshold=config.cold_user_threshold,
        head_share=config.head_share,
        positive_types=positives,
        seen_types=seen,
    )


# --------------------------------------------------------------------------- ranker


def _context(
    uri: str | None, names: Sequence[str], users: np.ndarray, model_dir: str
) -> pd.DataFrame:
    """The newest value of each numeric context feature per user (empty frame if none)."""
    index = pd.Index(users, name="user_id")
    if not names:
        return pd.DataFrame(index=index)
    if uri is None:
        raise ParamError(
            f"ranker {model_dir} takes context features {list(names)}; set user_features_uri"
        )
    frame = read_parquet_columns(uri, ("user_id", "event_timestamp", *names), "user features")
    latest = latest_rows(frame, "user_id").set_index("user_id")[list(names)]
    values = latest.reindex(index)
    if values.isna().any().any():
        lacking = users[values.isna().any(axis=1).to_numpy()][:10].tolist()
        raise DataError(f"user features {uri} lacks values for user_id {lacking}")
    return values


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
    unseen candidates; relevant items outside the retrieved set count as misses. Each
    model's user attributes come from the users table (by its signature's input names),
    the ranker's context features from ``user_features_uri``.

    Args:
        config: The two models, the split and the cut-offs.

    Returns:
        The metrics and segments of the re-ranked lists (``model_dir`` names the ranker).

    Raises:
        DataError: On malformed inputs or a missing signature.
        ParamError: If ``candidates`` exceeds the catalogue or the ranker needs
            ``user_features_uri``.
        InputMissingError: If an input is missing (a ``FileNotFoundError``).
    """
    positives, seen = event_types_of(config.spec_uri)
    split = read_typed_split(config.split_uri)
    eval_users = _eval_users(split, config.split, positives)
    retrieval = load_signatures(config.retrieval_model_dir, ("user_embedding", "item_embeddings"))
    ranker = load_signatures(config.ranker_model_dir, ("rank",))
    rank = ranker.signatures["rank"]
    context = rank_inputs(ranker, config.ranker_model_dir)
    names = dict.fromkeys(
        (
            *_user_inputs(retrieval.signatures["user_embedding"], besides=(HISTORY_INPUT,)),
            *_user_inputs(rank, besides=(*context, HISTORY_INPUT)),
        )
    )
    profiles = _user_rows(config.users_uri, tuple(names), eval_users, config.ranker_model_dir)
    profiles = profiles.join(
        _context(config.user_features_uri, context, eval_users, config.ranker_model_dir)
    )
    histories = _histories(split, config.split, eval_users, seen, config.training_set_uri)
    scorer, item_ids = _retrieval_scorer(retrieval, profiles, histories)
    if config.candidates > item_ids.size:
        raise ParamError(
            f"RerankConfig.candidates={config.candidates} exceeds the {item_ids.size} "
            "candidate items"
        )
    task = _task(split, item_ids, config.split, config.head_share, positives, seen)
    retrieved = _rank_blocks(task, scorer, config.candidates)
    output = _RERANK_OUTPUTS[config.rerank_by]
    # A ranker with a history input scores each candidate against the history that
    # retrieval was given: the same rows, the same order.
    ranker_history = HISTORY_INPUT in signature_inputs(rank)
    empty = np.zeros(0, np.int64)
    reranked = []
    for start in range(0, eval_users.size, _USER_BLOCK):
        block = slice(start, start + _USER_BLOCK)
        columns = retrieved[block]
        rows = profiles.loc[eval_users[block]]
        fixed: dict[str, Any] = {"user_id": eval_users[block], "item_ids": item_ids[columns]}
        if ranker_history:
            fixed[HISTORY_INPUT] = pad_histories(
                [histories.get(int(u), empty) for u in eval_users[block]]
            )
        request = signature_request(rank, rows, **fixed)
        scores = rank(**request)[output].numpy()
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
