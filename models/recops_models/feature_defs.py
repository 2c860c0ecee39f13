"""Attribute features as the models see them: what each is, and what it learned from data.

Pure numpy and a leaf, so the pipeline (``recops.layout``) can describe a dataset's features
without importing TensorFlow, and every model encodes them the same way.

- ``FeatureDef``: an attribute's name, kind and (multi-valued) separator, from the spec.
- ``EncodedFeature``: a ``FeatureDef`` plus what training learned: the vocabulary of a
  categorical, the mean and spread of a numeric, the hash buckets of a text.
- ``fit_features``: learn ``EncodedFeature`` s from training columns.
- ``raw_inputs``: the arrays a model (and its serving signature) takes for those features:
  strings for categorical, multi-valued and text features, float32 for numerics.

Missing values are never an error: a missing string is ``""`` (out of vocabulary), a
missing number is NaN (the encoder maps it to 0 and sets a "missing" flag).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeAlias

import numpy as np

__all__ = [
    "FEATURE_KINDS",
    "STRING_KINDS",
    "TEXT_BUCKETS",
    "catalogue_ids",
    "EncodedFeature",
    "FeatureDef",
    "FeatureKind",
    "encoded_from_json",
    "encoded_to_json",
    "fit_features",
    "raw_inputs",
    "split_values",
]

FeatureKind: TypeAlias = Literal["categorical", "multi_categorical", "numeric", "text", "timestamp"]
FEATURE_KINDS: tuple[str, ...] = (
    "categorical",
    "multi_categorical",
    "numeric",
    "text",
    "timestamp",
)
#: Kinds whose model input is a string tensor; the others are float32.
STRING_KINDS: frozenset[str] = frozenset({"categorical", "multi_categorical", "text"})
#: Hash buckets of a text feature's bag of words.
TEXT_BUCKETS = 4096
#: Most distinct values a categorical vocabulary keeps (the most frequent); the rest are
#: out of vocabulary, so a near-unique column cannot blow up the embedding table.
MAX_VOCAB = 50_000


@dataclass(frozen=True)
class FeatureDef:
    """One attribute as the spec declares it.

    Attributes:
        name: The feature name (the published column and the model input).
        kind: ``categorical``, ``multi_categorical``, ``numeric``, ``text`` or
            ``timestamp`` (published as float64 days since the epoch; a numeric to models).
        separator: Between the values of a ``multi_categorical``; None otherwise.
    """

    name: str
    kind: FeatureKind
    separator: str | None = None

    @property
    def is_string(self) -> bool:
        """Whether the model input is a string tensor (else float32)."""
        return self.kind in STRING_KINDS


@dataclass(frozen=True)
class EncodedFeature:
    """A feature plus what training learned about it.

    Attributes:
        name: As ``FeatureDef.name``.
        kind: As ``FeatureDef.kind``.
        separator: As ``FeatureDef.separator``.
        vocab: Sorted vocabulary of a categorical or multi-valued categorical (index 0 is
            out of vocabulary, so value ``vocab[i]`` has index ``i + 1``); empty otherwise.
        mean: Mean of a numeric over its present values (0 otherwise).
        std: Standard deviation of a numeric (1 when constant or not numeric).
        buckets: Hash buckets of a text (0 otherwise).
    """

    name: str
    kind: FeatureKind
    separator: str | None = None
    vocab: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0
    buckets: int = 0

    @property
    def is_string(self) -> bool:
        """Whether the model input is a string tensor (else float32)."""
        return self.kind in STRING_KINDS


def _strings(values: Any) -> np.ndarray:
    """Strings of ``values``, with None / NaN as ``""`` (vectorised: training sets are big)."""
    import pandas as pd

    series = pd.Series(np.asarray(values, dtype=object).ravel(), dtype=object)
    out: np.ndarray = series.where(series.notna(), "").astype(str).to_numpy()
    return out.reshape(np.shape(values)).astype(str)


def split_values(values: Any, separator: str) -> list[list[str]]:
    """The values of each multi-valued cell, stripped, without empties."""
    return [
        [part.strip() for part in cell.split(separator) if part.strip()]
        for cell in _strings(values)
    ]


def _vocab(tokens: Sequence[str]) -> tuple[str, ...]:
    values, counts = np.unique(np.asarray(tokens, dtype=str), return_counts=True)
    keep = values[counts > 0]
    if keep.size > MAX_VOCAB:
        # The most frequent values; ties by value, so the choice is deterministic.
        order = np.lexsort((values, -counts))[:MAX_VOCAB]
        keep = values[order]
    return tuple(sorted(str(v) for v in keep if str(v)))


def fit_features(
    defs: Sequence[FeatureDef], columns: Mapping[str, Any]
) -> tuple[EncodedFeature, ...]:
    """Learn each feature's vocabulary or statistics from training columns.

    Args:
        defs: The features, in model input order.
        columns: Training values by feature name (arrays or pandas Series).

    Returns:
        One ``EncodedFeature`` per def, in the same order.

    Raises:
        KeyError: If a feature's column is missing from ``columns``.
    """
    out = []
    for d in defs:
        values = columns[d.name]
        if d.kind == "categorical":
            out.append(EncodedFeature(d.name, d.kind, vocab=_vocab(list(_strings(values)))))
        elif d.kind == "multi_categorical":
            tokens = [t for cell in split_values(values, d.separator or "|") for t in cell]
            out.append(EncodedFeature(d.name, d.kind, d.separator, vocab=_vocab(tokens)))
        elif d.kind == "text":
            out.append(EncodedFeature(d.name, d.kind, buckets=TEXT_BUCKETS))
        else:
            numbers = np.asarray(values, dtype=np.float64)
            present = numbers[~np.isnan(numbers)]
            mean = float(present.mean()) if present.size else 0.0
            std = float(present.std()) if present.size and present.std() > 0 else 1.0
            out.append(EncodedFeature(d.name, d.kind, mean=mean, std=std))
    return tuple(out)


def raw_inputs(
    features: Sequence[FeatureDef | EncodedFeature], columns: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """The model inputs of ``features``: strings (missing ``""``) or float32 (missing NaN).

    Args:
        features: The features (defs or encoded).
        columns: Values by feature name (arrays or pandas Series).

    Returns:
        One array per feature name.
    """
    out: dict[str, np.ndarray] = {}
    for f in features:
        values = columns[f.name]
        if f.kind in STRING_KINDS:
            out[f.name] = _strings(values)
        else:
            out[f.name] = np.asarray(values, dtype=np.float64).astype(np.float32)
    return out


def encoded_to_json(features: Sequence[EncodedFeature]) -> list[dict[str, Any]]:
    """JSON-ready form of ``features`` (the model spec files store it)."""
    return [asdict(f) for f in features]


def encoded_from_json(items: Sequence[Mapping[str, Any]]) -> tuple[EncodedFeature, ...]:
    """Inverse of ``encoded_to_json``."""
    return tuple(
        EncodedFeature(**{**dict(item), "vocab": tuple(item.get("vocab", ()))}) for item in items
    )


def catalogue_ids(items: Mapping[str, Any], purpose: str) -> np.ndarray:
    """The catalogue's ``item_id`` s as int64, checked: not empty, no duplicates.

    Args:
        items: The catalogue's columns (``item_id`` at least).
        purpose: What the catalogue is for (``retrieve``, ``rank``), for the message.

    Raises:
        ValueError: If the catalogue is empty or repeats an id.
    """
    item_ids = np.asarray(items["item_id"], dtype=np.int64)
    if item_ids.size == 0:
        raise ValueError(f"items catalogue is empty; nothing to {purpose}")
    if np.unique(item_ids).size != item_ids.size:
        raise ValueError("items catalogue has duplicate item_id values")
    return item_ids
