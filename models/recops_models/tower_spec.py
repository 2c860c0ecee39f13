"""The two-tower model's spec (vocabularies, features, sizes) and its input names.

Split out of ``recops_models.two_tower`` (which re-exports every name here) so that the
retrieval export (``recops_models.retrieval_export``) can depend on the spec without
depending on the Keras graph code. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recops_models.contract import HISTORY_IDX, HISTORY_INPUT
from recops_models.feature_defs import (
    EncodedFeature,
    FeatureDef,
    encoded_from_json,
    encoded_to_json,
    fit_features,
    raw_inputs,
)
from recops_models.vocab import lookup_index, sorted_vocab

__all__ = [
    "RESERVED_NAMES",
    "TwoTowerSpec",
    "feature_prefix",
    "history_index",
    "item_inputs",
    "model_inputs",
    "train_inputs",
    "user_inputs",
]

#: Names the models use themselves; no feature may take one.
RESERVED_NAMES = frozenset(
    {"user_id", "item_id", "user_idx", "item_idx", "item_logq", HISTORY_INPUT, HISTORY_IDX}
)


def _table_frame(table: Any, key: str, what: str) -> Any:
    """``table`` (frame or mapping of arrays) as a frame with one row per ``key``, newest."""
    import pandas as pd

    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(dict(table))
    if key not in frame.columns:
        raise ValueError(f"the {what} table has no {key!r} column")
    if "event_timestamp" in frame.columns:
        # Several versions of an entity: the newest holds its current attributes.
        frame = frame.sort_values("event_timestamp", kind="stable")
    return frame.drop_duplicates(key, keep="last")


def _fit_side(
    defs: Sequence[FeatureDef], table: Any, key: str, ids: tuple[int, ...], what: str
) -> tuple[EncodedFeature, ...]:
    frame = _table_frame(table, key, what)
    missing = [d.name for d in defs if d.name not in frame.columns]
    if missing:
        raise ValueError(f"the {what} table lacks the feature column(s) {missing}")
    clash = sorted({d.name for d in defs} & RESERVED_NAMES)
    if clash:
        raise ValueError(f"{what} feature name(s) {clash} are reserved by the model")
    # Fitted on the entities the model trains on: one row each, not one per event.
    keep = frame[frame[key].isin(np.asarray(ids, np.int64))]
    return fit_features(defs, {d.name: keep[d.name].to_numpy() for d in defs})


@dataclass(frozen=True, kw_only=True)
class TwoTowerSpec:
    """Everything needed to rebuild the model graph: vocabularies, features, sizes.

    Id vocabularies are sorted and hold only ids seen in training; index 0 is the
    out-of-vocabulary bucket. Features carry their own vocabularies and statistics.
    ``history_length`` > 0 gives the user tower a history encoding: the recency-weighted
    mean of the item embeddings of the user's newest ``history_length`` seen items
    (``HISTORY_IDX``); 0 leaves it out (and spec files written before it read as 0).
    """

    user_ids: tuple[int, ...]
    item_ids: tuple[int, ...]
    user_features: tuple[EncodedFeature, ...] = ()
    item_features: tuple[EncodedFeature, ...] = ()
    embedding_dim: int = 32
    temperature: float = 0.05
    history_length: int = 0

    @classmethod
    def from_tables(
        cls,
        *,
        train: Mapping[str, Any],
        users: Any,
        items: Any,
        user_features: Sequence[FeatureDef],
        item_features: Sequence[FeatureDef],
        embedding_dim: int = 32,
        temperature: float = 0.05,
        history_length: int = 0,
    ) -> TwoTowerSpec:
        """Fit id vocabularies on the train rows, features on the entities' table rows.

        Args:
            train: Arrays ``user_id`` and ``item_id`` of the train rows.
            users: Frame or mapping of arrays: ``user_id`` plus a column per user
                feature (newest row per user kept when ``event_timestamp`` is there).
            items: The same for items (``item_id`` plus item feature columns).
            user_features: The user features, in model input order.
            item_features: The item features.
            embedding_dim: Output size of both towers.
            temperature: Softmax temperature of the in-batch logits.
            history_length: History entries the user tower pools (0: no history).

        Returns:
            The spec.

        Raises:
            ValueError: If a table lacks its key or a feature column, or a feature takes a
                reserved name.
        """
        user_ids = tuple(int(v) for v in sorted_vocab(np.asarray(train["user_id"], np.int64)))
        item_ids = tuple(int(v) for v in sorted_vocab(np.asarray(train["item_id"], np.int64)))
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            user_features=_fit_side(user_features, users, "user_id", user_ids, "users"),
            item_features=_fit_side(item_features, items, "item_id", item_ids, "items"),
            embedding_dim=embedding_dim,
            temperature=temperature,
            history_length=history_length,
        )

    def to_json(self) -> str:
        """Serialise the spec."""
        return json.dumps(
            {
                "user_ids": list(self.user_ids),
                "item_ids": list(self.item_ids),
                "user_features": encoded_to_json(self.user_features),
                "item_features": encoded_to_json(self.item_features),
                "embedding_dim": self.embedding_dim,
                "temperature": self.temperature,
                "history_length": self.history_length,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TwoTowerSpec:
        """Rebuild a spec written by ``to_json``."""
        raw = json.loads(text)
        return cls(
            user_ids=tuple(int(v) for v in raw["user_ids"]),
            item_ids=tuple(int(v) for v in raw["item_ids"]),
            user_features=encoded_from_json(raw.get("user_features", ())),
            item_features=encoded_from_json(raw.get("item_features", ())),
            embedding_dim=int(raw["embedding_dim"]),
            temperature=float(raw["temperature"]),
            history_length=int(raw.get("history_length", 0)),
        )

    def user_index(self, user_id: Any) -> np.ndarray:
        """Dense indices of raw user ids (0 = unknown)."""
        return lookup_index(
            np.asarray(self.user_ids, dtype=np.int64), np.asarray(user_id, np.int64)
        )

    def item_index(self, item_id: Any) -> np.ndarray:
        """Dense indices of raw item ids (0 = unknown)."""
        return lookup_index(
            np.asarray(self.item_ids, dtype=np.int64), np.asarray(item_id, np.int64)
        )


def user_inputs(spec: TwoTowerSpec) -> tuple[str, ...]:
    """The user tower's input names: ``user_idx``, each user feature, then ``HISTORY_IDX``
    when the spec has a history encoding."""
    history = (HISTORY_IDX,) if spec.history_length else ()
    return ("user_idx", *(f.name for f in spec.user_features), *history)


def history_index(spec: TwoTowerSpec, history: Any) -> np.ndarray:
    """The tower's ``HISTORY_IDX`` of raw histories: dense item indices, newest first.

    Args:
        spec: The model spec (its item vocabulary and ``history_length``).
        history: Raw item ids ``[b, L]``, most recent first, ``HISTORY_PAD``-padded.

    Returns:
        ``int64 [b, max(1, min(L, history_length))]``; 0 for padding and for items the
        model does not know (the pooling skips both).
    """
    raw = np.asarray(history, np.int64).reshape(len(history), -1)
    raw = raw[:, : spec.history_length]
    if raw.shape[1] == 0:
        return np.zeros((raw.shape[0], 1), np.int64)
    # HISTORY_PAD is never an item id, so the lookup gives it the unknown index 0.
    return spec.item_index(raw.ravel()).reshape(raw.shape).astype(np.int64)


def item_inputs(spec: TwoTowerSpec) -> tuple[str, ...]:
    """The item tower's input names: ``item_idx`` then each item feature."""
    return ("item_idx", *(f.name for f in spec.item_features))


