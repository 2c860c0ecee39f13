"""Online store materialization: idempotent, ordered, and safe to kill, on SQLite and Redis.

The data is a small canonical shop-like dataset (``datasets/shop-synthetic.yaml``: string
and float attributes, event types), written as the import publishes it. Each case runs
on both stores. Redis tests take a private database number (locked in db 0
so concurrent sessions never share one) and are skipped, saying why, when no Redis server
answers at ``RECOPS_REDIS_URL`` (default 127.0.0.1:6379).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recops.config import REPO_ROOT, Settings
from recops.features import (
    EPOCH,
    RollingConfig,
    apply_repo,
    compute_rolling_features,
    dump_online_store,
    materialize,
    online_features,
    online_user_features,
    recops_home_env,
    rolling_source_path,
)

from tests.support.redis_db import redis_test_db

pytestmark = pytest.mark.integration
DATASET = "shop-synthetic"


@pytest.fixture(params=["sqlite", "redis"])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECOPS_DATASET", DATASET)
    monkeypatch.setenv("RECOPS_ONLINE_STORE", request.param)
    if request.param == "redis":
        gen = redis_test_db()
        monkeypatch.setenv("RECOPS_REDIS_URL", next(gen))
        yield Settings.from_env()
        next(gen, None)
    else:
        yield Settings.from_env()


def _publish_shop(settings: Settings, *, rows: int, users: int, items: int, days: int) -> None:
    """A small canonical shop dataset (int ids, as the import interns them), published."""
    rng = np.random.default_rng(3)
    start = pd.Timestamp("1998-04-15", tz="UTC")
    weights = {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
    kinds = rng.choice(list(weights), rows)
    events = pd.DataFrame(
        {
            "user_id": rng.integers(1, users + 1, rows).astype("int64"),
            "item_id": rng.integers(1, items + 1, rows).astype("int64"),
            "event_timestamp": (
                start + pd.to_timedelta(rng.integers(0, days * 86_400, rows), unit="s")
            ).astype("datetime64[us, UTC]"),
            "event_type": kinds,
            "weight": pd.Series(kinds).map(weights).astype("float64"),
        }
    ).sort_values(["event_timestamp", "user_id", "item_id"], ignore_index=True)
    valid = (start - pd.Timedelta(days=1)).as_unit("us")
    customers = pd.DataFrame(
        {
            "user_id": np.arange(1, users + 1, dtype="int64"),
            "country": rng.choice(["DE", "FR", "IT"], users),
            "event_timestamp": valid,
        }
    )
    products = pd.DataFrame(
        {
            "item_id": np.arange(1, items + 1, dtype="int64"),
            "name": [f"Product {i}" for i in range(1, items + 1)],
            "category": rng.choice(["tools", "toys"], items),
            "brand": [None if i % 4 == 0 else f"brand{i % 3}" for i in range(1, items + 1)],
            "price": rng.uniform(1, 100, items).round(2),
            "event_timestamp": valid,
        }
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "datasets" / f"{DATASET}.yaml", settings.data_dir / "spec.yaml")
    for day, part in events.groupby(events["event_timestamp"].dt.strftime("%Y-%m-%d")):
        path = settings.interactions_dir / f"date={day}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        part.reset_index(drop=True).to_parquet(path, index=False)
    customers.to_parquet(settings.users_path, index=False)
    products.to_parquet(settings.items_path, index=False)


def _prepare(settings: Settings, end: datetime) -> None:
    _publish_shop(settings, rows=900, users=25, items=30, days=8)
    compute_rolling_features(RollingConfig(interval_end=end), settings)


def _ends(settings: Settings) -> tuple[datetime, datetime]:
    days = sorted(p.name.removeprefix("date=") for p in settings.interactions_dir.iterdir())
    end = datetime.fromisoformat(days[-1]).replace(tzinfo=UTC) + pd.Timedelta(days=1)
    return end - pd.Timedelta(days=3), end


def test_same_interval_twice_leaves_the_store_identical(settings: Settings) -> None:
    _prepare(settings, datetime(1998, 4, 23, tzinfo=UTC))
    _, end = _ends(settings)
    store = apply_repo(settings)
    with recops_home_env(settings):
        reached = materialize(store, end)
    first = dump_online_store(settings)
    assert len(first) > 100
    assert set(reached) == {
        "user_profile",
        "item_profile",
        "user_activity",
        "item_popularity",
        "user_history",
    }
    with recops_home_env(settings):
        assert materialize(apply_repo(settings), end) == reached
        # Even a forced full re-run of the interval (no registry shortcut) writes the same.
        store.materialize(start_date=EPOCH, end_date=end)
    assert dump_online_store(settings) == first
    # The store is readable for serving: profiles and the rolling views, by entity, with
    # the spec's attributes; strings come back as strings, a null as None.
    profile = online_user_features([1], settings)[0]
    assert set(profile) == {"user_id", "country"} and isinstance(profile["country"], str)
    popular = online_features("item_id", [3, 4], "ranking_v1", settings)
    assert {"item_events_7d", "item_events_30d", "item_weight_mean_30d", "price"} <= set(popular[0])
    assert isinstance(popular[0]["brand"], str) and popular[1]["brand"] is None
    assert isinstance(popular[0]["category"], str) and isinstance(popular[0]["price"], float)


def test_older_interval_never_overwrites_newer_values(settings: Settings) -> None:
    _prepare(settings, datetime(1998, 4, 23, tzinfo=UTC))
    old_end, end = _ends(settings)
    # The check means something only if the old interval holds older, different values.
    source = pd.read_parquet(rolling_source_path(settings, "item_popularity"))
    assert (source["event_timestamp"] > pd.Timestamp(old_end)).any()
    store = apply_repo(settings)
    with recops_home_env(settings):
        materialize(store, end)
        newest = dump_online_store(settings)
        # Our guard skips the whole interval ...
        assert materialize(store, old_end)["item_popularity"] == end.isoformat()
        assert dump_online_store(settings) == newest
        # ... and the store itself refuses older rows when the guard is bypassed.
        store.materialize(start_date=EPOCH, end_date=old_end)
    assert dump_online_store(settings) == newest


_CHILD = """
import os, sys, time
from datetime import datetime
from recops.config import Settings
from recops.features import recops_home_env, materialize, open_store
settings = Settings.from_env()
marker, mode, end = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3])
def done(view):
    with open(marker, "a") as f:
        f.write(view + "\\n")
    if mode == "after_first_view":
        time.sleep(120)
