"""The served state the recommendation service caches: never read per request.

Everything a request needs besides the user's own online rows is loaded here once and
kept until its source changes: the ``stable`` versions in models.config, each served
signature's inputs (model server metadata), the ranker's re-rank policy (MLflow), the
item table (attributes as ready-made dicts), the popularity list, the key tables and a
``FeatureStore``. ``StateCache.refresh`` compares cheap stamps (file mtimes and sizes)
and rebuilds only when one moved; the app calls it every few seconds in the background,
so a promotion that moves ``stable`` is picked up without a request ever touching the
registry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops_models.contract import HISTORY_INPUT

from recops.config import Settings
from recops.errors import UnavailableError
from recops.features.history import HISTORY_COLUMNS, HISTORY_VIEW

if TYPE_CHECKING:
    from recops.layout import Layout
    from recops.serving.client import ServingClient

__all__ = [
    "HISTORY_FIELDS",
    "HISTORY_VIEW",
    "PARTITIONS_CHECK_S",
    "ServedState",
    "StateCache",
    "stamp_of",
    "versions_of",
]

log = logging.getLogger("recops.service")

#: The online history view's fields, most recent first (``recops.features.history``).
HISTORY_FIELDS = HISTORY_COLUMNS
#: How often the published partitions are stated for a change (seconds): they move
#: with a nightly, and the registry and models.config are checked every refresh.
PARTITIONS_CHECK_S = 30.0
#: Inputs of a served signature that are not user attributes or context features.
_NOT_FEATURES = frozenset({"user_id", "item_ids", HISTORY_INPUT})


def stamp_of(path: Path) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of ``path``, or None when it is missing."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True)
class ServedModel:
    """One served model: the label asked for, its version and its signature's inputs."""

    name: str
    version: int
    inputs: Mapping[str, str]
    label: str = "stable"

    @property
    def takes_history(self) -> bool:
        return HISTORY_INPUT in self.inputs


@dataclass
class ServedState:
    """What every request reads, loaded together (replaced whole, never mutated in place).

    Attributes:
        layout: The dataset's layout (event semantics, attribute names).
        retrieval: The served retrieval model, or None when nothing serves.
        ranking: The served ranker, or None.
        rerank_policy: ``fusion`` or ``retrieval`` (the ranker's registered tag).
        items: Item id -> the item's attributes, JSON-ready.
        item_keys: Item id -> the dataset's own item key.
        popular: Item ids by popularity (positive events), most popular first.
        popularity: Item id -> its positive events (the candidates' popularity metric).
        profile_refs: Feast refs of the user attributes (``user_profile:<name>``).
        context_refs: Feast refs of the ranker's context features (``user_activity:<name>``).
        history_online: Whether the online store has the history view.
        published_seen: User id -> seen item ids from the published interactions, most
            recent first; the fallback when the history view is not online.
        store: The ``FeatureStore`` requests read from.
        views: View name -> its ``FeatureView``, for the views a request reads
            (``user_profile``, ``user_activity``, ``user_history``), looked up once here
            so a request reads the online store through the provider's ``online_read``
            with no registry lookup (and no lifecycle gate, feast#6780).
        loaded_at: When this state was built (``time.time()``).
        canary_retrieval: The retrieval version behind the ``canary`` label while a
            roll-out validates it, else None.
        canary_ranking: The ranker behind ``canary``, else None.
        canary_policy: The canary ranker's re-rank policy.
    """

    layout: Layout
    retrieval: ServedModel | None
    ranking: ServedModel | None
    rerank_policy: str
    items: dict[int, dict[str, Any]]
    item_keys: dict[int, Any]
    popular: list[int]
    popularity: dict[int, float]
    profile_refs: list[str]
    context_refs: list[str]
    history_online: bool
    published_seen: dict[int, list[int]]
    store: Any
    views: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    canary_retrieval: ServedModel | None = None
    canary_ranking: ServedModel | None = None
    canary_policy: str = "retrieval"

    def variant(self, name: str) -> tuple[ServedModel | None, ServedModel | None, str]:
        """``(retrieval, ranking, rerank policy)`` a request of variant ``name`` uses.

        ``canary`` swaps in each model that has a canary and keeps ``stable`` for the
        other, so a ranker's canary is scored on the candidates stable retrieval gives.
        """
        if name != "canary" or (self.canary_retrieval is None and self.canary_ranking is None):
            return self.retrieval, self.ranking, self.rerank_policy
        if self.canary_ranking is not None:
            return self.canary_retrieval or self.retrieval, self.canary_ranking, self.canary_policy
        return self.canary_retrieval, self.ranking, self.rerank_policy

    @property
    def versions(self) -> dict[str, int | None]:
        """``{"retrieval": N, "ranking": M | None}``, as the API reports them."""
        return versions_of(self.retrieval, self.ranking)


