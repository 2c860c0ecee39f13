"""The online recommend path: the user's key -> Feast profile -> retrieval -> ranker -> top k.

``recops recommend`` and the recommend-path benchmark both call :func:`recommend`, so
what is measured is what users run. Each stage can be timed into a dict.

Nothing here knows a dataset's columns. The user's key is taken as the user's data has it
(a string key is translated with ``recops.data.keys``); the profile is every user
attribute the online store holds; each served model's request holds exactly the inputs
its signature declares (read from the model server's metadata); the items come back
with the dataset's own item keys and attributes.

A user the data does not know (or whose profile was never materialized) takes the
cold-start path: the most popular items (positive events in the published
interactions). Items the user has already interacted with (the spec's ``seen_types``)
are never recommended again; when the model's candidates run short of ``k`` after that,
popular unseen items fill the list.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from recops_models.contract import HISTORY_INPUT, HISTORY_PAD, MASKED_SCORE

from recops.config import Settings
from recops.errors import DataError, ParamError, RecommendError

if TYPE_CHECKING:
    import pandas as pd

    from recops.layout import Layout

__all__ = [
    "RRF_K",
    "POLICY_METRICS",
    "RecommendConfig",
    "choose_policy",
    "fill_popular",
    "fuse",
    "fused_scores",
    "history_input",
    "item_table",
    "kept_candidates",
    "popular_items",
    "published_events",
    "recommend",
    "rerank",
    "rerank_policy",
    "seen_by_user",
    "seen_items",
]

T = TypeVar("T")
#: Reciprocal-rank fusion constant (the usual 60): the best of both orders on ml-100k.
RRF_K = 60


#: Where a recommended item came from.
SOURCE_RETRIEVAL = "retrieval"
SOURCE_RERANKED = "reranked"
SOURCE_POPULARITY = "popularity"


@dataclass(frozen=True, kw_only=True)
class RecommendConfig:
    """One request of the recommend path.

    Attributes:
        user_id: The user's key as the dataset has it (a string such as ``c-000196``, or
            an integer; an integer key may come as its text, as a command line gives it).
        k: How many items to return.
        protocol: ``rest`` or ``grpc`` to the model server.
    """

    user_id: int | str
    k: int = 10
    protocol: str = "rest"

    def __post_init__(self) -> None:
        if self.protocol not in ("rest", "grpc"):
            raise ParamError(f"protocol={self.protocol!r}: expected 'rest' or 'grpc'")
        if isinstance(self.k, bool) or self.k < 1:
            raise ParamError(f"k={self.k!r} must be a positive integer")


#: The figures the fused list must match or beat for the ranker to re-order what users see.
POLICY_METRICS = ("recall_at_10", "ndcg_at_10")


def choose_policy(retrieval: Mapping[str, float], fused: Mapping[str, float]) -> str:
    """The order users get: ``fusion`` where the fused list measured at least as well.

    At least as well on every figure of ``POLICY_METRICS``, both from the same holdout:
    a fused list that buys NDCG with Recall (on ml-100k's random cut, 0.3106 against
    0.3080 NDCG@10 for 0.2620 against 0.2684 Recall@10) keeps the retrieval order. The
    nightly's evaluate records the answer (``rerank_policy`` reads it back), and the
    benchmark applies the same rule.

    Args:
        retrieval: The retrieval order's figures, by metric name.
        fused: The fused list's figures, by the same names.
    """
    return "fusion" if all(fused[m] >= retrieval[m] for m in POLICY_METRICS) else "retrieval"


def rerank_policy(settings: Settings, version: int) -> str:
    """``fusion`` when the nightly measured the re-ranked list better, else ``retrieval``.

    The evaluate task compares both orders on the same holdout and records the winner on
    the ranker's registered version (tag ``recops.lineage.rerank_policy``).
    """
    from recops.registry import mlflow_client

    try:
        client = mlflow_client(settings)
        tags = client.get_model_version(settings.ranking_model_name, str(version)).tags
    except Exception:  # no registry at hand: keep the retrieval order, the safe default
        return "retrieval"
    return str(tags.get("recops.lineage.rerank_policy", "retrieval"))


def fused_scores(candidates: list[int], ranker: Mapping[int, float]) -> dict[int, float]:
    """Each candidate's reciprocal-rank fusion score: retrieval order plus ranker order."""
    by_click = sorted(candidates, key=lambda i: -ranker[i])
    click_rank = {item: r for r, item in enumerate(by_click, start=1)}
    return {
        item: 1 / (RRF_K + r) + 1 / (RRF_K + click_rank[item])
        for r, item in enumerate(candidates, start=1)
    }


