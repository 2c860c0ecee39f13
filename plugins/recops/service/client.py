"""Asking the running recommendation service for a user's top k (``recops recommend``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recops.config import Settings

__all__ = ["recommend_via_service"]


def recommend_via_service(
    settings: Settings, user_id: int | str, k: int, *, timeout_s: float = 2.0
) -> list[dict[str, Any]] | None:
    """The service's items for ``user_id`` with a ``rank`` each, or None when it does not answer.

    None (never an exception) when nothing listens, the request times out, or the
    service answers with an error: the caller falls back to the in-process path.
    """
    import httpx

    from recops.service.daemon import service_url

    try:
        reply = httpx.get(
            service_url(settings) + "/v1/recommendations",
            params={"user_id": str(user_id), "k": k, "dataset": settings.dataset},
            timeout=timeout_s,
        )
    except httpx.HTTPError:
        return None
    if reply.status_code != 200:
        return None
    items = reply.json().get("items", [])
    return [{**item, "rank": rank} for rank, item in enumerate(items, start=1)]