def versions_of(
    retrieval: ServedModel | None, ranking: ServedModel | None
) -> dict[str, int | None]:
    """The ``model_versions`` of a response answered by these two models."""
    return {
        "retrieval": retrieval.version if retrieval else None,
        "ranking": ranking.version if ranking else None,
    }


class _Keys:
    """The user key table, reloaded on a miss when its file changed (events intern keys)."""

    def __init__(self, settings: Settings, key_type: str) -> None:
        self.settings = settings
        self.key_type = key_type
        self._ids: dict[str, int] = {}
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        if key_type != "integer":
            self._reload()

    def _reload(self) -> None:
        from recops.data.keys import key_table_path, read_key_table

        path = key_table_path(self.settings, "users")
        stamp = stamp_of(path)
        if stamp == self._stamp and self._ids:
            return
        table = read_key_table(self.settings, "users")
        self._ids = {
            str(k): int(i) for k, i in zip(table["key"].tolist(), table["id"].tolist(), strict=True)
        }
        self._stamp = stamp

    def user_id(self, key: int | str) -> int | None:
        """The int64 id of a user's key, or None when the data does not know it."""
        if self.key_type == "integer":
            try:
                number = float(key)
            except (TypeError, ValueError):
                return None
            return int(number) if number == int(number) and number >= 0 else None
        found = self._ids.get(str(key))
        if found is None:
            with self._lock:
                self._reload()
                found = self._ids.get(str(key))
        return found