def fuse(candidates: list[int], ranker: Mapping[int, float]) -> list[int]:
    """Reciprocal-rank fusion of the retrieval order and the ranker's order."""
    fused = fused_scores(candidates, ranker)
    return sorted(candidates, key=lambda i: -fused[i])


def rerank(
    candidates: list[int], ranker: Mapping[int, float] | None, policy: str
) -> tuple[list[int], str, dict[int, float] | None]:
    """The served order of ``candidates``, its source, and the scores that order them.

    ``fusion`` with ranker scores: reciprocal-rank fusion (``reranked``), with the fused
    scores, so a shown list's ``score`` always reads in its order; otherwise the retrieval
    order stays (``retrieval``, and None: the retrieval scores order it).
    """
    if ranker and policy == "fusion":
        fused = fused_scores(candidates, ranker)
        return sorted(candidates, key=lambda i: -fused[i]), SOURCE_RERANKED, fused
    return candidates, SOURCE_RETRIEVAL, None


def kept_candidates(
    item_ids: Iterable[Any],
    scores: Iterable[Any],
    seen: Container[int],
    catalogue: Container[int],
) -> tuple[list[int], dict[int, float]]:
    """The retrieval candidates that may be shown, in order, and every candidate's score.

    An item is dropped when the signature masked it (score <= ``MASKED_SCORE / 2``: seen,
    or padding), when the user has seen it (for a model that takes no history), or when
    the catalogue does not hold it (a padding id, an item no longer published).
    """
    out: list[int] = []
    kept: set[int] = set()  # what ``out`` holds, for an O(1) duplicate check
    retrieval: dict[int, float] = {}
    floor = MASKED_SCORE / 2
    for raw_item, raw_score in zip(item_ids, scores, strict=True):
        item, score = int(raw_item), float(raw_score)
        retrieval.setdefault(item, score)
        if score > floor and item not in seen and item in catalogue and item not in kept:
            out.append(item)
            kept.add(item)
    return out, retrieval


def fill_popular(
    picked: list[_Pick],
    popular: Iterable[tuple[int, float]],
    seen: Container[int],
    catalogue: Container[int],
    k: int,
) -> list[_Pick]:
    """``picked`` topped up to ``k`` with popular items that are unseen, new and shown."""
    out = list(picked)
    chosen = {item for item, *_ in out}
    for item, count in popular:
        if len(out) >= k:
            break
        if item not in seen and item not in chosen and item in catalogue:
            out.append((item, float(count), SOURCE_POPULARITY, None))
            chosen.add(item)
    return out


def history_input(seen: Sequence[int]) -> list[int]:
    """One row of the ``history_item_ids`` input: the seen ids, or one pad for none."""
    return [int(i) for i in seen] or [HISTORY_PAD]


# --------------------------------------------------------------------------- published data


@dataclass(frozen=True)
class _Events:
    """The published interactions' keys and types, read once per set of partition files."""

    stamp: tuple[tuple[str, int, int], ...]
    frame: pd.DataFrame


_CACHE_LOCK = threading.Lock()
#: interactions folder -> its events; items file -> its attribute table.
_EVENTS: dict[str, _Events] = {}
_ITEMS: dict[str, tuple[tuple[int, int], pd.DataFrame]] = {}


