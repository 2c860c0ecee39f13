"""kill -9 of the recommendation service right after it acknowledged events loses nothing.

The service acknowledges ``POST /v1/events`` only after the staging log's fsync, so a
SIGKILL just after the 200 (no clean shutdown, nothing flushed later) must leave every
acknowledged event in the staged partition that ``event_log.compact`` builds.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from recops.config import Settings

from tests.support.stack import free_port

pytestmark = pytest.mark.integration


def test_acknowledged_events_survive_kill_9(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recops.data import publish, synthesize
    from recops.data.event_log import compact
    from recops.features import FeaturesConfig, build_features
    from recops.service.daemon import pid_file, service_url, start_service, stop_service

    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    for name in ("RECOPS_REST_PORT", "RECOPS_GRPC_PORT", "RECOPS_RECOMMEND_PORT"):
        monkeypatch.setenv(name, str(free_port()))
    monkeypatch.delenv("RECOPS_EVENTS_TOKEN", raising=False)
    settings = Settings.from_env()
    inter, users, items = synthesize(rows=300, users=10, items=20, days=2, seed=3)
    published = publish(settings, inter, users, items, source="test")
    end = datetime.fromisoformat(published.last_date).replace(tzinfo=UTC) + timedelta(days=1)
    build_features(
        FeaturesConfig(
            interval_start=end - timedelta(days=1),
            interval_end=end,
            output_dir=str(tmp_path / "f"),
        ),
        settings,
    )
    pid = start_service(settings)
    try:
        now = int(time.time())
        acked: list[tuple[int, int]] = []
        with httpx.Client(base_url=service_url(settings), timeout=30.0) as http:
            for batch in range(5):
                records = [
                    {"user_id": u, "item_id": 1 + (u + batch) % 20, "rating": 4, "timestamp": now}
                    for u in range(1, 4)
                ]
                reply = http.post("/v1/events", json=records)
                assert reply.status_code == 200, reply.text
                acked += [(r["user_id"], r["item_id"]) for r in records]
        os.kill(pid, signal.SIGKILL)  # at once: no shutdown, no later flush
    finally:
        stop_service(settings)
    assert not pid_file(settings).exists()
    day = datetime.fromtimestamp(now, tz=UTC).date().isoformat()
    staged = compact(settings, day)
    assert staged is not None
    frame = pd.read_parquet(staged)
    kept = set(zip(frame["user_id"].astype(int), frame["item_id"].astype(int), strict=True))
    missing = [pair for pair in acked if pair not in kept]
    assert not missing, f"acknowledged events lost after kill -9: {missing}"
