"""The served-path evaluation: score what the serving signature returns, as users get it.

``recops.evaluation.evaluate`` is the offline proxy: it embeds users, ranks the whole
catalogue and masks each user's known items itself. Serving does none of that masking;
what users get is the retrieval model's ``serving_default`` top-k, given the profile and
the history the online store holds. This module replays a holdout through exactly that
signature:

- each evaluated user's request holds ``user_id``, the profile attributes the signature
  takes, and ``history_item_ids``: the items of the spec's seen types known before the
  holdout (the train and valid rows when scoring test), most recent first, capped at
  ``history_max`` as the online history is (``Settings.history_max``);
- the returned list is scored as it comes, without any further masking: an item the
  model scored ``MASKED_SCORE`` (excluded by the signature) is dropped, as the
  recommendation service drops it;
- ``seen_share`` is the share of returned items that are in the history the request
  carried (the user's newest ``history_max`` seen items, what the service holds): the
  exclusion must make it 0. ``seen_share_beyond_history`` is the share the user had seen
  before that window (only users with more than ``history_max`` seen items have any):
  what the service shows again by design, reported beside it. A user with 18,000 views
  (a crawler in a real log) would otherwise block every nightly's gate.

A model exported before the signature took a history is scored as it serves, with its
seen items included: that is what its users got.

Beside the model, two baselines run on the same cut with the same exclusion: popularity
over a trailing window of the known rows (recency matters on a temporal cut) and EASE,
fitted on the rows the model trained on and handed each user's known history, as the
model is. Under the ``temporal`` protocol this is the temporal replay
(history before the cut, each user's later events the truth); under ``random`` it is
RecBole's holdout as served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from recops_models.contract import HISTORY_INPUT, HISTORY_PAD, MASKED_SCORE

from recops.errors import DataError, ParamError
from recops.records import Record

__all__ = [
    "HISTORY_INPUT",
    "MASKED_SCORE",
    "ServedEvalConfig",
    "ServedEvalResult",
    "evaluate_served",
]

_PAD = HISTORY_PAD
#: Users per signature call.
_BLOCK = 256


@dataclass(frozen=True, kw_only=True)
class ServedEvalConfig(Record):
    """One served-path evaluation.

    Attributes:
        model_dir: The retrieval SavedModel (its ``serving_default`` is what is scored).
        split_uri: The training run's ``split.parquet``.
        users_uri: The users table (profile attributes the signature takes).
        training_set_uri: The training set the split was cut from: its
            ``event_timestamp`` orders each history and places the trailing window.
        spec_uri: The dataset spec (positive and seen event types); empty: every event is
            both.
        k: Cut-off.
        split: ``test`` (history: train and valid) or ``valid`` (history: train).
        history_max: The most recent seen items a request carries (the online history's
            cap).
        popularity_days: The popularity baseline's trailing window, in days before the
            newest known event.
        ease_l2: EASE's ridge strength.
        ease_max_items: Skip EASE (and say so) above this catalogue size: its item-item
            matrix grows with the square of the catalogue.
        baselines: Score popularity and EASE too. They depend on the cut only, so a
            second model on the same cut (the champion) skips them.
    """

    model_dir: str
    split_uri: str
    users_uri: str
    training_set_uri: str
    spec_uri: str = ""
    k: int = 10
    split: str = "test"
    history_max: int = 1000
    popularity_days: int = 14
    ease_l2: float = 400.0
    ease_max_items: int = 20_000
    baselines: bool = True

    def __post_init__(self) -> None:
        if self.split not in ("test", "valid"):
            raise ParamError(f"ServedEvalConfig.split={self.split!r}: expected test or valid")
        for name in ("k", "history_max", "popularity_days", "ease_max_items"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParamError(f"ServedEvalConfig.{name}={value!r} must be a positive int")


@dataclass(frozen=True, kw_only=True)
class ServedEvalResult(Record):
    """The served figures, and the baselines on the same cut.

    Attributes:
        recall_at_k: Recall@k of the list as served.
        ndcg_at_k: NDCG@k.
        hit_at_k: Hit@k.
        mrr_at_k: MRR@k.
        precision_at_k: Precision@k.
        seen_share: Share of served items in the history the request carried (must be 0).
        seen_share_beyond_history: Share of served items the user had seen before the
            carried history's window (older than the newest ``history_max``).
        short_lists: Users who got fewer than k items.
        truncated_histories: Users whose known history exceeded ``history_max``.
        history_input: Whether the signature took the history (False: an older export,
            scored as it serves, without exclusion).
        k: Cut-off.
        n_users: Users scored (those with positives in the holdout).
        split: The holdout.
        model_dir: The model scored.
        baselines: ``popularity`` and ``ease`` figures (``recall_at_k``, ``ndcg_at_k``,
            ``hit_at_k``, ``n_users``), or a ``skipped`` reason; empty when the config
            asked for none.
    """

    recall_at_k: float
    ndcg_at_k: float
    hit_at_k: float
    mrr_at_k: float
    precision_at_k: float
    seen_share: float
    seen_share_beyond_history: float
    short_lists: int
    truncated_histories: int
    history_input: bool
    k: int
    n_users: int
    split: str
    model_dir: str
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)


# --------------------------------------------------------------------------- scoring


def _metrics(lists: np.ndarray, truth: Sequence[np.ndarray], k: int) -> dict[str, float]:
    from recops_models.metrics import ranking_metrics

    got = ranking_metrics(lists, list(truth), k)
    return {
        "recall_at_k": got.recall,
        "ndcg_at_k": got.ndcg,
        "hit_at_k": got.hit,
        "mrr_at_k": got.mrr,
        "precision_at_k": got.precision,
        "n_users": float(got.n_users),
    }


def _served_lists(
    config: ServedEvalConfig, users: np.ndarray, histories: Sequence[np.ndarray]
) -> tuple[np.ndarray, bool]:
    """Each user's served top-k item ids (``-1`` where the list ran short)."""
    from recops.evaluation import _user_inputs, _user_rows
    from recops.rank_signature import load_signatures, signature_inputs, signature_request
    from recops.splits import pad_histories

    loaded = load_signatures(config.model_dir, ("serving_default",))
    serve = loaded.signatures["serving_default"]
    takes_history = HISTORY_INPUT in signature_inputs(serve)
    names = _user_inputs(serve, besides=(HISTORY_INPUT,))
    profiles = _user_rows(config.users_uri, names, users, config.model_dir)
    lists = np.full((users.size, config.k), _PAD, np.int64)
    for start in range(0, users.size, _BLOCK):
        block = users[start : start + _BLOCK]
        fixed: dict[str, Any] = {"user_id": block}
        if takes_history:
            fixed[HISTORY_INPUT] = pad_histories(histories[start : start + _BLOCK])
        out = serve(**signature_request(serve, profiles.loc[block], **fixed))
        item_ids = out["item_ids"].numpy().astype(np.int64)
        scores = out["scores"].numpy()
        for row in range(block.size):
            kept = item_ids[row][scores[row] > MASKED_SCORE / 2][: config.k]
            lists[start + row, : kept.size] = kept
    return lists, takes_history


