"""``recops.data.event_log``: contract checks, durable appends and idempotent compaction.

Records use the shipped specs' own column names: the shop spec (string keys, ISO times,
event types) and the MovieLens spec (integer keys, unix seconds, a rating in [1, 5]).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from recops.config import REPO_ROOT, Settings
from recops.data.event_log import EventError, append, compact, event_log_dir, parse_events
from recops.data.keys import read_key_table
from recops.data.partitions import partition_path, staged_path
from recops.errors import ParamError, PermanentError
from recops.layout import INTERACTION_COLUMNS, active_layout, active_spec

SHOP = "shop-synthetic"
ML = "movielens-100k"


def _settings(tmp_path: Path, dataset: str) -> Settings:
    return Settings(home=tmp_path / "home", dataset=dataset)


def _shop(customer: str, sku: str, ts: str, event: str = "view") -> dict[str, Any]:
    return {"customer": customer, "sku": sku, "ts": ts, "event": event}


def test_shop_records_become_canonical_rows_with_interned_keys(tmp_path: Path) -> None:
    settings = _settings(tmp_path, SHOP)
    records = [
        _shop("c-9", "sku-2", "2024-05-01T10:00:00Z", "purchase"),
        _shop("c-1", "sku-2", "2024-05-01T11:30:00+02:00"),
    ]
    rows = parse_events(settings, active_spec(settings), records)
    assert list(rows.columns) == list(INTERACTION_COLUMNS)
    assert str(rows["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert list(rows["event_timestamp"]) == [
        pd.Timestamp("2024-05-01T10:00:00Z"),
        pd.Timestamp("2024-05-01T09:30:00Z"),
    ]
    assert list(rows["event_type"]) == ["purchase", "view"]
    assert list(rows["weight"]) == [5.0, 1.0]
    users = read_key_table(settings, "users").set_index("key")["id"]
    items = read_key_table(settings, "items").set_index("key")["id"]
    assert list(rows["user_id"]) == [users["c-9"], users["c-1"]]
    assert rows["item_id"].nunique() == 1 and rows["item_id"][0] == items["sku-2"]
    # Known keys keep their ids; a new one gets the next id; a layout works as the spec.
    again = parse_events(settings, active_layout(settings), [_shop("c-1", "sku-7", "2024-05-02")])
    assert again["user_id"][0] == users["c-1"]
    assert again["item_id"][0] == int(items.max()) + 1


def test_times_in_the_specs_strftime_pattern_are_read_and_others_refused(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, SHOP)
    spec = active_spec(settings)
    stamp = spec.events.timestamp.model_copy(update={"format": "%d/%m/%Y %H:%M"})
    spec = spec.model_copy(update={"events": spec.events.model_copy(update={"timestamp": stamp})})

    rows = parse_events(settings, spec, [_shop("c-1", "sku-1", "02/05/2024 10:30")])
    assert list(rows["event_timestamp"]) == [pd.Timestamp("2024-05-02T10:30:00Z")]
    with pytest.raises(EventError) as info:
        parse_events(settings, spec, [_shop("c-1", "sku-1", "2024-05-02T10:30:00Z")])
    assert info.value.field == "ts" and "written as '%d/%m/%Y %H:%M'" in str(info.value)


@pytest.mark.parametrize(
    ("record", "field", "value"),
    [
        ({"sku": "a", "ts": "2024-05-01", "event": "view"}, "customer", None),
        (_shop("c", "a", "yesterday"), "ts", "yesterday"),
        (_shop("c", "a", "2024-05-01", "wishlist"), "event", "wishlist"),
        (_shop("", "a", "2024-05-01"), "customer", ""),
        ({**_shop("c", "a", "2024-05-01"), "sku": 1.5}, "sku", 1.5),
        ("not an object", "", "not an object"),
    ],
)
def test_a_bad_shop_record_names_index_field_and_value_and_writes_nothing(
    tmp_path: Path, record: Any, field: str, value: Any
) -> None:
    settings = _settings(tmp_path, SHOP)
    good = _shop("new-user", "new-sku", "2024-05-01T00:00:00Z")
    with pytest.raises(EventError) as info:
        parse_events(settings, active_spec(settings), [good, record])
    err = info.value
    assert (err.index, err.field, err.value) == (1, field, value)
    assert "event 1" in str(err) and repr(value) in str(err)
    assert isinstance(err, ParamError) and isinstance(err, PermanentError)
    # The good record's keys were not interned: nothing partial is written.
    assert read_key_table(settings, "users").empty


@pytest.mark.parametrize(
    ("patch", "field"),
    [({"rating": 6}, "rating"), ({"rating": "x"}, "rating"), ({"user_id": "u1"}, "user_id"),
     ({"timestamp": "2024-01-01"}, "timestamp"), ({"item_id": True}, "item_id")],
)  # fmt: skip
def test_movielens_values_and_integer_keys_are_checked(
    tmp_path: Path, patch: dict[str, Any], field: str
) -> None:
    settings = _settings(tmp_path, ML)
    good = {"user_id": 1, "item_id": "50", "timestamp": 893286638, "rating": 4}
    rows = parse_events(settings, active_spec(settings), [good])
    assert rows[["user_id", "item_id", "weight"]].values.tolist() == [[1, 50, 4.0]]
    assert rows["event_type"][0] == "interaction"
    with pytest.raises(EventError) as info:
        parse_events(settings, active_spec(settings), [good, good, {**good, **patch}])
    assert (info.value.index, info.value.field) == (2, field)


def _catalogue(settings: Settings, item_ids: list[int]) -> None:
    settings.items_path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"item_id": pd.Series(item_ids, dtype="int64")}).to_parquet(settings.items_path)


def test_an_event_on_an_item_outside_the_catalogue_is_refused_and_interns_nothing(
    tmp_path: Path,
) -> None:
    # Its whole day would be blocked by the nightly's contract: refused at the door.
    settings = _settings(tmp_path, SHOP)
    spec = active_spec(settings)
    good = _shop("c-1", "sku-2", "2024-05-01T10:00:00Z")
    sku = int(parse_events(settings, spec, [good])["item_id"][0])
    _catalogue(settings, [sku])
    assert len(parse_events(settings, spec, [good, _shop("c-new", "sku-2", "2024-05-02")])) == 2
    with pytest.raises(EventError) as info:
        parse_events(settings, spec, [_shop("c-2", "sku-2", "2024-05-02"),
                                      _shop("c-3", "sku-9", "2024-05-02")])  # fmt: skip
    assert (info.value.index, info.value.field, info.value.value) == (1, "sku", "sku-9")
    assert "not an item of shop-synthetic's catalogue (items.parquet)" in str(info.value)
    assert set(read_key_table(settings, "users")["key"]) == {"c-1", "c-new"}
    assert set(read_key_table(settings, "items")["key"]) == {"sku-2"}
    # Integer keys: the item id itself is looked up.
    ml = _settings(tmp_path / "ml", ML)
    _catalogue(ml, [50])
    good_ml = {"user_id": 5000, "item_id": 50, "timestamp": 893286638, "rating": 4}
    assert parse_events(ml, active_spec(ml), [good_ml])["user_id"].tolist() == [5000]
    with pytest.raises(EventError) as info:
        parse_events(ml, active_spec(ml), [good_ml, {**good_ml, "item_id": 99999}])
    assert (info.value.index, info.value.field, info.value.value) == (1, "item_id", 99999)


def _rows(settings: Settings, records: list[dict[str, Any]]) -> pd.DataFrame:
    return parse_events(settings, active_spec(settings), records)


def test_append_then_compact_merges_dedupes_and_is_byte_stable(tmp_path: Path) -> None:
    settings = _settings(tmp_path, SHOP)
    day1 = [_shop(f"c{i}", f"s{i % 3}", f"2024-05-01T0{i}:00:00Z") for i in range(4)]
    day2 = [_shop("c0", "s1", "2024-05-02T01:00:00Z", "add_to_cart")]
    paths = append(settings, _rows(settings, day1 + day2))
    assert sorted(p.parent.name for p in paths) == ["date=2024-05-01", "date=2024-05-02"]
    append(settings, _rows(settings, day1[:2]))  # a retried batch: logged twice
    assert compact(settings, "2024-04-30") is None
    staged = compact(settings, "2024-05-01")
    assert staged == staged_path(settings, "2024-05-01")
    first = staged.read_bytes()
    table = pd.read_parquet(staged)
    assert list(table.columns) == list(INTERACTION_COLUMNS) and len(table) == 4
    assert compact(settings, "2024-05-01") == staged
    assert staged.read_bytes() == first
    # A later batch merges with what is staged; a torn last line is skipped.
    append(settings, _rows(settings, [_shop("c9", "s9", "2024-05-01T23:00:00Z")]))
    log = next(event_log_dir(settings, "2024-05-01").glob("*.jsonl"))
    with log.open("ab") as handle:
        handle.write(b'{"user_id": 1, "item_')
    merged = pd.read_parquet(compact(settings, "2024-05-01"))
    assert len(merged) == 5
    assert merged["event_timestamp"].is_monotonic_increasing
    # The next append closes the torn line instead of gluing onto it.
    append(settings, _rows(settings, [_shop("c8", "s8", "2024-05-01T22:00:00Z")]))
    assert len(pd.read_parquet(compact(settings, "2024-05-01"))) == 6


def test_a_published_day_is_restaged_whole_or_not_at_all(tmp_path: Path) -> None:
    settings = _settings(tmp_path, SHOP)
    day = [_shop(f"c{i}", "s1", f"2024-05-01T0{i}:00:00Z") for i in range(3)]
    append(settings, _rows(settings, day))
    # The nightly publishes the compacted day (validate_and_publish renames it into place).
    published = partition_path(settings, "2024-05-01")
    published.parent.mkdir(parents=True)
    os.replace(compact(settings, "2024-05-01"), published)
    # A re-run of the same day finds only published events in the log: nothing to stage.
    assert compact(settings, "2024-05-01") is None
    assert not staged_path(settings, "2024-05-01").exists()
    # A late event: the staged day holds the published rows too, so publishing it again
    # replaces the partition with the union, never with the late event alone.
    append(settings, _rows(settings, [_shop("c9", "s2", "2024-05-01T23:00:00Z")]))
    restaged = pd.read_parquet(compact(settings, "2024-05-01"))
    assert len(restaged) == 4
    assert set(pd.read_parquet(published)["user_id"]) < set(restaged["user_id"])


_CHILD = """
import sys
from pathlib import Path
from recops.config import Settings
from recops.data.event_log import append, parse_events
from recops.layout import active_spec
settings = Settings(home=Path(sys.argv[1]), dataset="shop-synthetic")
spec = active_spec(settings)
for i in range(10_000):
    rows = parse_events(settings, spec, [
        {"customer": f"c{i}", "sku": f"s{i % 7}", "ts": f"2024-05-01T00:00:{i % 60:02d}Z",
         "event": "view"}])
    append(settings, rows)
    print(f"acked c{i}", flush=True)
"""


def test_nothing_acknowledged_is_lost_when_the_writer_is_killed(tmp_path: Path) -> None:
    settings = _settings(tmp_path, SHOP)
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'plugins'}:{REPO_ROOT / 'models'}"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(settings.home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    acked: list[str] = []
    while len(acked) < 25:
        line = child.stdout.readline().decode()
        assert line, child.stderr.read().decode() if child.stderr else "child exited"
        acked.append(line.split()[1])
    child.send_signal(signal.SIGKILL)  # right after an acknowledgement
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    staged = pd.read_parquet(compact(settings, "2024-05-01"))
    keys = read_key_table(settings, "users").set_index("id")["key"]
    logged = {keys[u] for u in staged["user_id"]}
    assert set(acked) <= logged
