"""One recommendation, as the service computes it: key -> Feast -> retrieval -> ranker.

Per request, and nothing else: the user's key to its id (cached key table), one Feast
online read of the user's profile, the ranker's context features and the history, one
gRPC call to retrieval (label ``stable``, or ``canary`` for a canary request) with
``history_item_ids``, one to the ranker on the same candidates when one serves, then the
items' cached attributes. No pandas, no registry, no file reads: the cached
``ServedState`` holds everything else.

The order logic (masked scores, the seen filter, fusion, the popular fill) is
``recops.serving.recommend``'s, shared with the in-process ``recops recommend`` path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from recops_models.contract import HISTORY_INPUT

from recops.errors import UnavailableError
from recops.service.metrics import STAGES, VARIANTS
from recops.service.state import HISTORY_FIELDS, HISTORY_VIEW, versions_of
from recops.serving.recommend import (
    fill_popular,
    history_input,
    kept_candidates,
    rerank,
)

if TYPE_CHECKING:
    from recops.service.metrics import ServiceMetrics
    from recops.service.state import ServedModel, ServedState, StateCache

__all__ = ["OnlineUser", "Recommender", "model_inputs"]

T = TypeVar("T")
_Pick = tuple[int, float, str, float | None]


@dataclass(frozen=True)
class OnlineUser:
    """What the online store holds for one user.

    Attributes:
        profile: Attribute name -> value (None where missing); None when the store has
            no profile row for the user.
        context: The ranker's context features (0.0 where the store holds nothing).
        seen: Seen item ids (the spec's seen types), most recent first, deduplicated.
    """

    profile: dict[str, Any] | None
    context: dict[str, float]
    seen: list[int]


def _value(value: Any, dtype: str) -> Any:
    """A feature value as the input's dtype wants it (missing: ``""``, NaN or 0)."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if dtype == "string":
        return "" if missing else str(value)
    if dtype.startswith("float"):
        return math.nan if missing else float(value)
    if dtype == "bool":
        return False if missing else bool(value)
    return 0 if missing else int(value)


_NUMPY = {"string": object, "float32": np.float32, "float64": np.float64, "bool": np.bool_}


def model_inputs(
    model: ServedModel,
    user_id: int,
    features: dict[str, Any],
    seen: Sequence[int],
    item_ids: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """The gRPC inputs of one user's request: exactly what ``model``'s signature takes.

    Args:
        model: The served model (its inputs' names and dtypes).
        user_id: The user's int64 id (one the model may not know).
        features: User attributes and context features by input name; a missing one
            travels as missing (``""``, NaN or 0).
        seen: The user's seen item ids, most recent first (``history_item_ids``).
        item_ids: The candidates, for a ranker.
    """
    out: dict[str, np.ndarray] = {}
    for name, dtype in model.inputs.items():
        if name == "user_id":
            out[name] = np.array([user_id], dtype=np.int64)
        elif name == HISTORY_INPUT:
            out[name] = np.array([history_input(seen)], dtype=np.int64)
        elif name == "item_ids":
            out[name] = np.array([list(item_ids or [])], dtype=np.int64)
        else:
            value = _value(features.get(name), dtype)
            if dtype == "string":
                out[name] = np.array([value.encode("utf-8")], dtype=object)
            else:
                out[name] = np.array([value], dtype=_NUMPY.get(dtype, np.int64))
    return out


class Recommender:
    """The per-request path, over a ``StateCache`` and its model-server client.

    Args:
        cache: The cached served state (and its ``ServingClient``).
        metrics: Where each stage's latency and the returned items' scores go.
        timeout_s: The deadline of each model-server call.
    """

    def __init__(
        self, cache: StateCache, metrics: ServiceMetrics, *, timeout_s: float = 2.0
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.timeout_s = timeout_s
        # The labelled series a request observes, looked up once: ``labels()`` takes a
        # lock and builds a key on every call, twenty-odd times a request otherwise.
        self._stages = {
            (name, variant): metrics.stage_latency.labels(stage=name, variant=variant)
            for name in STAGES
            for variant in VARIANTS
        }
        self._scores: dict[tuple[str, str], Any] = {}

    def _timed(self, stage: str, fn: Callable[[], T], variant: str) -> T:
        begin = time.perf_counter()
        try:
            return fn()
        finally:
            self._stages[stage, variant].observe(time.perf_counter() - begin)

    def _score_series(self, source: str, variant: str) -> Any:
        series = self._scores.get((source, variant))
        if series is None:
            labelled = self.metrics.scores.labels(source=source, variant=variant)
            series = self._scores[source, variant] = labelled
        return series

    # -- the online store ---------------------------------------------------------
    def online_user(self, state: ServedState, user: int, variant: str = "stable") -> OnlineUser:
        """The user's profile, context features and history from the online store.

        One ``online_read`` of the provider per view (a single indexed SELECT each on
        SQLite, one HGETALL on Redis) on the views the state looked up once: no registry
        lookup, no response conversion, no lifecycle gate (a view in the MATERIALIZING
        state still answers, feast#6780). ``get_online_features`` cost milliseconds here.
        """
        if state.store is None or not state.views:
            return OnlineUser(None, {}, list(state.published_seen.get(user, [])))
        rows = self._timed("features", lambda: _online_rows(state, user), variant)
        profile_names = [r.split(":", 1)[1] for r in state.profile_refs]
        profile_row = rows.get("user_profile")
        profile = (
            {n: _python(profile_row.get(n)) for n in profile_names}
            if profile_names and profile_row
            else None
        )
        activity = rows.get("user_activity") or {}
        context = {}
        for ref in state.context_refs:
            name = ref.split(":", 1)[1]
            context[name] = float(_python(activity.get(name)) or 0.0)
        if state.history_online:
            seen = self._timed(
                "history", lambda: _seen(state, rows.get(HISTORY_VIEW) or {}), variant
            )
        else:
            seen = list(state.published_seen.get(user, []))
        return OnlineUser(profile, context, seen)

    # -- one recommendation -------------------------------------------------------
    def recommend(self, key: int | str, k: int, variant: str = "stable") -> dict[str, Any]:
        """``{"user_id", "items", "model_versions", "variant"}`` for the user's key.

        Args:
            key: The user's key in the dataset.
            k: How many items.
            variant: ``stable``, or ``canary`` for the versions a roll-out is validating
                (``state.variant``); ``model_versions`` says which answered.

        Raises:
            UnavailableError: No state loaded, or the model server did not answer.
        """
        state = self.cache.current()
        models = state.variant(variant)
        user = self._timed("key", lambda: self.cache.user_id(key), variant)
        online = self.online_user(state, user, variant) if user is not None else None
        seen = set(online.seen) if online else set()
        picked: list[_Pick] = []
        # A user with a profile or a history gets the model; one with neither, popularity.
        if online is not None and models[0] is not None and (online.profile or online.seen):
            picked = self._model_path(state, models, user or 0, online, seen, k, variant)[:k]
        if len(picked) < k:
            popular = ((i, state.popularity.get(i, 0.0)) for i in state.popular)
            picked = fill_popular(picked, popular, seen, state.items, k)
        items = self._timed("attributes", lambda: self._described(state, picked), variant)
        for item in items:
            self._score_series(item["source"], variant).observe(item["score"])
        popularity = self.metrics.candidate_popularity
        for item_id, *_ in picked:
            popularity.observe(state.popularity.get(item_id, 0.0))
        versions = versions_of(models[0], models[1])
        return {"user_id": key, "items": items, "model_versions": versions, "variant": variant}

    def _model_path(
        self,
        state: ServedState,
        models: tuple[ServedModel | None, ServedModel | None, str],
        user: int,
        online: OnlineUser,
        seen: set[int],
        k: int,
        variant: str,
    ) -> list[_Pick]:
        """Retrieval, then the ranker, for a user with a profile or a history.

        Under the ``fusion`` policy the ranker scores every kept candidate (its order
        feeds the fusion); under ``retrieval`` its scores reorder nothing and are only
        reported, so it scores the ``k`` items shown: the same candidates, first ``k``
        of them, at a fraction of the cost (the ranker is linear in its candidates).
        """
        from recops.errors import ServingError

        retrieval, ranking, policy = models
        assert retrieval is not None
        features = {**(online.profile or {}), **online.context}
        client = self.cache.client
        try:
            out = self._timed(
                "retrieval",
                lambda: client.predict_grpc(
                    retrieval.name,
                    model_inputs(retrieval, user, features, online.seen),
                    label=retrieval.label,
                    timeout_s=self.timeout_s,
                ),
                variant,
            )
        except ServingError as exc:
            self.metrics.errors.labels(kind="retrieval").inc()
            raise UnavailableError(f"retrieval {retrieval.name} did not answer: {exc}") from exc
        candidates, scores = kept_candidates(
            out["item_ids"][0].tolist(), out["scores"][0].tolist(), seen, state.items
        )
        if not candidates:
            return []
        ranker: dict[int, float] = {}
        if ranking is not None:
            scored = candidates if policy == "fusion" else candidates[:k]
            try:
                ranked = self._timed(
                    "ranking",
                    lambda: client.predict_grpc(
                        ranking.name,
                        model_inputs(ranking, user, features, online.seen, scored),
                        label=ranking.label,
                        timeout_s=self.timeout_s,
                    ),
                    variant,
                )
                ranker = dict(
                    zip(scored, (float(s) for s in ranked["scores"][0].tolist()), strict=True)
                )
            except ServingError:
                # The retrieval order is a good answer on its own: degrade, and count it.
                self.metrics.errors.labels(kind="ranking").inc()
        order, source, fused = rerank(candidates, ranker, policy)
        shown = fused or scores
        return [(i, shown[i], source, ranker.get(i) if ranker else None) for i in order]

    @staticmethod
    def _described(state: ServedState, picked: list[_Pick]) -> list[dict[str, Any]]:
        out = []
        for item, score, source, ranker_score in picked:
            rec = {
                **state.items[item],
                "item_id": state.item_keys[item],
                "score": score,
                "source": source,
            }
            if ranker_score is not None:
                rec["ranker_score"] = ranker_score
            out.append(rec)
        return out


def _online_rows(state: ServedState, user: int) -> dict[str, dict[str, Any]]:
    """View name -> the user's stored values (feature name -> ``ValueProto``); {} if none."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    store = state.store
    provider = store._get_provider()
    key = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=int(user))])
    out: dict[str, dict[str, Any]] = {}
    for name, view in state.views.items():
        rows = provider.online_read(config=store.config, table=view, entity_keys=[key])
        out[name] = (rows[0][1] if rows else None) or {}
    return out


def _python(value: Any) -> Any:
    """A stored ``ValueProto`` as a Python value (None when missing or unset)."""
    if value is None or value.WhichOneof("val") is None:
        return None
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value)


def _seen(state: ServedState, row: dict[str, Any]) -> list[int]:
    """The seen ids of the user's online history row (``seen_item_ids``: seen types, dedup)."""
    from recops.features.history import UserHistory, seen_item_ids

    items, stamps, types = (row.get(f) for f in HISTORY_FIELDS)
    history = UserHistory(
        item_ids=tuple(items.int64_list_val.val) if items is not None else (),
        timestamps_us=tuple(stamps.int64_list_val.val) if stamps is not None else (),
        event_types=tuple(types.string_list_val.val) if types is not None else (),
    )
    return list(seen_item_ids(history, state.layout.seen_types))
