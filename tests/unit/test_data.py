"""Ingestion: parsing, the synthetic generator, idempotent publishing, history vs staging."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from recops.config import Settings
from recops.data import (
    GENRES,
    DataError,
    IngestConfig,
    genre_mask,
    ingest,
    land,
    list_partitions,
    list_staged,
    load_movielens,
    partition_path,
    publish,
    staged_path,
    synthesize,
)
from recops.validation import DataValidationError


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    return Settings.from_env()


def _write_recbole(dir_: Path) -> None:
    dir_.mkdir(parents=True)
    (dir_ / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t874724710\n2\t10\t5\t874811110\n1\t11\t3\t874811111\n"
    )
    (dir_ / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n"
    )
    (dir_ / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\n11\tMystery Film\t\tunknown\n"
    )


def test_load_movielens_parses_recbole_files(tmp_path: Path) -> None:
    _write_recbole(tmp_path / "raw")
    inter, users, items = load_movielens(tmp_path / "raw")
    assert len(inter) == 3 and len(users) == 2 and len(items) == 2
    assert str(inter["event_timestamp"].dtype) == "datetime64[us, UTC]"
    toy = items.set_index("item_id").loc[10]
    assert toy["genre_mask"] == genre_mask(["Animation", "Children's", "Comedy"])
    assert items.set_index("item_id").loc[11, "release_year"] == 0  # unknown year
    # Profiles are valid before the first event, so every event can join them.
    assert users["event_timestamp"].max() < inter["event_timestamp"].min()


def test_bad_values_name_file_and_column(tmp_path: Path) -> None:
    _write_recbole(tmp_path / "raw")
    path = tmp_path / "raw" / "ml-100k.inter"
    path.write_text(path.read_text() + "3\tabc\t4\t874811112\n")
    with pytest.raises(DataError, match=r"ml-100k.inter.*'item_id'.*abc"):
        load_movielens(tmp_path / "raw")


def test_unknown_genre_is_refused() -> None:
    assert genre_mask([GENRES[1], GENRES[18]]) == (1 << 1) | (1 << 18)
    with pytest.raises(DataError, match="Horrror"):
        genre_mask(["Horrror"])


def test_synthetic_is_deterministic_and_structured() -> None:
    a = synthesize(rows=3000, users=50, items=80, days=5, seed=3)
    b = synthesize(rows=3000, users=50, items=80, days=5, seed=3)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    inter, users, items = a
    assert inter["rating"].between(1, 5).all()
    assert set(inter["user_id"]) <= set(users["user_id"])
    assert not inter.duplicated(["user_id", "item_id", "event_timestamp"]).any()
    assert inter["event_timestamp"].dt.normalize().nunique() == 5
    # Planted structure: the 10 % most popular items take far more than 10 % of events.
    counts = inter["item_id"].value_counts()
    assert counts.head(8).sum() / counts.sum() > 0.2
    c = synthesize(rows=3000, users=50, items=80, days=5, seed=4)[0]
    assert not c.equals(inter)


def test_publish_is_idempotent_and_partitioned_by_day(settings: Settings) -> None:
    tables = synthesize(rows=2000, users=40, items=60, days=4, seed=1)
    first = publish(settings, *tables, source="synthetic")
    assert first.n_partitions == 4 and first.partitions_written == 4
    paths = list_partitions(settings)
    before = {p: p.read_bytes() for p in paths}
    second = publish(settings, *tables, source="synthetic")
    assert second.partitions_written == 0
    assert {p: p.read_bytes() for p in list_partitions(settings)} == before
    for path in paths:
        day = path.parent.name.removeprefix("date=")
        frame = pd.read_parquet(path)
        assert (frame["event_timestamp"].dt.strftime("%Y-%m-%d") == day).all()
    assert list_partitions(settings, until=first.last_date)[-1] == paths[-2]


def test_publish_drops_stale_partitions(settings: Settings) -> None:
    publish(
        settings, *synthesize(rows=2000, users=40, items=60, days=6, seed=1), source="synthetic"
    )
    publish(
        settings, *synthesize(rows=2000, users=40, items=60, days=3, seed=1), source="synthetic"
    )
    assert len(list_partitions(settings)) == 3


def test_ingest_publishes_validated_history_and_stages_last_days(settings: Settings) -> None:
    config = IngestConfig(
        source="synthetic",
        synthetic_rows=1500,
        synthetic_users=40,
        synthetic_items=60,
        synthetic_days=6,
        stage_last_days=2,
    )

    result = ingest(config, settings)

    published = [p.parent.name.removeprefix("date=") for p in list_partitions(settings)]
    staged = [p.parent.name.removeprefix("date=") for p in list_staged(settings)]
    assert len(published) == 4 and staged == result.staged_dates
    assert published[-1] < staged[0] and staged[-1] == result.last_date
    report = json.loads(Path(result.history_report_uri).read_text())
    assert report["success"] is True and report["tables"]["interactions"]["n_rows"] == sum(
        len(pd.read_parquet(p)) for p in list_partitions(settings)
    )
    assert result.n_partitions == 6 and result.first_date == published[0]

    # A staged day that the nightly run already published is not staged again.
    last = staged_path(settings, result.last_date)
    partition_path(settings, result.last_date).parent.mkdir(parents=True)
    last.replace(partition_path(settings, result.last_date))
    again = ingest(config, settings)
    assert again.staged_dates == staged[:1] and again.partitions_written == 0
    assert len(list_partitions(settings)) == 5


def test_bad_history_is_not_published(settings: Settings) -> None:
    inter, users, items = synthesize(rows=1500, users=40, items=60, days=6, seed=1)
    inter.loc[inter.index[:2], "user_id"] = 4040  # no such user

    with pytest.raises(DataValidationError, match=r"column=user_id.*\[4040\]") as info:
        land(settings, inter, users, items, source="synthetic", stage_last_days=1)

    assert not list_partitions(settings) and not list_staged(settings)
    assert json.loads(Path(str(info.value.report_uri)).read_text())["success"] is False


def test_stage_everything_and_nothing(settings: Settings) -> None:
    tables = synthesize(rows=600, users=30, items=40, days=3, seed=1)
    everything = land(settings, *tables, source="synthetic", stage_last_days=10)
    assert len(everything.staged_dates) == 3 and not list_partitions(settings)
    assert everything.history_report_uri == "" and settings.users_path.is_file()
    nothing = land(settings, *tables, source="synthetic", stage_last_days=0)
    assert nothing.staged_dates == [] and not list_staged(settings)
    assert len(list_partitions(settings)) == 3
    with pytest.raises(DataError, match="stage_last_days=-1"):
        land(settings, *tables, source="synthetic", stage_last_days=-1)
