"""Tests for MovieLens-100K: parsing the RecBole files, naming bad files and columns."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from recops.config import RECBOLE_DATA_PREFIX, Settings
from recops.data import DataError, genre_mask, load_movielens
from recops.data.movielens import ML100K_FILES, fetch_movielens


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


def test_fetch_extracts_from_a_cached_wheel_without_downloading(
    settings: Settings, tmp_path: Path
) -> None:
    _write_recbole(tmp_path / "raw")
    wheel = settings.cache_dir / "wheels" / "recbole-1.2.1-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in ML100K_FILES:
            archive.write(tmp_path / "raw" / name, RECBOLE_DATA_PREFIX + name)
    steps: list[tuple[str, int, int | None]] = []

    target = fetch_movielens(settings, progress=lambda *step: steps.append(step))

    for name in ML100K_FILES:
        assert (target / name).read_bytes() == (tmp_path / "raw" / name).read_bytes()
    assert steps[-1] == ("extracting ml-100k", 3, 3)
    assert sorted(p.name for p in target.iterdir()) == sorted(ML100K_FILES)
    assert fetch_movielens(settings) == target  # already extracted: nothing to do
