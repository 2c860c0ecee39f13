"""Asking the running recommendation service for a user's top k (``recops recommend``).

Standard library only (``urllib``): the answer is one small JSON document, and a
command that finishes in well under a second spends no time importing an HTTP client.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recops.config import Settings

__all__ = ["recommend_via_service"]


def recommend_via_service(
    settings: Settings, user_id: int | str, k: int, *, timeout_s: float = 2.0
) -> list[dict[str, Any]] | None:
    """The service's items for ``user_id`` with a ``rank`` each, or None when it does not answer.

    None (never an exception) when nothing listens, the request times out, the service
    answers with an error, or its body is not the expected JSON: the caller falls back to
    the in-process path.
    """
    from recops.service.daemon import service_url

    query = urllib.parse.urlencode({"user_id": str(user_id), "k": k, "dataset": settings.dataset})
    url = f"{service_url(settings)}/v1/recommendations?{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:  # noqa: S310 (http only)
            if reply.status != 200:
                return None
            body = json.loads(reply.read())
    except (OSError, ValueError):  # URLError, HTTPError, timeouts; a body that is not JSON
        return None
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return None
    return [{**item, "rank": rank} for rank, item in enumerate(items, start=1)]
