"""A Redis database of the test's own, for tests of the Redis online store.

Databases 1..15 are shared by every test session on the machine, so each one is taken
with a lock key (``SET NX`` with an expiry, in database 0) and flushed before and after.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

#: The Redis the tests use (``host:port``).
REDIS_HOST = os.environ.get("RECOPS_TEST_REDIS", "127.0.0.1:6379")


def redis_test_db() -> Iterator[str]:
    """Yield ``host:port,db=N`` of a locked, empty database; skip when Redis is unreachable."""
    redis = pytest.importorskip("redis")
    host, _, port = REDIS_HOST.partition(":")
    admin = redis.Redis(host=host, port=int(port or 6379), socket_connect_timeout=2)
    try:
        admin.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"Redis is unreachable at {REDIS_HOST}: {exc}")
    token = f"{os.getpid()}-{time.time()}"
    for db in range(1, 16):
        lock = f"recops-test-lock:{db}"
        if admin.set(lock, token, nx=True, ex=900):
            break
    else:
        pytest.skip(f"all Redis databases 1..15 at {REDIS_HOST} are locked by other test sessions")
    client = redis.Redis(host=host, port=int(port or 6379), db=db)
    client.flushdb()
    try:
        yield f"{REDIS_HOST},db={db}"
    finally:
        client.flushdb()
        client.close()
        if admin.get(lock) == token.encode():
            admin.delete(lock)
        admin.close()
