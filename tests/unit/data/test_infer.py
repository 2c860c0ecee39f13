"""infer_spec: a draft spec from the files that imports as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from recops.config import Settings
from recops.data import import_dataset, infer_spec, list_partitions, write_synthetic
from recops.data.infer import spec_draft_yaml
from recops.data.partitions import read_interactions
from recops.dataset_spec import load_spec
from recops.errors import DataError


def _kinds(attributes: tuple[object, ...]) -> dict[str, str]:
    return {a.name: a.kind for a in attributes}  # type: ignore[attr-defined]


def test_a_draft_from_the_shop_files_imports_with_no_edit(
    settings: Settings, tmp_path: Path
) -> None:
    shipped = write_synthetic(tmp_path, mode="shop", rows=500, users=20, items=30, days=3, seed=4)
    files = load_spec(shipped).file_paths(shipped)

    spec = infer_spec("my-shop", files["events"], files["users"], files["items"],
                      spec_dir=tmp_path)  # fmt: skip
    out = tmp_path / "my-shop.yaml"
    out.write_text(spec_draft_yaml(spec, {"events": str(files["events"])}))

    assert (spec.users.key, spec.items.key) == ("customer", "sku")
    assert (spec.users.key_type, spec.items.key_type) == ("string", "string")
    assert spec.events.timestamp.format == "iso8601" and spec.events.value is None
    assert spec.events.event_type is not None
    assert spec.events.event_type.weights == {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
    assert set(spec.positive_types) == {"add_to_cart", "purchase"}
    assert _kinds(spec.users.attributes) == {"country": "categorical"}
    assert _kinds(spec.items.attributes) == {
        "name": "text", "category": "categorical", "brand": "categorical", "price": "numeric",
    }  # fmt: skip
    result = import_dataset(out, settings, stage_last_days=1)
    assert result.n_interactions == len(pd.read_csv(files["events"]))
    assert list_partitions(settings.for_dataset("my-shop"))


def test_a_draft_from_movielens_shaped_files(settings: Settings, tmp_path: Path) -> None:
    shipped = write_synthetic(
        tmp_path, mode="movielens", rows=400, users=30, items=40, days=3, seed=1
    )
    files = load_spec(shipped).file_paths(shipped)

    spec = infer_spec("ml", files["events"], files["users"], files["items"])

    assert (spec.users.key_type, spec.items.key_type) == ("integer", "integer")
    assert spec.events.timestamp.format == "unix_seconds"
    assert spec.events.value is not None and spec.events.value.column == "rating"
    assert (spec.events.value.range.low, spec.events.value.range.high) == (1.0, 5.0)
    assert spec.events.event_type is None
    assert _kinds(spec.users.attributes) == {
        "age": "numeric", "gender": "categorical", "occupation": "categorical",
        "zip_code": "text",
    }  # fmt: skip
    genres = spec.items.attributes[2]
    assert (genres.name, genres.kind, genres.separator) == ("genres", "multi_categorical", "|")
    assert spec.files is not None and Path(spec.files.events).is_absolute()
    out = tmp_path / "ml.yaml"
    out.write_text(spec_draft_yaml(spec))
    # Everything staged: the conversion runs, the (slow) history validation does not.
    result = import_dataset(out, settings, stage_last_days=3)
    assert result.n_users == 30 and result.n_items == 40


def test_millisecond_times_are_drafted_and_imported(settings: Settings, tmp_path: Path) -> None:
    shipped = write_synthetic(
        tmp_path, mode="movielens", rows=400, users=30, items=40, days=3, seed=1
    )
    files = load_spec(shipped).file_paths(shipped)
    events = pd.read_csv(files["events"])
    seconds = events["timestamp"].to_numpy()
    events["timestamp"] = seconds * 1000
    ms_file = tmp_path / "events-ms.csv"
    events.to_csv(ms_file, index=False)

    spec = infer_spec("ms", ms_file, files["users"], files["items"])

    assert spec.events.timestamp.format == "unix_milliseconds"
    out = tmp_path / "ms.yaml"
    out.write_text(spec_draft_yaml(spec))
    import_dataset(out, settings, stage_last_days=1)
    published = read_interactions(list_partitions(settings.for_dataset("ms")))
    staged = pd.concat(
        pd.read_parquet(p) for p in settings.for_dataset("ms").staging_dir.glob("**/*.parquet")
    )
    stamps = pd.concat([published["event_timestamp"], staged["event_timestamp"]])
    assert stamps.min() == pd.Timestamp(int(seconds.min()), unit="s", tz="UTC")
    assert stamps.max() == pd.Timestamp(int(seconds.max()), unit="s", tz="UTC")


def test_keys_by_name_unknown_types_and_clashing_columns(tmp_path: Path) -> None:
    events = pd.DataFrame(
        {
            "visitor": ["007", "8", "007", "9"],
            "product_id": [1, 2, 3, 1],
            "when": ["2024-01-01T00:00:00Z"] * 4,
            "action": ["a", "b", "a", "b"],
        }
    )
    items = pd.DataFrame(
        {"product_id": [1, 2, 3], "weight": [1.5, 2.0, 3.0], "tags": ["x|y", "y", "z|x"]}
    )

    spec = infer_spec("t", events, items=items)

    # "007" would lose its zero as an integer; the key stays a string.
    assert (spec.users.key, spec.users.key_type) == ("visitor", "string")
    assert (spec.items.key, spec.items.key_type) == ("product_id", "integer")
    assert spec.events.event_type is not None
    assert spec.events.event_type.weights == {"a": 1.0, "b": 1.0}
    assert spec.events.event_type.positives is None
    # "weight" is a published column: the attribute is renamed, its column kept.
    assert [(a.name, a.column) for a in spec.items.attributes][0] == ("item_weight", "weight")
    assert spec.items.attributes[1].kind == "multi_categorical"
    assert spec.files is None


def test_refusals_are_drafted_as_negatives(tmp_path: Path) -> None:
    # Ten rounds of eight events: a type column needs several rows per type.
    events = pd.DataFrame(
        {
            "user": ["u1", "u2", "u1", "u2", "u1", "u3", "u3", "u2"] * 10,
            "sku": ["a", "b", "c", "a", "b", "c", "a", "c"] * 10,
            "ts": [f"2024-01-{d // 8 + 1:02d}T0{d % 8}:00:00Z" for d in range(80)],
            "event": ["view", "view", "view", "add_to_cart", "remove_from_cart",
                      "purchase", "view", "view"] * 10,
        }
    )  # fmt: skip
    spec = infer_spec("shop", events)
    event_type = spec.events.event_type
    assert event_type is not None
    # "remove_from_cart" holds "cart": the refusal is read first.
    assert event_type.weights["remove_from_cart"] == 0.5
    assert event_type.negatives == ("remove_from_cart",)
    assert set(spec.positive_types) == {"add_to_cart", "purchase"}
    assert set(spec.seen_types) == {"view", "add_to_cart", "remove_from_cart", "purchase"}

    music = events.assign(
        event=["play", "skip", "play", "save", "skip", "play", "play", "skip"] * 10
    )
    spec = infer_spec("music", music)
    assert spec.negative_types == ("skip",)
    assert set(spec.positive_types) == {"play", "save"}
    # Only refusals: none is marked, or nothing would be left to learn from.
    refusals = events.assign(event=["skip", "dislike"] * 40)
    event_type = infer_spec("odd", refusals).events.event_type
    assert event_type is not None and event_type.negatives is None


def test_without_keys_or_times_the_error_says_what_is_missing() -> None:
    with pytest.raises(DataError, match="no column joins to the users table or is named"):
        infer_spec("t", pd.DataFrame({"a": [1], "b": [2]}))
    events = pd.DataFrame({"user": [1, 2], "item": [3, 4], "note": ["x", "y"]})
    with pytest.raises(DataError, match="no column holds times in a form infer reads") as info:
        infer_spec("t", events)
    assert "events.timestamp.format set to its strftime pattern" in str(info.value)


def test_a_column_naming_a_value_or_time_of_the_item_is_not_its_key(tmp_path: Path) -> None:
    # Book-Crossing's columns: "Book-Rating" names the book but holds a rating.
    events = pd.DataFrame({
        "User-ID": ["1", "2", "3", "1"] * 20,
        "ISBN": ["034545104X", "0155061224", "0446520802", "0155061224"] * 20,
        "Book-Rating": ["0", "5", "10", "8"] * 20,
        "Date": ["2024-01-02 10:00:00"] * 80,
    })  # fmt: skip
    spec = infer_spec("books", events)
    assert (spec.events.user_key, spec.events.item_key) == ("User-ID", "ISBN")
    assert spec.items.key_type == "string"  # ISBNs keep their leading zeros
    assert spec.events.value is not None and spec.events.value.column == "Book-Rating"


def test_a_log_without_a_header_line_is_named_as_such(tmp_path: Path) -> None:
    # Taobao's UserBehavior.csv: user, item, category, behaviour, unix seconds; no header.
    path = tmp_path / "UserBehavior.csv"
    path.write_text("1,2268318,2520377,pv,1511544070\n1,2333346,2520771,pv,1511561733\n")
    with pytest.raises(DataError, match=r"no header line \(column names such as '1' are data"):
        infer_spec("taobao", path)
    rows = [(1, 5, "pv"), (1, 6, "fav"), (2, 5, "cart"), (2, 6, "buy")] * 5
    lines = [f"{u},{i},7,{t},{1511544070 + 60 * n}" for n, (u, i, t) in enumerate(rows)]
    path.write_text("user_id,item_id,category_id,behavior_type,timestamp\n" + "\n".join(lines))
    event_type = infer_spec("taobao", path).events.event_type
    assert event_type is not None
    assert event_type.weights == {"buy": 5.0, "cart": 3.0, "fav": 3.0, "pv": 1.0}


def test_an_amazon_review_log_is_drafted(tmp_path: Path) -> None:
    records = [
        {"overall": float(1 + n % 5), "reviewerID": f"A{n % 7}", "asin": f"B0{n % 9}",
         "reviewerName": f"name {n % 7}", "style": {"Format:": "Paperback"},
         "unixReviewTime": 1252800000 + 3600 * n}
        for n in range(60)
    ]  # fmt: skip
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    spec = infer_spec("amazon", path, spec_dir=tmp_path)
    assert (spec.events.user_key, spec.events.item_key) == ("reviewerID", "asin")
    assert spec.events.timestamp.format == "unix_seconds"
    assert spec.events.value is not None and spec.events.value.column == "overall"
    assert [a.column for a in spec.users.attributes] == ["reviewerName"]


def test_goodreads_and_twitter_times_are_drafted_and_imported(
    settings: Settings, tmp_path: Path
) -> None:
    # Goodreads' (and Twitter's) "Fri Aug 25 13:55:02 -0700 2017": weekday first, the
    # offset before the year, and both -0700 and -0800 in one column (daylight saving).
    stamps = pd.date_range("2017-03-01", periods=40, freq="7h", tz="America/Los_Angeles")
    records = [
        {"user_id": f"{n % 6:032x}", "book_id": str(100 + n % 9), "rating": n % 6,
         "date_added": stamp.strftime("%a %b %d %H:%M:%S %z %Y")}
        for n, stamp in enumerate(stamps)
    ]  # fmt: skip
    assert {r["date_added"][20:25] for r in records} == {"-0800", "-0700"}
    path = tmp_path / "goodreads.json"
    path.write_text("\n".join(json.dumps(r) for r in records))
    spec = infer_spec("goodreads", path, spec_dir=tmp_path)
    assert spec.events.timestamp.format == "%a %b %d %H:%M:%S %z %Y"
    spec_file = tmp_path / "goodreads.yaml"
    spec_file.write_text(spec_draft_yaml(spec))

    import_dataset(spec_file, settings, stage_last_days=0)

    books = settings.for_dataset("goodreads")
    published = pd.concat(pd.read_parquet(p) for p in list_partitions(books))
    assert published["event_timestamp"].min() == stamps[0].tz_convert("UTC")
    assert published["event_timestamp"].max() == stamps[-1].tz_convert("UTC")


@pytest.mark.parametrize(
    ("written", "pattern"),
    [
        ("11/11/2019 9:05:58 AM", "%m/%d/%Y %I:%M:%S %p"),  # MIND, SQL Server exports
        ("11/11/2019 9:05 PM", "%m/%d/%Y %I:%M %p"),
        ("Aug 25, 2017", "%b %d, %Y"),
        ("09 13, 2009", "%m %d, %Y"),  # Amazon reviews' reviewTime
        ("Fri Aug 25 13:55:02 2017", "%a %b %d %H:%M:%S %Y"),  # ctime
    ],
)
def test_common_written_times_are_drafted(written: str, pattern: str) -> None:
    events = pd.DataFrame({"user": [1, 2] * 5, "item": [3, 4, 5, 6, 7] * 2, "time": [written] * 10})
    assert infer_spec("t", events).events.timestamp.format == pattern


def test_a_named_value_may_hold_any_scale_an_unnamed_one_only_a_small_one() -> None:
    times = [f"2024-01-{1 + n % 9:02d}T10:00:00" for n in range(40)]
    base = {"user": [n % 5 for n in range(40)], "item": [n % 7 for n in range(40)], "ts": times}
    # Jester: continuous ratings from -10 to 10.
    jester = [round(-9.95 + 0.5 * n, 2) for n in range(40)]
    value = infer_spec("t", pd.DataFrame({**base, "rating": jester})).events.value
    assert value is not None and (value.range.low, value.range.high) == (-10.0, 10.0)
    value = infer_spec(
        "t", pd.DataFrame({**base, "score": [2.5 * n for n in range(40)]})
    ).events.value
    assert value is not None and (value.range.low, value.range.high) == (0.0, 100.0)
    # Unnamed, a wide number is no rating (a count, a duration).
    assert (
        infer_spec("t", pd.DataFrame({**base, "x": [2.5 * n for n in range(40)]})).events.value
        is None
    )


def test_a_time_column_with_gaps_is_drafted_and_its_timeless_events_left_out(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stamps = [str(1700000000 + 3600 * n) if n % 10 else "" for n in range(60)]
    lines = ["user,item,ts,read_at"] + [
        f"u{n % 6},i{n % 8},{s},{s if n % 3 else ''}" for n, s in enumerate(stamps)
    ]
    path = tmp_path / "gaps.csv"
    path.write_text("\n".join(lines) + "\n")
    spec = infer_spec("gaps", path, spec_dir=tmp_path)
    # Both columns have gaps; ts dates more events than read_at, and wins by its name.
    assert spec.events.timestamp.column == "ts"
    assert spec.events.timestamp.format == "unix_seconds"
    spec_file = tmp_path / "gaps.yaml"
    spec_file.write_text(spec_draft_yaml(spec))

    with caplog.at_level("WARNING", logger="recops.data.convert"):
        result = import_dataset(spec_file, settings, stage_last_days=0)

    assert result.n_interactions == 54
    assert "6 of 60 events (10.0 %) are left out, as they lack a key or their time" in caplog.text
    assert "6 no 'ts' (spec field 'events.timestamp.column')" in caplog.text


def test_a_session_log_takes_its_sessions_for_users_and_a_user_wins_over_a_session() -> None:
    # Diginetica / YooChoose: sessions, no user.
    days = [f"2016-05-{1 + n % 9:02d}" for n in range(40)]
    events = pd.DataFrame({"sessionId": [n % 7 for n in range(40)],
                           "itemId": [n % 5 for n in range(40)], "eventdate": days})  # fmt: skip
    assert infer_spec("s", events).events.user_key == "sessionId"
    both = events.assign(user_id=[n % 3 for n in range(40)])
    assert infer_spec("s", both).events.user_key == "user_id"
