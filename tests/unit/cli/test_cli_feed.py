"""``recops feed``: records in the dataset's own schema, and the replay over real HTTP."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from recops.cli.feed import feed, feed_records
from recops.config import Settings
from recops.data.event_log import EventError, parse_events
from recops.data.keys import intern
from recops.data.partitions import publish
from recops.layout import INTERACTION_COLUMNS, active_spec
from typer.testing import CliRunner


def _canonical(user_ids: list[int], item_ids: list[int], types: list[str]) -> pd.DataFrame:
    n = len(user_ids)
    stamps = pd.date_range("2024-05-01T10:00:00", periods=n, freq="37min", tz="UTC")
    return pd.DataFrame(
        {
            "user_id": pd.Series(user_ids, dtype="int64"),
            "item_id": pd.Series(item_ids, dtype="int64"),
            "event_timestamp": stamps.astype("datetime64[us, UTC]"),
            "event_type": pd.Series(types, dtype=object),
            "weight": [4.0, 2.0, 5.0][:n],
        }
    )[list(INTERACTION_COLUMNS)]


@pytest.mark.parametrize("dataset", ["shop-synthetic", "movielens-100k"])
def test_records_parse_back_to_the_same_rows_shifted(tmp_path: Path, dataset: str) -> None:
    settings = Settings(home=tmp_path / "home", dataset=dataset)
    spec = active_spec(settings)
    if dataset == "shop-synthetic":
        users = intern(settings, "users", pd.Series(["ann", "bob"]))
        items = intern(settings, "items", pd.Series(["sku-1", "sku-2"]))
        rows = _canonical([users[0], users[1], users[0]], [items[1], items[0], items[1]],
                          ["view", "purchase", "add_to_cart"])  # fmt: skip
        rows["weight"] = rows["event_type"].map(spec.events.event_type.weights)  # type: ignore[union-attr]
        user_keys: dict[int, str] | None = {int(users[0]): "ann", int(users[1]): "bob"}
        item_keys: dict[int, str] | None = {int(items[0]): "sku-1", int(items[1]): "sku-2"}
    else:
        rows = _canonical([1, 2, 1], [50, 7, 9], ["interaction"] * 3)
        user_keys = item_keys = None
    shift = pd.Timedelta(days=700, seconds=3)
    records = feed_records(spec, rows, user_keys=user_keys, item_keys=item_keys, shift=shift)
    columns = {spec.events.user_key, spec.events.item_key, spec.events.timestamp.column}
    assert columns <= set(records[0])
    if dataset == "shop-synthetic":
        assert records[0]["customer"] == "ann" and records[0]["event"] == "view"
        assert records[0]["ts"].endswith("Z")
    else:
        assert records[0]["rating"] == 4 and isinstance(records[0]["timestamp"], int)
    back = parse_events(settings, spec, records)
    expected = rows.assign(event_timestamp=rows["event_timestamp"] + shift)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)


def test_millisecond_times_go_out_and_come_back(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", dataset="movielens-100k")
    seconds_spec = active_spec(settings)
    events = seconds_spec.events
    stamp = events.timestamp.model_copy(update={"format": "unix_milliseconds"})
    spec = seconds_spec.model_copy(
        update={"events": events.model_copy(update={"timestamp": stamp})}
    )
    rows = _canonical([1, 2, 1], [50, 7, 9], ["interaction"] * 3)
    records = feed_records(spec, rows, user_keys=None, item_keys=None, shift=None)
    assert records[0]["timestamp"] == 1_714_557_600_000  # 2024-05-01T10:00:00Z
    back = parse_events(settings, spec, records)
    pd.testing.assert_frame_equal(back, rows, check_dtype=False)
    # Milliseconds sent to a dataset written in seconds: refused, naming the field.
    with pytest.raises(EventError) as info:
        parse_events(settings, seconds_spec, records)
    assert (info.value.index, info.value.field) == (0, "timestamp")
    assert "is not a time in unix seconds" in str(info.value)


def test_times_in_a_strftime_pattern_go_out_and_come_back(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", dataset="movielens-100k")
    spec = active_spec(settings)
    stamp = spec.events.timestamp.model_copy(update={"format": "%m/%d/%Y %H:%M:%S"})
    spec = spec.model_copy(update={"events": spec.events.model_copy(update={"timestamp": stamp})})
    rows = _canonical([1, 2, 1], [50, 7, 9], ["interaction"] * 3)
    records = feed_records(spec, rows, user_keys=None, item_keys=None, shift=None)
    assert records[0]["timestamp"] == "05/01/2024 10:00:00"
    back = parse_events(settings, spec, records)
    pd.testing.assert_frame_equal(back, rows, check_dtype=False)


def test_feed_posts_every_event_in_batches_ending_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECOPS_DATASET", "movielens-100k")
    monkeypatch.setenv("RECOPS_EVENTS_TOKEN", "s3cret")
    settings = Settings.from_env()
    rows = _canonical([1, 2, 3], [10, 11, 12], ["interaction"] * 3)
    users = pd.DataFrame({"user_id": pd.Series([1, 2, 3], dtype="int64")})
    items = pd.DataFrame({"item_id": pd.Series([10, 11, 12], dtype="int64")})
    for table in (users, items):
        table["event_timestamp"] = pd.Timestamp("2024-04-01", tz="UTC")
    publish(settings, rows, users, items, source="test")
    received: list[tuple[str, list[dict[str, Any]]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.headers.get("Authorization", ""), body))
            reply = json.dumps({"accepted": len(body)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app = typer.Typer()
    app.command()(feed)
    before = pd.Timestamp.now(tz="UTC").timestamp()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        result = CliRunner().invoke(app, ["--url", url, "--batch", "2"])
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    assert [len(body) for _, body in received] == [2, 1]
    assert {auth for auth, _ in received} == {"Bearer s3cret"}
    posted = [r for _, body in received for r in body]
    assert [r["user_id"] for r in posted] == [1, 2, 3]
    # The replay ends now and keeps the gaps between events.
    stamps = [r["timestamp"] for r in posted]
    assert before - 5 <= stamps[-1] <= pd.Timestamp.now(tz="UTC").timestamp() + 1
    assert stamps[1] - stamps[0] == pytest.approx(37 * 60, abs=1)