class StateCache:
    """Holds the current ``ServedState`` and rebuilds it when a source's stamp moves.

    Args:
        settings: The dataset's settings.
        client: The model-server client the service uses (its metadata answers the
            signatures); shared with the request path so one gRPC channel serves both.
    """

    def __init__(self, settings: Settings, client: ServingClient) -> None:
        self.settings = settings
        self.client = client
        self._state: ServedState | None = None
        self._stamps: tuple[Any, ...] | None = None
        self._keys: _Keys | None = None
        self._lock = threading.Lock()
        self._partitions: tuple[Any, ...] | None = None
        self._partitions_at = 0.0
        self.last_error: str | None = None

    # -- reading ------------------------------------------------------------------
    def current(self) -> ServedState:
        """The loaded state.

        Raises:
            UnavailableError: Nothing loaded yet (``last_error`` says why).
        """
        state = self._state
        if state is None:
            raise UnavailableError(f"service state not loaded: {self.last_error or 'starting'}")
        return state

    @property
    def loaded(self) -> bool:
        return self._state is not None

    def user_id(self, key: int | str) -> int | None:
        """The id of a user's key (None when unknown), from the cached key table."""
        if self._keys is None:
            raise UnavailableError("service state not loaded")
        return self._keys.user_id(key)

    # -- refreshing ---------------------------------------------------------------
    def _sources(self, *, force: bool = False) -> tuple[Any, ...]:
        from recops.data.keys import key_table_path
        from recops.features.feast_repo import registry_path
        from recops.layout import spec_path

        s = self.settings
        return (
            stamp_of(s.models_config_path),
            stamp_of(s.items_path),
            stamp_of(spec_path(s)),
            stamp_of(key_table_path(s, "items")),
            stamp_of(registry_path(s)),
            self._partition_stamps(force=force),
        )

    def _partition_stamps(self, *, force: bool = False) -> tuple[Any, ...]:
        """The published partitions' stamps, re-read at most every ``PARTITIONS_CHECK_S``.

        They only feed popularity (and the seen items without an online history), which
        move with a nightly; stating a few hundred files every refresh held the GIL for
        milliseconds beside requests (ml-100k: 213 partitions, 2 ms on 2 vCPUs).
        """
        from recops.data.partitions import list_partitions

        now = time.monotonic()
        if force or self._partitions is None or now - self._partitions_at >= PARTITIONS_CHECK_S:
            self._partitions = tuple((str(p), stamp_of(p)) for p in list_partitions(self.settings))
            self._partitions_at = now
        return self._partitions

    def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the state when a source changed (or ``force``); True when rebuilt.

        A failed rebuild keeps the previous state serving and records ``last_error``.
        """
        with self._lock:
            try:
                stamps = self._sources(force=force)
                if not force and self._state is not None and stamps == self._stamps:
                    return False
                state = self._build()
            except Exception as exc:  # keep serving the last good state; /healthz says why
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("service state refresh failed: %s", self.last_error)
                return False
            self._state, self._stamps, self.last_error = state, stamps, None
            log.info("service state loaded: %s", state.versions)
            return True

    def _build(self) -> ServedState:
        from recops.data.keys import key_type_of
        from recops.layout import active_layout

        s = self.settings
        if not s.items_path.is_file():
            raise UnavailableError(f"no published data for dataset {s.dataset!r} in {s.data_dir}")
        layout = active_layout(s)
        retrieval = self._served(s.model_name)
        # A first roll-out has a canary and no stable yet: canary requests still get it.
        canary_retrieval = self._canary(s.model_name)
        if retrieval is not None or canary_retrieval is not None:
            from recops_models.tf_env import tensorflow

            # The gRPC path converts tensors with TensorFlow: import it here, not in the
            # first request (seconds).
            tensorflow()
        ranking = self._served(s.ranking_model_name) if retrieval is not None else None
        policy = _policy(s, ranking)
        canary_ranking = (
            self._canary(s.ranking_model_name)
            if retrieval is not None or canary_retrieval is not None
            else None
        )
        items, item_keys = _item_table(s, layout)
        popular, popularity, seen = _published_events(s, layout)
        store, history_online = _open_store(s)
        profile_names = [f.name for f in layout.user_features]
        # Both rankers' context features: a canary request reads what its ranker takes.
        rankers = [m.inputs for m in (ranking, canary_ranking) if m is not None]
        context = [
            n
            for n in dict.fromkeys(n for inputs in rankers for n in inputs)
            if n not in _NOT_FEATURES and n not in profile_names
        ]
        profile_refs = [f"user_profile:{n}" for n in profile_names]
        context_refs = [f"user_activity:{n}" for n in context]
        views = _online_views(
            store, [*profile_refs, *context_refs, *([HISTORY_VIEW] if history_online else [])]
        )
        self._keys = _Keys(s, key_type_of(s, "users"))
        return ServedState(
            layout=layout,
            retrieval=retrieval,
            ranking=ranking,
            rerank_policy=policy,
            items=items,
            item_keys=item_keys,
            popular=popular,
            popularity=popularity,
            profile_refs=profile_refs,
            context_refs=context_refs,
            history_online=history_online,
            published_seen={} if history_online else seen,
            store=store,
            views=views,
            canary_retrieval=canary_retrieval,
            canary_ranking=canary_ranking,
            canary_policy=_policy(s, canary_ranking),
        )

    def _served(self, model: str) -> ServedModel | None:
        from recops.serving.client import external_server
        from recops.serving.models_config import served_label
        from recops.serving.requests import metadata_inputs

        version = served_label(self.settings.models_config_path, model)
        if version is None:
            if not external_server(self.settings):
                return None
            # A real TF Serving may be configured elsewhere: ask it for the label.
            try:
                meta = self.client.metadata(model, label="stable")
            except Exception:
                return None
            version = int((meta.get("model_spec") or {}).get("version") or 0)
            return ServedModel(model, version, metadata_inputs(meta))
        meta = self.client.metadata(model, label="stable")
        return ServedModel(model, version, metadata_inputs(meta))

    def _canary(self, model: str) -> ServedModel | None:
        """The version behind ``canary`` in models.config, or None (none, or no answer).

        A canary the model server cannot describe is left out, never fatal: stable keeps
        serving, and the roll-out waiting for the service to answer with the canary
        rejects it.
        """
        from recops.serving.models_config import served_label
        from recops.serving.requests import metadata_inputs
        from recops.serving.rollout_config import CANARY_LABEL

        version = served_label(self.settings.models_config_path, model, CANARY_LABEL)
        if version is None:
            return None
        try:
            meta = self.client.metadata(model, label=CANARY_LABEL)
        except Exception as exc:  # noqa: BLE001 (any failure: no canary variant)
            log.warning("canary %s v%s not described by the model server: %s", model, version, exc)
            return None
        return ServedModel(model, int(version), metadata_inputs(meta), CANARY_LABEL)


def _policy(settings: Settings, ranking: ServedModel | None) -> str:
    """The ranker's re-rank policy (``retrieval`` without a ranker)."""
    if ranking is None:
        return "retrieval"
    from recops.serving.recommend import rerank_policy

    return rerank_policy(settings, ranking.version)