def published_events(settings: Settings) -> pd.DataFrame:
    """``user_id, item_id, event_type[, event_timestamp]`` of every published partition.

    Cached until the partition files change.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from recops.data.partitions import list_partitions
    from recops.layout import DEFAULT_EVENT_TYPE

    paths = list_partitions(settings)
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    key = str(settings.interactions_dir)
    with _CACHE_LOCK:
        cached = _EVENTS.get(key)
        if cached is not None and cached.stamp == stamp:
            return cached.frame
    frames = []
    for path in paths:
        try:
            names = set(pq.read_schema(path).names)
            optional = [c for c in ("event_type", "event_timestamp") if c in names]
            columns = ["user_id", "item_id", *optional]
            frame = pq.read_table(path, columns=columns).to_pandas()
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise DataError(f"cannot read interactions partition {path}: {exc}") from exc
        if "event_type" not in frame.columns:
            frame["event_type"] = DEFAULT_EVENT_TYPE
        frames.append(frame)
    events = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({"user_id": [], "item_id": [], "event_type": []})
    )
    events = events.astype({"user_id": "int64", "item_id": "int64"})
    with _CACHE_LOCK:
        _EVENTS[key] = _Events(stamp=stamp, frame=events)
    return events


#: The name the tests (and older callers) know ``published_events`` by.
_events = published_events


def seen_by_user(events: pd.DataFrame, seen_types: Sequence[str]) -> dict[int, list[int]]:
    """User id -> the items seen (a ``seen_types`` event; any type when empty), newest first."""
    rows = events
    if seen_types:
        rows = rows[rows["event_type"].isin(list(seen_types))]
    if "event_timestamp" in rows.columns:
        rows = rows.sort_values("event_timestamp", ascending=False, kind="stable")
    rows = rows.drop_duplicates(["user_id", "item_id"])
    out: dict[int, list[int]] = {}
    for user, item in zip(rows["user_id"].tolist(), rows["item_id"].tolist(), strict=True):
        out.setdefault(int(user), []).append(int(item))
    return out


def seen_items(events: pd.DataFrame, user: int, seen_types: Sequence[str]) -> set[int]:
    """Items ``user`` has an event of a seen type with (any type when ``seen_types`` is empty)."""
    rows = events[events["user_id"].to_numpy() == user]
    if seen_types:
        rows = rows[rows["event_type"].isin(list(seen_types))]
    return {int(i) for i in rows["item_id"].unique()}


def popular_items(events: pd.DataFrame, positive_types: Sequence[str]) -> pd.Series:
    """The cold-start list: items by positive events, then by any events, then by id.

    Args:
        events: ``user_id, item_id, event_type`` rows.
        positive_types: Event types that count as positives (all when empty).

    Returns:
        Positive events per item (the score), in list order, indexed by ``item_id``.
    """
    import pandas as pd

    positive = events["event_type"].isin(list(positive_types)) if positive_types else True
    counts = (
        pd.DataFrame({"item_id": events["item_id"], "positives": positive})
        .groupby("item_id")
        .agg(positives=("positives", "sum"), events=("positives", "size"))
        .reset_index()
        .sort_values(
            ["positives", "events", "item_id"], ascending=[False, False, True], kind="stable"
        )
    )
    return counts.set_index("item_id")["positives"].astype("float64")


def item_table(settings: Settings, layout: Layout) -> pd.DataFrame:
    """The newest attributes of every item, indexed by ``item_id`` (cached until it changes)."""
    import pandas as pd
    import pyarrow.parquet as pq

    path = settings.items_path
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        cached = _ITEMS.get(str(path))
        if cached is not None and cached[0] == stamp:
            return cached[1]
    available = set(pq.read_schema(path).names)
    names = [f.name for f in layout.item_features if f.name in available]
    order = ["event_timestamp"] if "event_timestamp" in available else []
    frame = pd.read_parquet(path, columns=["item_id", *names, *order])
    if order:
        frame = frame.sort_values(["item_id", *order], kind="stable")
    table = frame.drop_duplicates("item_id", keep="last").set_index("item_id")[names]
    with _CACHE_LOCK:
        _ITEMS[str(path)] = (stamp, table)
    return table


def _plain(value: Any) -> Any:
    """A table value as a JSON-able Python value (missing: None)."""
    import pandas as pd

    if hasattr(value, "item"):
        value = value.item()
    if value is None or (not isinstance(value, (list, dict, str)) and pd.isna(value)):
        return None
    return value


# --------------------------------------------------------------------------- keys


def _user_ref(settings: Settings, key: int | str) -> int | None:
    """The int64 id of the user's key, or None when the data does not know it."""
    import pandas as pd

    from recops.data.keys import UNKNOWN_ID, lookup_ids

    ids = lookup_ids(settings, "users", pd.Series([key], dtype=object))
    found = ids.iloc[0]
    return None if pd.isna(found) or int(found) == UNKNOWN_ID else int(found)


def _item_keys(settings: Settings, ids: Sequence[int]) -> list[Any]:
    """The dataset's own keys of item ids (identity for an integer-keyed dataset)."""
    import pandas as pd

    from recops.data.keys import lookup_keys

    keys = lookup_keys(settings, "items", pd.Series(list(ids), dtype="int64"))
    return [_plain(k) for k in keys.tolist()]


# --------------------------------------------------------------------------- requests