def _top_unseen(
    scores: np.ndarray, item_ids: np.ndarray, seen: Sequence[np.ndarray], k: int
) -> np.ndarray:
    """Each row's k best-scoring items not in its ``seen`` (ties by catalogue order).

    Args:
        scores: ``[rows, len(item_ids)]``, finite, in the sorted catalogue's order.
        item_ids: The sorted catalogue.
        seen: One array of item ids per row.
        k: Cut-off.

    Returns:
        ``[rows, k]`` item ids, ``-1`` where a row has fewer than k unseen items. The same
        lists as a stable sort of each row with its seen items at ``-inf``: one
        partition per block of rows, not a sort of the catalogue per user.
    """
    from recops_models.metrics import top_k_items
    from recops_models.vocab import OOV_INDEX, lookup_index

    exclude = []
    for items in seen:
        index = lookup_index(item_ids, items)
        exclude.append(np.unique(index[index != OOV_INDEX] - 1))
    top = item_ids[top_k_items(scores, min(k, item_ids.size), exclude)]
    lists = np.full((top.shape[0], k), _PAD, np.int64)
    for row, cols in enumerate(exclude):
        # Excluded columns sort last (-inf): a row keeps only its unseen count.
        keep = min(k, item_ids.size - cols.size)
        lists[row, :keep] = top[row, :keep]
    return lists


def _history_scores(weights: np.ndarray, columns: Sequence[np.ndarray]) -> np.ndarray:
    """Each row's sum of the item-item ``weights`` rows of its history ``columns``.

    The histories go in as sparse rows: a history is a few dozen of the catalogue's
    items, and a dense block times the item-item matrix cost a 20k catalogue 0.4 TFLOP
    per 256 users. The data takes the weights' dtype (float64 would copy them).
    """
    from scipy import sparse

    inputs = sparse.csr_array(
        (
            np.ones(sum(c.size for c in columns), weights.dtype),
            np.concatenate([np.zeros(0, np.int64), *columns]),
            np.concatenate([[0], np.cumsum([c.size for c in columns])]),
        ),
        shape=(len(columns), weights.shape[0]),
    )
    scores: np.ndarray = np.asarray(inputs @ weights)
    return scores