def _plain(value: Any) -> Any:
    """A table value as a JSON-able Python value (missing: None)."""
    import math

    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _item_table(
    settings: Settings, layout: Layout
) -> tuple[dict[int, dict[str, Any]], dict[int, Any]]:
    """Per item id: its newest attributes as a dict, and its own key."""
    from recops.data.keys import key_type_of, read_key_table
    from recops.serving.recommend import item_table

    table = item_table(settings, layout)
    names = list(table.columns)
    columns = {n: [_plain(v) for v in table[n].tolist()] for n in names}
    ids = [int(i) for i in table.index.tolist()]
    items = {i: {n: columns[n][row] for n in names} for row, i in enumerate(ids)}
    if key_type_of(settings, "items") == "integer":
        keys: dict[int, Any] = {i: i for i in ids}
    else:
        keys_table = read_key_table(settings, "items")
        keys = dict(
            zip(keys_table["id"].astype(int).tolist(), keys_table["key"].tolist(), strict=True)
        )
    # An item without a key cannot be shown: leave it out of both.
    items = {i: attrs for i, attrs in items.items() if i in keys}
    return items, keys


def _published_events(
    settings: Settings, layout: Layout
) -> tuple[list[int], dict[int, float], dict[int, list[int]]]:
    """Popularity order and counts, and each user's seen items (most recent first)."""
    from recops.serving.recommend import popular_items, published_events, seen_by_user

    events = published_events(settings)
    popular = popular_items(events, layout.positive_types)
    ids = [int(i) for i in popular.index.tolist()]
    counts = dict(zip(ids, (float(c) for c in popular.tolist()), strict=True))
    return ids, counts, seen_by_user(events, layout.seen_types)


def _online_views(store: Any, refs: list[str]) -> dict[str, Any]:
    """View name -> ``FeatureView`` of every view ``refs`` (``view:feature`` or ``view``) name.

    Raises:
        UnavailableError: A view the served models need is not registered.
    """
    if store is None:
        return {}
    views: dict[str, Any] = {}
    for ref in refs:
        name = ref.split(":", 1)[0]
        if name in views:
            continue
        try:
            views[name] = store.registry.get_feature_view(name, store.project, allow_cache=True)
        except Exception as exc:
            raise UnavailableError(
                f"feature view {name!r} is not in the Feast registry of {store.repo_path}: {exc}"
            ) from exc
    return views


def _open_store(settings: Settings) -> tuple[Any, bool]:
    """A ``FeatureStore`` (None without an online store) and whether it has the history view."""
    from recops.features.feast_repo import open_store, recops_home_env, sqlite_path

    if settings.online_store == "sqlite" and not sqlite_path(settings).exists():
        return None, False
    store = open_store(settings)
    try:
        with recops_home_env(settings):
            store.get_feature_view(HISTORY_VIEW)
    except Exception:  # not registered (yet): seen items come from the published data
        return store, False
    return store, True
