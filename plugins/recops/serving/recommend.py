"""The online recommend path: Feast online features -> retrieval -> ranker -> top k.

``recops recommend`` and the recommend-path benchmark both call :func:`recommend`, so
what is measured is what users run. Each stage can be timed into a dict.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from recops.config import RANKER_USER_FEATURES, Settings
from recops.errors import ParamError, RecommendError

T = TypeVar("T")
#: Reciprocal-rank fusion constant (the usual 60): the best of both orders on ml-100k.
RRF_K = 60


@dataclass(frozen=True, kw_only=True)
class RecommendConfig:
    """One request of the recommend path.

    Attributes:
        user_id: The user.
        k: How many items to return.
        protocol: ``rest`` or ``grpc`` to the model server.
    """

    user_id: int
    k: int = 10
    protocol: str = "rest"


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


def _grpc_inputs(instances: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    from recops.serving.loadtest import _column_array

    return {name: _column_array(np, [row[name] for row in instances]) for name in instances[0]}


def fuse(candidates: list[int], ranker: dict[int, float]) -> list[int]:
    """Reciprocal-rank fusion of the retrieval order and the ranker's order."""
    by_click = sorted(candidates, key=lambda i: -ranker[i])
    click_rank = {item: r for r, item in enumerate(by_click, start=1)}
    fused = {
        item: 1 / (RRF_K + r) + 1 / (RRF_K + click_rank[item])
        for r, item in enumerate(candidates, start=1)
    }
    return sorted(candidates, key=lambda i: -fused[i])


def recommend(
    config: RecommendConfig,
    settings: Settings | None = None,
    *,
    client: Any = None,
    timings: defaultdict[str, list[float]] | None = None,
) -> list[dict[str, Any]]:
    """Top ``k`` items for a user: online features, retrieval top-100, then the ranker.

    The ranker's scores reorder the candidates by reciprocal-rank fusion when the nightly
    measured that better (``rerank_policy``); otherwise the retrieval order stays.

    Args:
        config: The request.
        settings: Deployment settings; read from the environment when omitted.
        client: A ``ServingClient`` to reuse; one is made from ``settings`` otherwise.
        timings: When given, each stage's milliseconds are appended under its name
            (``online_profile``, ``retrieval``, ``rerank_policy``, ``ranker_inputs``,
            ``ranker``, ``fuse_titles``).

    Returns:
        ``{"rank", "item_id", "title", "score"[, "ranker_score"]}`` per item.

    Raises:
        RecommendError: No data, no served model, no online features, an unknown user or
            a model server that does not answer; its ``hint`` says what to run.
    """
    import pandas as pd

    from recops.features import online_user_features
    from recops.promotion import ranking_instances, served_stable
    from recops.serving.client import ServingClient

    settings = settings or Settings.from_env()
    if config.protocol not in ("rest", "grpc"):
        raise ParamError(f"protocol={config.protocol!r}: expected 'rest' or 'grpc'")

    def timed(stage: str, fn: Callable[[], T]) -> T:
        begin = time.perf_counter()
        out = fn()
        if timings is not None:
            timings[stage].append((time.perf_counter() - begin) * 1000.0)
        return out

    if not settings.items_path.is_file():
        raise RecommendError(
            f"no published data in {settings.data_dir}",
            "run `recops data fetch` (MovieLens-100K) or `recops data synth`, or `make demo`",
        )
    real_serving = bool(settings.tfserving_rest or settings.tfserving_grpc)
    if not real_serving and served_stable(settings, settings.model_name) is None:
        raise RecommendError(
            f"no {settings.model_name} version is served "
            f"(no `stable` label in {settings.models_config_path})",
            "run `make demo`, or trigger recsys_promote in the Airflow UI (`make ui`) "
            "for a blessed version",
        )
    if settings.online_store == "sqlite" and not (settings.feast_dir / "online_store.db").exists():
        raise RecommendError(
            f"no online features in {settings.feast_dir}",
            "run `make demo`: the nightly materializes them",
        )
    try:
        profile = timed(
            "online_profile", lambda: online_user_features([config.user_id], settings)[0]
        )
    except KeyError as exc:
        ids = pd.read_parquet(settings.users_path, columns=["user_id"])["user_id"]
        raise RecommendError(
            str(exc).strip("'\""),
            f"the data has {len(ids)} users with ids {ids.min()}..{ids.max()}; "
            "`--user-id` must be one of them",
        ) from exc
    own_client = client is None
    client = client or ServingClient.from_settings(settings)
    try:

        def predict(model: str, instances: list[dict[str, Any]]) -> dict[str, Any]:
            if config.protocol == "rest":
                return dict(
                    client.predict_rest(model, instances=instances, label="stable")["predictions"][
                        0
                    ]
                )
            out = client.predict_grpc(model, _grpc_inputs(instances), label="stable")
            return {name: value[0] for name, value in out.items()}

        try:
            row = timed("retrieval", lambda: predict(settings.model_name, [profile]))
        except Exception as exc:
            raise RecommendError(
                f"the served model did not answer: {exc}",
                "start serving with `recops serve --detach` "
                f"(log: {settings.serving_dir / 'server.log'})",
            ) from exc
        candidates = [int(i) for i in row["item_ids"]]
        retrieval = {
            item: float(score) for item, score in zip(candidates, row["scores"], strict=True)
        }
        order = candidates
        ranker: dict[int, float] = {}
        ranker_version = served_stable(settings, settings.ranking_model_name)
        if ranker_version is not None:
            policy = timed("rerank_policy", lambda: rerank_policy(settings, ranker_version))
            inputs = ("user_id", "age", "gender", "occupation", "item_ids", *RANKER_USER_FEATURES)
            request = timed(
                "ranker_inputs",
                lambda: ranking_instances(settings, [profile], [candidates], inputs),
            )
            ranked = timed("ranker", lambda: predict(settings.ranking_model_name, request))
            ranker = {
                item: float(score) for item, score in zip(candidates, ranked["scores"], strict=True)
            }
            if policy == "fusion":
                order = fuse(candidates, ranker)
    finally:
        if own_client:
            client.close()

    def titled() -> list[dict[str, Any]]:
        titles = pd.read_parquet(settings.items_path, columns=["item_id", "title"]).set_index(
            "item_id"
        )["title"]
        return [
            {
                "rank": r,
                "item_id": item,
                "title": str(titles.get(item, "?")),
                "score": retrieval[item],
                **({"ranker_score": ranker[item]} if ranker else {}),
            }
            for r, item in enumerate(order[: config.k], start=1)
        ]

    return timed("fuse_titles", titled)