def train_inputs(spec: TwoTowerSpec) -> tuple[str, ...]:
    """The training model's input names (both towers plus ``item_logq``)."""
    return (*user_inputs(spec), *item_inputs(spec), "item_logq")


def model_inputs(
    spec: TwoTowerSpec, columns: Mapping[str, Any], item_logq: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Turn raw training columns into the training model's named inputs.

    Args:
        spec: The model spec (vocabularies, features).
        columns: Arrays ``user_id``, ``item_id`` and one per user and item feature, of
            equal length (extra columns are ignored); with a history encoding also
            ``HISTORY_INPUT``, each row's raw history ``[n, L]`` before its event.
        item_logq: Log sampling probability of each row's item; zeros (no logQ
            correction) when None.

    Returns:
        Arrays keyed by ``train_inputs(spec)``: dense id indices, raw feature arrays
        (strings with ``""`` for missing, float32 with NaN) and ``item_logq``.

    Raises:
        ValueError: If a feature column is missing.
    """
    missing = [
        name
        for name in ("user_id", "item_id", *(f.name for f in spec.user_features),
                     *(f.name for f in spec.item_features),
        *((HISTORY_INPUT,) if spec.history_length else ()))
        if name not in columns
    ]  # fmt: skip
    if missing:
        raise ValueError(f"the training columns lack {missing}")
    n = len(columns["user_id"])
    logq = np.zeros(n, np.float32) if item_logq is None else np.asarray(item_logq, np.float32)
    history = (
        {HISTORY_IDX: history_index(spec, columns[HISTORY_INPUT])} if spec.history_length else {}
    )
    return {
        "user_idx": spec.user_index(columns["user_id"]),
        **raw_inputs(spec.user_features, columns),
        **history,
        "item_idx": spec.item_index(columns["item_id"]),
        **raw_inputs(spec.item_features, columns),
        "item_logq": logq,
    }


def feature_prefix(side: str) -> str:
    """Layer-name prefix of a tower's feature layers (``user_attr_`` / ``item_attr_``)."""
    return f"{side}_attr_"
