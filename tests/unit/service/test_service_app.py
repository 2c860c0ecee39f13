"""``recops.service.app``: the plain recommendations route answers as FastAPI's would.

Two real FastAPI apps carry ``add_recommendations_route`` over one recording handler, one
with the plain route ahead of FastAPI's and one without it; every query, plain, odd or
invalid, must get the same status, body and handler arguments from both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from recops.service.app import _plain_args, add_recommendations_route

Call = tuple[str, int, str | None, str]


def _client(*, plain_first: bool) -> tuple[TestClient, list[Call]]:
    calls: list[Call] = []

    async def recommend(user_id: str, k: int, dataset: str | None, variant: str) -> Response:
        calls.append((user_id, k, dataset, variant))
        body = {"user_id": user_id, "k": k, "dataset": dataset, "variant": variant}
        return Response(json.dumps(body), media_type="application/json")

    app = FastAPI()
    add_recommendations_route(app, recommend, plain_first=plain_first)
    return TestClient(app), calls


Both = Callable[[str, str], Any]


@pytest.fixture(scope="module")
def both() -> Both:
    """Send one request to both apps; check they agree; return the plain app's answer."""
    plain, plain_calls = _client(plain_first=True)
    declared, declared_calls = _client(plain_first=False)

    def send(method: str, query: str) -> Any:
        url = "/v1/recommendations" + (f"?{query}" if query else "")
        plain_calls.clear()
        declared_calls.clear()
        ours, theirs = plain.request(method, url), declared.request(method, url)
        assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content), query
        assert plain_calls == declared_calls
        return ours

    return send


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("user_id=1&k=3", 200),
        ("user_id=1", 200),
        ("user_id=abc%20d&k=100&dataset=ml-1m", 200),
        ("user_id=1&k=05", 200),  # FastAPI's reading, not the plain route's
        ("user_id=1&k=%2B5", 200),
        ("user_id=1&user_id=2", 200),  # the last one, as FastAPI reads it
        ("user_id=1&k=2&dataset=", 200),
        ("user_id=1&other=x", 200),
        ("user_id=1&variant=canary", 200),
        ("user_id=1&k=3&variant=stable", 200),
        ("user_id=1&variant=beta", 422),
        ("user_id=1&variant=", 422),
        ("user_id=1&k=0", 422),
        ("user_id=1&k=101", 422),
        ("user_id=1&k=abc", 422),
        ("user_id=&k=3", 422),
        ("k=3", 422),
        ("", 422),
        ("user_id=" + "x" * 257, 422),
        ("user_id=1&dataset=" + "d" * 129, 422),
    ],
)
def test_a_query_gets_what_fastapi_gives_it(both: Both, query: str, status: int) -> None:
    ours = both("GET", query)
    assert ours.status_code == status


@pytest.mark.parametrize("method", ["POST", "HEAD", "DELETE"])
def test_another_method_is_refused_as_before(both: Both, method: str) -> None:
    ours = both(method, "user_id=1&k=2")
    assert ours.status_code == 405


def test_plain_queries_skip_fastapi_and_others_do_not() -> None:
    def scope(query: str, method: str = "GET") -> dict[str, Any]:
        return {"method": method, "query_string": query.encode()}

    assert _plain_args(scope("user_id=u%C3%A9&k=7&dataset=d")) == ("ué", 7, "d", "stable")
    assert _plain_args(scope("user_id=9")) == ("9", 10, None, "stable")
    odd_queries = ("user_id=1&k=07", "user_id=1&k=1e1", "user_id=1&user_id=2", "k=1", "user_id=")
    # A variant is FastAPI's to validate (only ``stable`` and ``canary`` exist).
    for odd in (*odd_queries, "user_id=1&variant=canary", "user_id=1&variant=stable"):
        assert _plain_args(scope(odd)) is None, odd
    assert _plain_args(scope("user_id=1", "POST")) is None


_TEXT = st.text(alphabet=st.sampled_from("0123456789+- aé&=%x"), max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    user=st.none() | st.text(max_size=4) | st.just("x" * 256) | st.just("x" * 257),
    k=st.none() | _TEXT | st.integers(-3, 130).map(str),
    dataset=st.none() | _TEXT | st.just("d" * 129),
)
def test_any_query_gets_the_same_answer_from_both_routes(
    both: Both, user: str | None, k: str | None, dataset: str | None
) -> None:
    from urllib.parse import urlencode

    params = {n: v for n, v in (("user_id", user), ("k", k), ("dataset", dataset)) if v is not None}
    both("GET", urlencode(params))