def _baselines(
    config: ServedEvalConfig,
    known: pd.DataFrame,
    positives: pd.DataFrame,
    users: np.ndarray,
    seen: Sequence[np.ndarray],
    truth: Sequence[np.ndarray],
    negative_types: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """Popularity over the trailing window, and EASE, with the served exclusion."""
    item_ids = np.sort(known["item_id"].unique()).astype(np.int64)
    out: dict[str, dict[str, Any]] = {}
    times = positives["event_timestamp"]
    recent = positives
    if pd.api.types.is_datetime64_any_dtype(times):
        recent = positives[times >= times.max() - pd.Timedelta(days=config.popularity_days)]
    counts = recent.groupby("item_id").size().reindex(item_ids, fill_value=0).to_numpy()
    popularity = np.asarray(counts, np.float64)
    lists = np.concatenate(
        [
            _top_unseen(
                np.broadcast_to(popularity, (len(seen[start : start + _BLOCK]), item_ids.size)),
                item_ids,
                seen[start : start + _BLOCK],
                config.k,
            )
            for start in range(0, users.size, _BLOCK)
        ]
    )
    out["popularity"] = {**_metrics(lists, truth, config.k), "window_days": config.popularity_days}
    if item_ids.size > config.ease_max_items:
        out["ease"] = {"skipped": f"{item_ids.size} items > ease_max_items={config.ease_max_items}"}
        return out
    from recops_models.ease import fit_ease

    from recops.splits import positive_rows

    # EASE learns from the rows the model trained on (train, no negative events) and,
    # like the model, is handed each user's history known at the cut (train and valid)
    # when it scores.
    train = known[known["split"] == "train"]
    kept = positive_rows(train, negative_types)
    train = (train if kept is None else train[kept]).drop_duplicates(["user_id", "item_id"])
    ease = fit_ease(
        train["user_id"].to_numpy(), train["item_id"].to_numpy(), item_ids, l2=config.ease_l2
    )
    column = {int(item): col for col, item in enumerate(item_ids.tolist())}
    history = {
        int(user): [column[int(i)] for i in items]
        for user, items in known.drop_duplicates(["user_id", "item_id"]).groupby("user_id")[
            "item_id"
        ]
    }
    rows: list[np.ndarray] = []
    for start in range(0, users.size, _BLOCK):
        block = users[start : start + _BLOCK]
        columns = [np.asarray(history.get(int(user), []), np.int64) for user in block.tolist()]
        rows.append(
            _top_unseen(
                _history_scores(ease.weights, columns),
                item_ids,
                seen[start : start + _BLOCK],
                config.k,
            )
        )
    out["ease"] = {**_metrics(np.concatenate(rows), truth, config.k), "l2": config.ease_l2}
    return out


def evaluate_served(config: ServedEvalConfig) -> ServedEvalResult:
    """Replay the holdout through the retrieval model's serving signature.

    Args:
        config: The model, the split and the cut-off.

    Returns:
        The served figures, the seen share and the baselines on the same cut.

    Raises:
        DataError: The split has no positives in the holdout, or a table lacks a row.
        InputMissingError: A file is missing.
    """
    from recops.evaluation import event_roles_of
    from recops.splits import known_histories, of_types, read_typed_split, with_times

    positive_types, seen_types, negative_types = event_roles_of(config.spec_uri)
    split = with_times(read_typed_split(config.split_uri), config.training_set_uri)
    target = of_types(split[split["split"] == config.split], positive_types)
    if target.empty:
        raise DataError(
            f"split {config.split_uri} has no {config.split!r} rows of a positive event type"
        )
    earlier = ("train",) if config.split == "valid" else ("train", "valid")
    known = split[split["split"].isin(earlier)]
    users = np.sort(target["user_id"].unique()).astype(np.int64)
    seen_full = known_histories(of_types(known, seen_types), users)
    histories = [h[: config.history_max] for h in seen_full]
    truth_by_user = {
        int(u): items.to_numpy(np.int64) for u, items in target.groupby("user_id")["item_id"]
    }
    truth = [truth_by_user[int(u)] for u in users]

    lists, takes_history = _served_lists(config, users, histories)
    metrics = _metrics(lists, truth, config.k)
    served = lists[lists != _PAD]
    shown = [row[row != _PAD] for row in lists]
    carried_hits = sum(int(np.isin(r, h).sum()) for r, h in zip(shown, histories, strict=True))
    seen_hits = sum(int(np.isin(r, s).sum()) for r, s in zip(shown, seen_full, strict=True))
    baselines = (
        _baselines(
            config,
            known,
            of_types(known, positive_types),
            users,
            seen_full,
            truth,
            negative_types,
        )
        if config.baselines
        else {}
    )
    return ServedEvalResult(
        recall_at_k=metrics["recall_at_k"],
        ndcg_at_k=metrics["ndcg_at_k"],
        hit_at_k=metrics["hit_at_k"],
        mrr_at_k=metrics["mrr_at_k"],
        precision_at_k=metrics["precision_at_k"],
        seen_share=float(carried_hits / served.size) if served.size else 0.0,
        seen_share_beyond_history=(
            float((seen_hits - carried_hits) / served.size) if served.size else 0.0
        ),
        short_lists=int((lists == _PAD).any(axis=1).sum()),
        truncated_histories=int(sum(h.size > config.history_max for h in seen_full)),
        history_input=takes_history,
        k=config.k,
        n_users=int(users.size),
        split=config.split,
        model_dir=config.model_dir,
        baselines=baselines,
    )