with recops_home_env(settings):
    store = open_store(settings)
    open(marker + ".started", "w").close()
    materialize(store, end, on_view_done=done)
"""


def _reset_online(settings: Settings) -> None:
    if settings.online_store == "redis":
        import redis

        host_port, db = settings.redis_url.split(",db=")
        host, _, port = host_port.partition(":")
        client = redis.Redis(host=host, port=int(port), db=int(db))
        client.flushdb()
        client.close()
    shutil.rmtree(settings.feast_dir)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["after_first_view", "random"])
def test_kill_9_mid_materialization_then_retry_equals_clean_run(
    settings: Settings, tmp_path: Path, mode: str
) -> None:
    _prepare(settings, datetime(1998, 4, 23, tzinfo=UTC))
    _, end = _ends(settings)
    store = apply_repo(settings)
    with recops_home_env(settings):
        started = time.monotonic()
        materialize(store, end)
        clean_seconds = time.monotonic() - started
    clean = dump_online_store(settings)
    _reset_online(settings)
    apply_repo(settings)

    marker = tmp_path / "views.txt"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(marker), mode, end.isoformat()],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for = marker if mode == "after_first_view" else Path(f"{marker}.started")
    deadline = time.monotonic() + 120

    def reached() -> bool:
        # The child creates the marker before it writes the view's name into it.
        return wait_for.exists() and (mode != "after_first_view" or bool(wait_for.read_text()))

    while not reached() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, child.stderr.read().decode()[-2000:] if child.stderr else ""
    if mode == "random":
        # Somewhere inside a clean run's duration: usually mid-view, sometimes between.
        time.sleep(random.Random(os.getpid()).uniform(0.0, clean_seconds))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    if child.stderr:
        child.stderr.close()
    # A random kill may come after a fast child already finished; the retry must match anyway.
    assert child.returncode == -signal.SIGKILL or (mode == "random" and child.returncode == 0)
    if mode == "after_first_view":
        # The kill really landed half-way: one view in, the others not yet.
        assert marker.read_text().split() == ["item_popularity"]
        assert dump_online_store(settings) != clean

    with recops_home_env(settings):
        materialize(apply_repo(settings), end)
    assert dump_online_store(settings) == clean