def _grpc_inputs(instances: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    from recops.serving.loadtest import _column_array

    return {name: _column_array(np, [row[name] for row in instances]) for name in instances[0]}


def _served_inputs(client: Any, model: str) -> dict[str, str]:
    """Input name -> dtype of the ``stable`` version's default signature, from the server."""
    from recops.serving.requests import metadata_inputs

    return metadata_inputs(client.metadata(model, label="stable"))


#: One recommended item: id, score, source, ranker score (None when not ranked).
_Pick = tuple[int, float, str, float | None]


# --------------------------------------------------------------------------- recommend


def _check_state(settings: Settings) -> None:
    """Refuse with a hint when there is no published data or no served model."""
    from recops.serving.models_config import served_label

    if not settings.items_path.is_file():
        raise RecommendError(
            f"no published data for dataset {settings.dataset!r} in {settings.data_dir}",
            "import it with `recops data import --spec spec.yaml`, or run `make demo`",
        )
    real_serving = bool(settings.tfserving_rest or settings.tfserving_grpc)
    if not real_serving and served_label(settings.models_config_path, settings.model_name) is None:
        raise RecommendError(
            f"no {settings.model_name} version is served "
            f"(no `stable` label in {settings.models_config_path})",
            f"run `recops run --dataset {settings.dataset}` (or `make demo`), or trigger "
            "recsys_promote in the Airflow UI (`make ui`) for a blessed version",
        )


def _check_online_store(settings: Settings) -> None:
    """Refuse with a hint when the embedded online store was never materialized."""
    from recops.features.feast_repo import sqlite_path

    if settings.online_store == "sqlite" and not sqlite_path(settings).exists():
        raise RecommendError(
            f"no online features in {settings.feast_dir}",
            f"run `recops run --dataset {settings.dataset}`: the nightly materializes them",
        )


def recommend(
    config: RecommendConfig,
    settings: Settings | None = None,
    *,
    client: Any = None,
    timings: defaultdict[str, list[float]] | None = None,
) -> list[dict[str, Any]]:
    """Top ``k`` items for a user: online profile, retrieval top-100, then the ranker.

    The ranker's scores reorder the candidates by reciprocal-rank fusion when the nightly
    measured that better (``rerank_policy``); otherwise the retrieval order stays. Items
    the user has seen are dropped; popular unseen items fill a short list. A user the data
    does not know gets the popular items.

    Args:
        config: The request.
        settings: Deployment settings (the dataset's); read from the environment when
            omitted.
        client: A ``ServingClient`` to reuse; one is made from ``settings`` otherwise.
        timings: When given, each stage's milliseconds are appended under its name
            (``user_key``, ``online_profile``, ``signature``, ``retrieval``,
            ``rerank_policy``, ``ranker_inputs``, ``ranker``, ``seen``, ``fuse_titles``).

    Returns:
        Per item: ``rank``, ``item_id`` (the dataset's own key), ``score``, ``source``
        (``retrieval``, ``reranked`` or ``popularity``), ``ranker_score`` when the ranker
        scored it, and the item's attributes by name.

    Raises:
        RecommendError: No data, no served model, no online features (for a known user),
            or a model server that does not answer; its ``hint`` says what to run.
    """
    from recops.features import online_user_features
    from recops.layout import active_layout

    settings = settings or Settings.from_env()

    def timed(stage: str, fn: Callable[[], T]) -> T:
        begin = time.perf_counter()
        out = fn()
        if timings is not None:
            timings[stage].append((time.perf_counter() - begin) * 1000.0)
        return out

    _check_state(settings)
    layout = active_layout(settings)
    user = timed("user_key", lambda: _user_ref(settings, config.user_id))
    profile: dict[str, Any] | None = None
    if user is not None:
        _check_online_store(settings)
        try:
            profile = timed("online_profile", lambda: online_user_features([user], settings)[0])
        except KeyError:  # never materialized: the cold-start path, as for an unknown user
            profile = None
    events = timed("seen", lambda: published_events(settings))
    history = _history(settings, user, events, layout.seen_types) if user is not None else []
    seen = set(history)
    items = item_table(settings, layout)
    catalogue = set(items.index.tolist())
    # An item the catalogue does not hold (a model's padding id, an item no longer
    # published) is skipped: never shown without its key or attributes.
    picked: list[_Pick] = []
    if profile is not None:
        ranked = _model_path(settings, config, profile, history, catalogue, client, timed)
        picked = ranked[: config.k]
    if len(picked) < config.k:
        popular = popular_items(events, layout.positive_types)
        pairs = zip((int(i) for i in popular.index.tolist()), popular.tolist(), strict=True)
        picked = fill_popular(picked, pairs, seen, catalogue, config.k)

    def described() -> list[dict[str, Any]]:
        keys = _item_keys(settings, [item for item, *_ in picked])
        out = []
        known = [(pick, key) for pick, key in zip(picked, keys, strict=True) if key is not None]
        for rank, ((item, score, source, ranker_score), key) in enumerate(known, start=1):
            attributes = {name: _plain(v) for name, v in items.loc[item].items()}
            rec = {**attributes, "rank": rank, "item_id": key, "score": score, "source": source}
            if ranker_score is not None:
                rec["ranker_score"] = ranker_score
            out.append(rec)
        return out

    return timed("fuse_titles", described)


def _history(
    settings: Settings, user: int, events: pd.DataFrame, seen_types: Sequence[str]
) -> list[int]:
    """The user's seen items, newest first: the online history (live events included)
    followed by what the published interactions add."""
    published = seen_by_user(events[events["user_id"] == user], seen_types).get(user, [])
    try:
        from recops.features.history import read_histories, seen_item_ids

        online = list(seen_item_ids(read_histories(settings, [user])[user], seen_types))
    except Exception:  # no history view (yet): the published interactions alone
        return published
    known = set(online)
    return online + [i for i in published if i not in known]


def _model_path(
    settings: Settings,
    config: RecommendConfig,
    profile: dict[str, Any],
    history: list[int],
    catalogue: Container[int],
    client: Any,
    timed: Callable[[str, Callable[[], Any]], Any],
) -> list[_Pick]:
    """Retrieval (and the ranker when one serves) for a user with a profile.

    Returns every candidate that may be shown (unmasked, unseen and in the catalogue),
    in the served order, so the ranker never scores an item that cannot be shown; the
    caller keeps the first ``k``. A signature that takes ``history_item_ids`` gets the
    user's seen items and masks them itself.
    """
    import pandas as pd

    from recops.serving.client import ServingClient
    from recops.serving.models_config import served_label
    from recops.serving.requests import context_frame, row_instances

    own_client = client is None
    client = client or ServingClient.from_settings(settings)
    try:

        def predict(model: str, instances: list[dict[str, Any]]) -> dict[str, Any]:
            if config.protocol == "rest":
                reply = client.predict_rest(model, instances=instances, label="stable")
                return dict(reply["predictions"][0])
            out = client.predict_grpc(model, _grpc_inputs(instances), label="stable")
            return {name: value[0] for name, value in out.items()}

        def with_history(inputs: dict[str, str]) -> dict[str, Any]:
            return {HISTORY_INPUT: [history_input(history)]} if HISTORY_INPUT in inputs else {}

        frame = pd.DataFrame([profile])
        try:
            inputs = timed("signature", lambda: _served_inputs(client, settings.model_name))
        except Exception as exc:
            raise _not_answering(settings, exc) from exc
        request = row_instances(frame, inputs, **with_history(inputs))
        try:
            row = timed("retrieval", lambda: predict(settings.model_name, request))
        except Exception as exc:
            raise _not_answering(settings, exc) from exc
        candidates, retrieval = kept_candidates(
            row["item_ids"], row["scores"], set(history), catalogue
        )
        if not candidates:
            return []
        ranker: dict[int, float] = {}
        policy = "retrieval"
        ranker_version = served_label(settings.models_config_path, settings.ranking_model_name)
        if ranker_version is not None:
            policy = timed("rerank_policy", lambda: rerank_policy(settings, ranker_version))
            rank_in = _served_inputs(client, settings.ranking_model_name)
            request = timed(
                "ranker_inputs",
                lambda: row_instances(
                    context_frame(settings, frame, list(rank_in)),
                    rank_in,
                    item_ids=[candidates],
                    **with_history(rank_in),
                ),
            )
            ranked = timed("ranker", lambda: predict(settings.ranking_model_name, request))
            ranker = {
                item: float(score) for item, score in zip(candidates, ranked["scores"], strict=True)
            }
        order, source, fused = rerank(candidates, ranker, policy)
    finally:
        if own_client:
            client.close()
    shown = fused or retrieval
    return [(item, shown[item], source, ranker.get(item) if ranker else None) for item in order]


def _not_answering(settings: Settings, exc: Exception) -> RecommendError:
    return RecommendError(
        f"the served model did not answer: {exc}",
        f"start serving with `recops serve --detach` (log: {settings.serving_dir / 'server.log'})",
    )
